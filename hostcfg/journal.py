"""The host journal, read through journalctl: streamed for POST /v2/journal-logs, and
followed for the host units whose lines are the device's system logs."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import shutil
import signal
import subprocess
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from django.conf import settings


class JournalRequestInvalid(ValueError):
    """Journal options of the wrong type or value (answered 400)."""


class JournalUnavailable(Exception):
    """journalctl cannot be run on this host (answered 503)."""


OUTPUT_FORMATS = frozenset(
    {"short", "short-full", "short-iso", "short-iso-precise", "short-precise", "short-monotonic",
     "short-unix", "verbose", "export", "json", "json-pretty", "json-sse", "json-seq", "cat", "with-unit"}
)  # fmt: skip


def journalctl_path() -> str:
    """The journalctl to run (SUPERVISOR_JOURNALCTL: a name looked up on PATH, or a path).
    Raises JournalUnavailable when there is none."""
    journalctl = shutil.which(settings.SUPERVISOR_JOURNALCTL)
    if journalctl is None:
        raise JournalUnavailable(f"{settings.SUPERVISOR_JOURNALCTL} is not available on this host")
    return journalctl


def journalctl_argv(options: object) -> list[str]:
    """journalctl's arguments for the request body; values go in `--opt=value` form so that
    none can be read as another option."""
    if not isinstance(options, dict):
        raise JournalRequestInvalid("Invalid journal options: expected an object")
    argv = [journalctl_path(), "--no-pager"]
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


# Each stream is a root journalctl: a bound on how many run at once for the API's callers.
JOURNAL_STREAMS_AT_ONCE = 8
_streams_running = 0
_streams_lock = threading.Lock()


def open_journal_stream(argv: list[str]) -> AsyncIterator[bytes]:
    """journalctl's output as it comes, for a response body; the process is killed when the
    client goes away, and with the agent. Raises JournalUnavailable when
    JOURNAL_STREAMS_AT_ONCE streams run already."""
    with _streams_lock:
        if _streams_running >= JOURNAL_STREAMS_AT_ONCE:
            raise JournalUnavailable(
                f"{JOURNAL_STREAMS_AT_ONCE} journal streams are open already; try again later"
            )
    return _stream_journal(argv)


async def _stream_journal(argv: list[str]) -> AsyncIterator[bytes]:
    # Counted once it runs: a body never iterated (its client gone first) holds no place.
    global _streams_running
    with _streams_lock:
        _streams_running += 1
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            preexec_fn=_die_with_starting_thread,  # not left behind by an agent killed outright
        )
        assert process.stdout is not None
        try:
            while chunk := await process.stdout.read(65536):
                yield chunk
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()
    finally:
        with _streams_lock:
            _streams_running -= 1


# The host units whose lines a balena user sees among the device's logs: power mode and
# fan profile (applied from config.json), Jetson's power daemon and QSPI check, host OS
# updates.
HOST_UNITS = (
    "os-power-mode.service",
    "os-fan-profile.service",
    "nvpmodel.service",
    "jetson-qspi-manager.service",
    "os-update.service",
)


def unit_follow_argv(units: Sequence[str], *, after_cursor: str | None) -> list[str]:
    """journalctl following what `units` themselves print (their `_SYSTEMD_UNIT`, not
    systemd's lines about them) as JSON: after `after_cursor`, or from this boot's start.
    Raises JournalUnavailable."""
    argv = [journalctl_path(), "--no-pager", "--all", "--follow", "--output=json"]
    argv.append(f"--after-cursor={after_cursor}" if after_cursor else "--boot")
    return argv + [f"_SYSTEMD_UNIT={unit}" for unit in units]


PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before any fork


def _die_with_starting_thread() -> None:
    # A supervisor killed outright must not leave a journalctl behind for each restart:
    # the kernel kills it when the thread that started it ends.
    with contextlib.suppress(OSError, AttributeError):
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class JournalEntries:
    """The entries journalctl prints as JSON, one per line, until it exits or `close()`
    (from another thread) ends it; it also ends with the thread that made this. Its other
    output (warnings, "No journal files were found.") is kept, the last lines of it, in
    `complaints`."""

    COMPLAINTS_KEPT = 5

    def __init__(self, argv: list[str]) -> None:
        self._process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_starting_thread,  # one C call: takes no Python lock after the fork
        )
        self.complaints: deque[str] = deque(maxlen=self.COMPLAINTS_KEPT)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if isinstance(entry, dict):
                yield entry
            elif text := line.decode("utf-8", errors="replace").strip():
                self.complaints.append(text)

    def wait(self) -> int:
        """journalctl's exit status, once it has exited."""
        code = self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        return code

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
