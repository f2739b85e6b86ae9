"""Log records and the batches they travel in (published by logs/publisher.py).

Every process that logs (the collector for container output, the worker for the
supervisor's system messages) has a LogPublisher: one thread that sends what was queued
since its last send as one group message, a LogBatch, to the group "supervisor.logs".
Each batch carries the index of its first record in its publisher's sequence, so that a
log stream that lost batches (the channel layer drops messages for a channel over its
capacity) knows how many records it missed (LogSequencer).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

logger = logging.getLogger(__name__)

LOGS_GROUP = "supervisor.logs"
BATCH_MESSAGE_TYPE = "log.batch"

LogCursor = tuple[str, int]
"""Where a container line was read: (output stream key, Docker's timestamp in nanoseconds);
a two-item list once a batch was decoded."""


def output_stream_key(container_id: str, stderr: bool) -> str:
    """The key of one output stream of a container, in cursors and collector positions."""
    return f"{container_id[:12]}:{'err' if stderr else 'out'}"


@dataclass(frozen=True, slots=True)
class LogRecord:
    message: str
    timestamp: int
    """Milliseconds since the epoch."""
    is_system: bool = False
    is_stderr: bool = False
    service_id: int | None = None
    service_name: str | None = None

    def as_message(self) -> dict[str, Any]:
        """The record as the log streams carry it (docs/logs.md "Log records")."""
        if self.is_system:
            return {
                "message": self.message,
                "timestamp": self.timestamp,
                "isSystem": True,
                "isStdErr": self.is_stderr,
            }
        return {
            "message": self.message,
            "timestamp": self.timestamp,
            "serviceId": self.service_id,
            "serviceName": self.service_name,
            "isStdErr": self.is_stderr,
        }

    def as_json(self) -> str:
        """as_message() as one line of JSON."""
        return json.dumps(self.as_message(), ensure_ascii=False, separators=(",", ":"))


_json_string: Callable[[str], str] = json.encoder.encode_basestring  # type: ignore[attr-defined]
"""A str as a JSON string, as json.dumps(ensure_ascii=False) writes it."""


EncodedRecord = tuple[str, int, LogCursor | None]
"""A record as publishers queue it: (its JSON line, its timestamp in ms, its cursor if it
is a container line, which lets streams drop a line published twice)."""


class ContainerLineEncoder:
    """Encodes the lines of one output stream of a container, as LogRecord.as_json would
    but at a fraction of the cost (the collector's share of the lines/s of bench/logs.py)."""

    def __init__(self, *, container_id: str, stderr: bool, service_id: int | None, service_name: str) -> None:
        self.stream_key = output_stream_key(container_id, stderr)
        self._tail = (
            f',"serviceId":{json.dumps(service_id)},"serviceName":{_json_string(service_name)}'
            f',"isStdErr":{"true" if stderr else "false"}}}'
        )

    def encode(self, message: str, stamp_ns: int) -> EncodedRecord:
        timestamp = stamp_ns // 1_000_000
        line = f'{{"message":{_json_string(message)},"timestamp":{timestamp}{self._tail}'
        return line, timestamp, (self.stream_key, stamp_ns)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def system_record(message: str, *, is_stderr: bool = False) -> LogRecord:
    return LogRecord(message=message, timestamp=now_ms(), is_system=True, is_stderr=is_stderr)


@lru_cache(maxsize=64)
def _epoch_seconds(whole_seconds: str) -> int | None:
    # Consecutive lines share their second: parsed once for all of them.
    try:
        return int(datetime.fromisoformat(whole_seconds + "+00:00").timestamp())
    except ValueError:
        return None


def parse_docker_time(stamp: str) -> int | None:
    """Docker's `2026-11-25T21:50:00.123456789Z` (RFC 3339, UTC) in nanoseconds since the
    epoch; None if it is not one. Docker's zero time (year 1) is 0."""
    seconds, _, fraction = stamp.rstrip("Z").partition(".")
    whole = _epoch_seconds(seconds)
    if whole is None or (fraction and not fraction.isdigit()):
        return None
    return max(0, whole * 1_000_000_000 + (int(fraction.ljust(9, "0")[:9]) if fraction else 0))


def parse_timestamped_line(line: str, *, unstamped_ns: int | None = None) -> tuple[int, str]:
    """Split Docker's `2026-11-25T21:50:00.123456789Z message` into (nanoseconds, message);
    a line without a timestamp is stamped `unstamped_ns`, else now."""
    space = line.find(" ")
    if space > 20 and line[19] == "." and line[space - 1] == "Z":  # what Docker writes
        whole, fraction = _epoch_seconds(line[:19]), line[20 : space - 1]
        if whole is not None and fraction.isdigit() and len(fraction) <= 9:
            return whole * 1_000_000_000 + int(fraction) * 10 ** (9 - len(fraction)), line[space + 1 :]
    stamp, _, message = line.partition(" ")
    nanos = parse_docker_time(stamp)
    if nanos is None:
        return (time.time_ns() if unstamped_ns is None else unstamped_ns), line
    return nanos, message


@dataclass(frozen=True)
class LogBatch:
    """Consecutive records of one publisher, as streams receive them (and the store keeps them)."""

    publisher: str
    first: int
    """The index of lines[0] in the publisher's sequence; a stream that sees an index jump
    missed the records in between."""
    lines: Sequence[str]
    """Each record as one line of JSON (LogRecord.as_json)."""
    stamps: Sequence[int]
    """Each record's timestamp (ms), for `?since=` replays."""
    cursors: Sequence[LogCursor | None]

    @classmethod
    def of(cls, publisher: str, first: int, records: Sequence[EncodedRecord]) -> LogBatch:
        lines, stamps, cursors = zip(*records, strict=True) if records else ((), (), ())
        return cls(publisher=publisher, first=first, lines=lines, stamps=stamps, cursors=cursors)

    def to_message(self) -> dict[str, Any]:
        return {
            "type": BATCH_MESSAGE_TYPE,
            "publisher": self.publisher,
            "first": self.first,
            "lines": list(self.lines),
            "stamps": list(self.stamps),
            "cursors": list(self.cursors),
        }

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> LogBatch:
        return cls(
            publisher=str(message["publisher"]),
            first=int(message["first"]),
            lines=message["lines"],
            stamps=message["stamps"],
            # Pairs come back as lists; left so, as each stream decodes every batch.
            cursors=message["cursors"],
        )


def suppressed_line(count: int) -> str:
    return system_record(f"Warning: Suppressed {count} message(s) due to high load").as_json()


class LogSequencer:
    """Tracks, per publisher, the index of the next record a stream expects, and per
    container output stream the last line delivered.

    A batch that starts past the expected index means the channel layer dropped batches
    for this stream (it was too slow): the stream says how many records were suppressed.
    A batch that starts before it overlaps what was delivered (replayed from the store),
    and a container line at or before its stream's last one was published twice (by a
    collector that restarted): both are skipped.
    """

    def __init__(self) -> None:
        self._next: dict[str, int] = {}
        self._last_ns: dict[str, int] = {}
        self._replayed: set[str] = set()

    def take(self, batch: LogBatch, *, since_ms: int | None = None, replay: bool = False) -> list[str]:
        """The lines of `batch` to deliver (the first may report suppressed records).
        `since_ms`: deliver only records stamped at or after it (but count them all)."""
        lines: list[str] = []
        expected = self._next.get(batch.publisher)
        skip = 0
        if expected is not None:
            skip = max(0, expected - batch.first)
            if batch.first > expected and batch.publisher not in self._replayed:
                lines.append(suppressed_line(batch.first - expected))
        if replay:
            self._replayed.add(batch.publisher)
        else:
            # What the store did not hold (persistent logging was off, or a batch was being
            # written while it was read) was never this stream's to lose.
            self._replayed.discard(batch.publisher)
        self._next[batch.publisher] = max(expected or 0, batch.first + len(batch.lines))
        last_ns = self._last_ns
        for line, stamp, cursor in zip(
            batch.lines[skip:], batch.stamps[skip:], batch.cursors[skip:], strict=True
        ):
            if cursor is not None:
                key, nanos = cursor
                if nanos <= last_ns.get(key, 0):
                    continue
                last_ns[key] = nanos
            if since_ms is None or stamp >= since_ms:
                lines.append(line)
        return lines
