"""The lines of the host units a balena user expects among the device's logs (power mode,
fan profile, host OS update…), followed from the host journal as system log records."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from apps_api.backoff import backoff_delay
from apps_api.logs.publisher import publish_log_record
from apps_api.logs.records import LogRecord
from hostcfg.atomic_file import write_file_atomically
from hostcfg.journal import HOST_UNITS, JournalEntries, JournalUnavailable, unit_follow_argv

logger = logging.getLogger(__name__)

CURSOR_FILE = "host-journal-cursor"
CURSOR_SAVE_SECONDS = 1.0


def journal_entry_record(entry: dict[str, Any]) -> LogRecord | None:
    """A journal entry (journalctl's JSON) as a system record: priority 3 (err) or more
    urgent is stderr, the entry's own time (µs) its timestamp. None without a message."""
    message = entry.get("MESSAGE")
    if isinstance(message, list):  # journalctl's form for a message that is not UTF-8 text
        try:
            message = bytes(message).decode("utf-8", errors="replace")
        except (TypeError, ValueError):
            return None
    if not isinstance(message, str):
        return None
    priority = str(entry.get("PRIORITY", ""))
    realtime = str(entry.get("__REALTIME_TIMESTAMP", ""))
    return LogRecord(
        message=message,
        timestamp=int(realtime) // 1000 if realtime.isdigit() else int(time.time() * 1000),
        is_system=True,
        is_stderr=priority.isdigit() and int(priority) <= 3,
    )


class HostUnitLogs:
    """Runs one journalctl following HOST_UNITS and publishes each line as a system record.

    journalctl exiting (an unreadable journal, a rotated cursor) is logged once, then it is
    run again after a growing delay (5 s doubling to 15 min, back to 5 s once it has printed
    entries), each time after the last entry published; the cursor is kept in the data dir,
    so that a restarted agent neither repeats nor skips lines. Without journalctl on the
    host, one log line and nothing more.
    """

    RETRY_SECONDS = 5.0
    RETRY_MAX_SECONDS = 15 * 60.0

    def __init__(
        self,
        *,
        cursor_path: Path | None = None,
        units: Sequence[str] = HOST_UNITS,
        publish: Callable[[LogRecord], None] = publish_log_record,
        wait: Callable[[float], object] | None = None,
    ) -> None:
        """`cursor_path`: where the last published entry's cursor survives the process
        (none: the first run starts from this boot); `wait(seconds)`: the pause before
        running journalctl again, for tests (default: until stop())."""
        self._cursor_path = cursor_path
        self._units = tuple(units)
        self._publish = publish
        self._stopping = threading.Event()
        self._given_up = False
        self._wait = wait or self._stopping.wait
        self._entries: JournalEntries | None = None
        self._lock = threading.Lock()
        self._cursor = self._load_cursor()
        self._saved_cursor = self._cursor
        self._saved_at = 0.0

    def run(self) -> None:
        """Follow until stop(), or return at once when the host has no journalctl."""
        failures = 0
        while not self._stopping.is_set():
            try:
                argv = unit_follow_argv(self._units, after_cursor=self._cursor)
                entries = JournalEntries(argv)
            except (JournalUnavailable, FileNotFoundError) as exc:
                logger.warning("host unit logs: not followed: %s", exc)
                self._given_up = True
                return
            with self._lock:
                self._entries = entries
            if self._stopping.is_set():
                entries.close()
            printed = self._publish_entries(entries)
            code = entries.wait()
            self._save_cursor(force=True)
            if self._stopping.is_set():
                return
            failures = 1 if printed else failures + 1
            if failures == 1:
                complaint = "; ".join(entries.complaints) or "no output"
                logger.warning(
                    "host unit logs: journalctl exited (%s: %s); will run it again", code, complaint
                )
            if not printed and code != 0:
                self._cursor = None  # the cursor may be one the journal no longer has
            self._wait(backoff_delay(failures, base=self.RETRY_SECONDS, cap=self.RETRY_MAX_SECONDS))

    def stopped(self) -> bool:
        """Told to stop, or there is nothing to follow (the host has no journal)."""
        return self._stopping.is_set() or self._given_up

    def stop(self) -> None:
        """End run() from another thread; journalctl is killed."""
        self._stopping.set()
        with self._lock:
            if self._entries is not None:
                self._entries.close()

    def _publish_entries(self, entries: JournalEntries) -> bool:
        printed = False
        for entry in entries:
            printed = True
            record = journal_entry_record(entry)
            if record is not None:
                self._publish(record)
            cursor = entry.get("__CURSOR")
            if isinstance(cursor, str) and cursor:
                self._cursor = cursor
                self._save_cursor()
        return printed

    def _load_cursor(self) -> str | None:
        if self._cursor_path is None:
            return None
        try:
            return self._cursor_path.read_text().strip() or None
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning("host unit logs: ignoring unreadable %s (%s)", self._cursor_path, exc)
            return None

    def _save_cursor(self, *, force: bool = False) -> None:
        if self._cursor_path is None or self._cursor is None or self._cursor == self._saved_cursor:
            return
        if not force and time.monotonic() - self._saved_at < CURSOR_SAVE_SECONDS:
            return
        try:
            write_file_atomically(self._cursor_path, self._cursor)
        except OSError as exc:
            logger.warning("host unit logs: could not save the cursor to %s (%s)", self._cursor_path, exc)
            return
        self._saved_cursor, self._saved_at = self._cursor, time.monotonic()
