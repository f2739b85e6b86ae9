"""Log records as the streams carry them, how a stream sequences batches, and the store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apps_api.logs.records import (
    ContainerLineEncoder,
    EncodedRecord,
    LogBatch,
    LogRecord,
    LogSequencer,
    parse_docker_time,
    parse_timestamped_line,
)
from apps_api.logs.store import LogStore

STREAM = "0123456789ab:out"


def container_line(number: int, nanos: int, key: str = STREAM) -> EncodedRecord:
    return f'{{"message":"{number}"}}', nanos // 1_000_000, (key, nanos)


def system_line(text: str) -> EncodedRecord:
    return f'{{"message":"{text}","isSystem":true}}', 1, None


def batch(first: int, records: list[EncodedRecord], publisher: str = "p1") -> LogBatch:
    return LogBatch.of(publisher, first, records)


def messages(lines: list[str]) -> list[str]:
    return [json.loads(line)["message"] for line in lines]


# --- encoding ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message", ["plain", 'quote " and \\ backslash', "tab\tand \x01 control", "émoji 🚀"]
)
@pytest.mark.parametrize("stderr", [False, True])
def test_collector_encoding_is_the_json_of_the_record(message: str, stderr: bool) -> None:
    encoder = ContainerLineEncoder(container_id="f" * 64, stderr=stderr, service_id=7, service_name="main")
    line, timestamp, cursor = encoder.encode(message, 1_764_097_577_123_456_789)

    record = LogRecord(message, 1_764_097_577_123, is_stderr=stderr, service_id=7, service_name="main")
    assert line == record.as_json()
    assert json.loads(line) == {
        "message": message,
        "timestamp": 1_764_097_577_123,
        "serviceId": 7,
        "serviceName": "main",
        "isStdErr": stderr,
    }
    assert timestamp == 1_764_097_577_123
    assert cursor == (f"ffffffffffff:{'err' if stderr else 'out'}", 1_764_097_577_123_456_789)


def test_a_system_message_says_so_and_has_no_service() -> None:
    assert json.loads(LogRecord("Supervisor starting", 5, is_system=True).as_json()) == {
        "message": "Supervisor starting",
        "timestamp": 5,
        "isSystem": True,
        "isStdErr": False,
    }


@pytest.mark.parametrize(
    ("line", "nanos", "message"),
    [
        ("2026-11-25T21:50:00.123456789Z hello world", 1_795_643_400_123_456_789, "hello world"),
        ("2026-11-25T21:50:00.1234Z short fraction", 1_795_643_400_123_400_000, "short fraction"),
        ("2026-11-25T21:50:00Z no fraction", 1_795_643_400_000_000_000, "no fraction"),
        ("2026-11-25T21:50:00.5Z ", 1_795_643_400_500_000_000, ""),
    ],
)
def test_docker_timestamps_are_read_to_the_nanosecond(line: str, nanos: int, message: str) -> None:
    assert parse_timestamped_line(line) == (nanos, message)


def test_a_line_without_a_timestamp_is_kept_whole() -> None:
    _, message = parse_timestamped_line("not a timestamp at all")
    assert message == "not a timestamp at all"


def test_docker_zero_time_is_zero() -> None:
    assert parse_docker_time("0001-01-01T00:00:00Z") == 0
    assert parse_docker_time("garbage") is None


# --- sequencing --------------------------------------------------------------------------


def test_consecutive_batches_are_delivered_whole() -> None:
    sequencer = LogSequencer()
    assert messages(sequencer.take(batch(0, [container_line(0, 10), container_line(1, 20)]))) == ["0", "1"]
    assert messages(sequencer.take(batch(2, [container_line(2, 30)]))) == ["2"]


def test_a_gap_in_a_publishers_sequence_is_reported_as_suppressed_records() -> None:
    sequencer = LogSequencer()
    sequencer.take(batch(0, [system_line("a")]))

    lines = sequencer.take(batch(501, [system_line("b")]))

    assert json.loads(lines[0])["message"] == "Warning: Suppressed 500 message(s) due to high load"
    assert json.loads(lines[0])["isSystem"] is True
    assert messages(lines[1:]) == ["b"]


def test_a_stream_joining_mid_sequence_reports_nothing_missing() -> None:
    assert messages(LogSequencer().take(batch(1234, [system_line("first seen")]))) == ["first seen"]


def test_publishers_are_sequenced_apart() -> None:
    sequencer = LogSequencer()
    sequencer.take(batch(0, [system_line("a")], publisher="worker"))
    sequencer.take(batch(40, [system_line("b")], publisher="collector"))

    assert messages(sequencer.take(batch(1, [system_line("c")], publisher="worker"))) == ["c"]


def test_a_container_line_published_again_by_a_restarted_collector_is_dropped() -> None:
    sequencer = LogSequencer()
    sequencer.take(batch(0, [container_line(0, 10), container_line(1, 20)], publisher="old"))

    again = sequencer.take(batch(0, [container_line(1, 20), container_line(2, 30)], publisher="new"))

    assert messages(again) == ["2"]


def test_streams_of_a_container_are_deduplicated_apart() -> None:
    sequencer = LogSequencer()
    sequencer.take(batch(0, [container_line(0, 50, key="c:out")]))

    assert messages(sequencer.take(batch(1, [container_line(1, 40, key="c:err")]))) == ["1"]


def test_live_batches_overlapping_the_replay_are_delivered_once() -> None:
    sequencer = LogSequencer()
    replayed = sequencer.take(batch(0, [system_line("a"), system_line("b")]), replay=True)

    live = sequencer.take(batch(1, [system_line("b"), system_line("c")]))

    assert messages(replayed) == ["a", "b"]
    assert messages(live) == ["c"]


def test_records_the_store_did_not_hold_are_not_reported_as_suppressed() -> None:
    sequencer = LogSequencer()
    sequencer.take(batch(0, [system_line("kept")]), replay=True)

    live = sequencer.take(batch(300, [system_line("live")]))

    assert messages(live) == ["live"]
    later = sequencer.take(batch(400, [system_line("after a gap")]))
    assert "Suppressed 99 message(s)" in later[0]


def test_a_replay_delivers_only_records_since_the_asked_time() -> None:
    records = [container_line(n, n * 1_000_000_000) for n in range(5)]

    lines = LogSequencer().take(batch(0, records), since_ms=3000, replay=True)

    assert messages(lines) == ["3", "4"]


# --- the store ---------------------------------------------------------------------------


def test_the_store_gives_back_its_batches_oldest_first(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    store.append(batch(0, [system_line("a")]))
    store.append(batch(1, [container_line(1, 10), container_line(2, 20)]))

    kept = list(store.batches())

    assert [(b.first, list(b.lines)) for b in kept] == [
        (0, ['{"message":"a","isSystem":true}']),
        (1, ['{"message":"1"}', '{"message":"2"}']),
    ]
    assert [tuple(cursor) for cursor in kept[1].cursors] == [(STREAM, 10), (STREAM, 20)]


def test_the_store_drops_the_oldest_records_to_stay_within_its_bound(tmp_path: Path) -> None:
    store = LogStore(tmp_path, max_bytes=20_000)
    for index in range(200):
        store.append(batch(index, [system_line(f"record {index:03d} " + "x" * 80)]))

    kept = [b.first for b in store.batches()]

    assert sum(path.stat().st_size for path in tmp_path.glob("*.ndjson")) <= 20_000
    assert kept == list(range(kept[0], 200)), "the newest records, in order"
    assert kept[0] > 0


def test_a_partly_written_batch_is_left_out(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    store.append(batch(0, [system_line("whole")]))
    with open(tmp_path / "current.ndjson", "a") as file:
        file.write('{"publisher":"p1","first":1,"lin')

    assert [b.first for b in store.batches()] == [0]
