"""The cloud form of log records, the upload buffer and the reconnect delays (no I/O)."""

from __future__ import annotations

import json

import pytest

from apps_api.cloud.log_upload import PendingLogs, cloud_log_line, reconnect_delay
from apps_api.logs.records import LogRecord


def uploaded(record: LogRecord) -> dict[str, object]:
    line = cloud_log_line(record.as_json())
    assert line is not None
    assert line.endswith(b"\n")
    return json.loads(line)


@pytest.mark.parametrize(
    ("length", "expected"),
    [(9_999, "a" * 9_999), (10_000, "a" * 10_000), (10_001, "a" * 9_995 + "[...]")],
)
def test_messages_are_capped_at_10_000_characters_the_mark_included(length: int, expected: str) -> None:
    assert uploaded(LogRecord(message="a" * length, timestamp=5, service_id=1))["message"] == expected


def test_a_container_line_without_a_service_id_is_not_sent() -> None:
    assert cloud_log_line(LogRecord(message="orphan", timestamp=5).as_json()) is None


def test_a_service_line_keeps_its_service_id_and_not_its_name() -> None:
    record = LogRecord(message="é\n", timestamp=1234, is_stderr=True, service_id=7, service_name="main")
    assert uploaded(record) == {"message": "é\n", "timestamp": 1234, "isStdErr": True, "serviceId": 7}


def test_a_system_line_says_so() -> None:
    record = LogRecord(message="Applying", timestamp=99, is_system=True)
    assert uploaded(record) == {"message": "Applying", "timestamp": 99, "isSystem": True, "isStdErr": False}


def test_what_does_not_fit_is_reported_after_what_was_kept() -> None:
    pending = PendingLogs(limit=10)
    for line in (b"1234\n", b"5678\n", b"9\n", b"0\n"):
        pending.add(line)
    taken = pending.take().splitlines()
    assert taken[:2] == [b"1234", b"5678"]
    assert json.loads(taken[2])["message"] == "Warning: Suppressed 2 message(s) due to high load"
    assert len(taken) == 3
    # Reported once; what comes next fits again.
    pending.add(b"next\n")
    assert pending.take() == b"next\n"
    assert not pending.wait(0)


@pytest.mark.parametrize(("failures", "seconds"), [(1, 5), (2, 10), (3, 20), (6, 160), (7, 300), (30, 300)])
def test_reconnects_wait_5_s_doubling_up_to_5_minutes(failures: int, seconds: float) -> None:
    assert reconnect_delay(failures) == seconds
