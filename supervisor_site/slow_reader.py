"""What a log stream does when its reader falls behind: drop whole lines, count them, and say
so once the reader is back. Apart from the web server so that it can be tested without a
reactor."""

from __future__ import annotations

from typing import Any

from apps_api.logs.records import suppressed_line

# Twisted buffers whatever a client has not read yet. Past this much, a log stream drops
# lines and counts them (one "Suppressed N" line tells the client once it catches up);
# any other stream (the journal) ends.
STREAM_BACKLOG_BYTES = 1024 * 1024


def unsent_bytes(transport: Any) -> int:
    """What Twisted holds for a peer that has not read it yet (its write buffers)."""
    return len(getattr(transport, "dataBuffer", b"")) + int(getattr(transport, "_tempDataLen", 0))


class SlowReaderGuard:
    """Counts the log lines a slow reader misses, and says so when it is back."""

    def __init__(self) -> None:
        self.dropped_lines = 0
        self._sent_part_of_a_line = False
        self._dropping_a_line = False

    def whole_lines(self, body: bytes, *, drop: bool) -> bytes:
        """What of an HTTP body part to send, dropping (`drop`) or not: Django cuts a long
        stream chunk into parts anywhere, so a line is sent whole or not at all. A line
        begun is finished before dropping starts; one being dropped is dropped to its end."""
        if self._dropping_a_line:
            end = body.find(b"\n")
            if end < 0:
                return b""
            self._dropping_a_line, body = False, body[end + 1 :]
        if drop:
            kept = b""
            if self._sent_part_of_a_line:
                end = body.find(b"\n")
                kept, body = (body, b"") if end < 0 else (body[: end + 1], body[end + 1 :])
            if body:
                self._dropping_a_line = not body.endswith(b"\n")
                self.dropped_lines += body.count(b"\n") + self._dropping_a_line
            self._sent_part_of_a_line = bool(kept) and not kept.endswith(b"\n")
            return kept
        if body and not self._sent_part_of_a_line and (note := self.note()):
            body = note.encode() + body
        if body:
            self._sent_part_of_a_line = not body.endswith(b"\n")
        return body

    def behind(self, transport: Any) -> bool:
        return unsent_bytes(transport) > STREAM_BACKLOG_BYTES

    def drop(self, payload: bytes | str) -> None:
        lines = payload.count(b"\n") if isinstance(payload, bytes) else payload.count("\n")
        self.dropped_lines += lines or 1

    def note(self) -> str:
        """The line that tells what was dropped, once; empty when nothing was."""
        if not self.dropped_lines:
            return ""
        note, self.dropped_lines = suppressed_line(self.dropped_lines) + "\n", 0
        return note
