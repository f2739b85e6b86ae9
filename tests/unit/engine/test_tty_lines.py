"""A tty container's output split into lines: whole lines as they come, and a line that
never ends cut into bounded pieces, nothing lost (security review, M2)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from apps_api.engine.docker import TTY_LINE_BYTES, _tty_lines


def lines(chunks: list[bytes], limit: int = TTY_LINE_BYTES) -> list[bytes]:
    return [line for _stderr, line in _tty_lines(iter(chunks), limit)]


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([b"one\ntwo\n"], [b"one", b"two"]),
        ([b"on", b"e\r\ntw", b"o"], [b"one", b"two"]),
        ([b"\n\n"], [b"", b""]),
        ([b"a" * 10 + b"\n"], [b"aaaa", b"aaaa", b"aa"]),
        ([b"aaa", b"aaa", b"aaa\nb"], [b"aaaa", b"aaaa", b"a", b"b"]),
    ],
)
def test_lines_and_pieces(chunks: list[bytes], expected: list[bytes]) -> None:
    assert lines(chunks, limit=4) == expected


def test_output_that_never_ends_a_line_comes_out_in_bounded_pieces_as_it_arrives() -> None:
    megabyte = b"\r" + b"x" * (1024 * 1024 - 1)  # a progress bar: carriage returns, no newline
    seen = 0

    def flood() -> Iterator[bytes]:
        for _ in range(16):
            for offset in range(0, len(megabyte), 65536):
                yield megabyte[offset : offset + 65536]

    pieces = []
    for _stderr, piece in _tty_lines(flood()):
        seen += len(piece)
        pieces.append(len(piece))
    assert max(pieces) <= TTY_LINE_BYTES
    assert seen == 16 * len(megabyte), "nothing is lost"
    assert len(pieces) == -(-16 * len(megabyte) // TTY_LINE_BYTES)
