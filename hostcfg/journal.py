"""The host journal, streamed from journalctl for POST /v2/journal-logs."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator


class JournalRequestInvalid(ValueError):
    """Journal options of the wrong type or value (answered 400)."""


class JournalUnavailable(Exception):
    """journalctl cannot be run on this host (answered 503)."""


OUTPUT_FORMATS = frozenset(
    {"short", "short-full", "short-iso", "short-iso-precise", "short-precise", "short-monotonic",
     "short-unix", "verbose", "export", "json", "json-pretty", "json-sse", "json-seq", "cat", "with-unit"}
)  # fmt: skip


def journalctl_argv(options: object) -> list[str]:
    """journalctl's arguments for the request body; values go in `--opt=value` form so that
    none can be read as another option."""
    if not isinstance(options, dict):
        raise JournalRequestInvalid("Invalid journal options: expected an object")
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        raise JournalUnavailable("journalctl is not available on this host")
    argv = [journalctl, "--no-pager"]
    for flag, option in (("all", "--all"), ("follow", "--follow")):
        value = options.get(flag, False)
        if not isinstance(value, bool):
            raise JournalRequestInvalid(f"{flag}: must be a boolean")
        if value:
            argv.append(option)
    count = options.get("count")
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
            raise JournalRequestInvalid("count: must be a positive integer")
        argv.append(f"--lines={count}")
    for field, option in (("unit", "--unit"), ("containerId", "--identifier"), ("since", "--since"),
                          ("until", "--until")):  # fmt: skip
        value = options.get(field)
        if value is None:
            continue
        if not isinstance(value, str) or not value or "\0" in value:
            raise JournalRequestInvalid(f"{field}: must be a non-empty string")
        argv.append(f"{option}={value}")
    output = options.get("format", "short")
    if output not in OUTPUT_FORMATS:
        raise JournalRequestInvalid(f"format: must be one of {', '.join(sorted(OUTPUT_FORMATS))}")
    argv.append(f"--output={output}")
    return argv


async def stream_journal(argv: list[str]) -> AsyncIterator[bytes]:
    """journalctl's output as it comes; the process is killed when the client goes away."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    try:
        while chunk := await process.stdout.read(65536):
            yield chunk
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
