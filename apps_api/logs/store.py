"""Log records kept on disk while the target's SUPERVISOR_PERSISTENT_LOGGING is on, so that
`GET /v2/local/logs?since=<ms>` can replay them.

The store is two files of JSON lines, one LogBatch per line: `current` takes the appends
and, when the next one would take it past half the bound, replaces `previous`: the oldest
half is what is dropped, and the whole stays within the bound. Every process that publishes appends
to it; a lock file serialises appends and the switch between files.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

from apps_api.logs.records import LogBatch

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
STORE_DIRECTORY = "logs"


class LogStore:
    def __init__(self, directory: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._current = directory / "current.ndjson"
        self._previous = directory / "previous.ndjson"
        self._lock_path = directory / ".lock"

    def append(self, batch: LogBatch) -> None:
        """Keep `batch`, dropping the oldest records if the store would exceed its bound."""
        fields = batch.to_message()
        del fields["type"]
        line = (json.dumps(fields, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        with self._locked():
            try:
                size = self._current.stat().st_size
            except FileNotFoundError:
                size = 0
            if size and size + len(line) > self.max_bytes // 2:
                os.replace(self._current, self._previous)
            with open(self._current, "ab") as file:
                file.write(line)

    def batches(self) -> Iterator[LogBatch]:
        """Everything kept, oldest first. A batch being written as it is read may be left out
        (a stream subscribes before it reads the store, so it receives that batch live)."""
        with self._locked():
            files = [open(path, "rb") for path in (self._previous, self._current) if path.exists()]  # noqa: SIM115
        for file in files:
            with file:
                for line in file:
                    try:
                        yield LogBatch.from_message(json.loads(line))
                    except (ValueError, KeyError, TypeError):
                        continue

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "ab") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def default_log_store() -> LogStore:
    """The store in the data dir, which every process of the supervisor shares."""

    return LogStore(Path(settings.SUPERVISOR_DATA_DIR) / STORE_DIRECTORY)
