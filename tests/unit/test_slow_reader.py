"""A log stream whose reader falls behind drops whole lines only: Django hands the server a
long chunk in parts cut anywhere, and a line cut in two would not be JSON."""

from __future__ import annotations

import json

from supervisor_site.slow_reader import SlowReaderGuard


def record(n: int) -> bytes:
    return json.dumps({"message": f"line {n} " + "x" * 40}).encode() + b"\n"


def test_lines_cut_across_parts_are_sent_or_dropped_whole_and_the_drop_is_told() -> None:
    stream = b"".join(record(n) for n in range(30))
    parts = [stream[i : i + 37] for i in range(0, len(stream), 37)]  # cut anywhere, most mid-line
    guard = SlowReaderGuard()
    sent = b""
    for index, part in enumerate(parts):
        sent += guard.whole_lines(part, drop=10 <= index < 20)

    lines = [json.loads(line) for line in sent.splitlines()]  # every line whole
    messages = [line["message"].split(" x")[0] for line in lines]
    notes = [m for m in messages if m.startswith("Warning: Suppressed")]
    assert len(notes) == 1
    kept = [int(m.split()[1]) for m in messages if m.startswith("line")]
    assert kept == sorted(kept)
    dropped = 30 - len(kept)
    assert notes[0] == f"Warning: Suppressed {dropped} message(s) due to high load"
    assert (kept[0], kept[-1]) == (0, 29)


def test_nothing_is_dropped_while_the_reader_keeps_up() -> None:
    stream = b"".join(record(n) for n in range(5))
    guard = SlowReaderGuard()
    parts = [stream[i : i + 7] for i in range(0, len(stream), 7)]
    assert b"".join(guard.whole_lines(part, drop=False) for part in parts) == stream
