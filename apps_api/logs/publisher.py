"""Publication of log records in batches on the channel layer, from one thread per process.

`system_log` is how the supervisor's own messages (apply steps, configuration changes)
reach the log streams.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from channels.layers import get_channel_layer

from apps_api.backoff import backoff_delay
from apps_api.device_settings import persistent_logging_enabled
from apps_api.logs.records import LOGS_GROUP, EncodedRecord, LogBatch, LogRecord, now_ms
from apps_api.logs.store import LogStore, default_log_store
from apps_api.watched_threads import spawn

logger = logging.getLogger(__name__)


class _RecordBuffer:
    """The records a publisher has yet to send: a deque under one lock, whose condition
    is signalled only when it stops being empty or full (queue.Queue's two conditions per
    record cost the collector a fifth of its time). Full at `limit` records or `byte_limit`
    bytes of them, whichever comes first: records may be 16 KiB each."""

    def __init__(self, limit: int, byte_limit: int) -> None:
        self._records: deque[EncodedRecord] = deque()
        self._limit = limit
        self._byte_limit = byte_limit
        self._bytes = 0
        self._changed = threading.Condition(threading.Lock())
        self.unsent = 0
        """Records put and not yet sent (or given up)."""

    def _full(self) -> bool:
        return len(self._records) >= self._limit or self._bytes >= self._byte_limit

    def put(self, record: EncodedRecord, *, wait: bool) -> bool:
        with self._changed:
            while self._full():
                if not wait:
                    return False
                self._changed.wait()
            self._records.append(record)
            self._bytes += len(record[0])
            self.unsent += 1
            if len(self._records) == 1:
                self._changed.notify_all()
            return True

    def take(self, most: int, *, most_bytes: int, linger: float = 0.0) -> list[EncodedRecord]:
        """Up to `most` records and about `most_bytes` (one at least): waits for the first,
        then `linger` seconds for more (unless that many are there already)."""
        with self._changed:
            while not self._records:
                self._changed.wait()
            short = len(self._records) < most and self._bytes < most_bytes
        if linger and short:
            time.sleep(linger)
        with self._changed:
            was_full = self._full()
            records: list[EncodedRecord] = []
            size = 0
            while self._records and len(records) < most and (not records or size < most_bytes):
                record = self._records.popleft()
                records.append(record)
                size += len(record[0])
            self._bytes -= size
            if was_full:
                self._changed.notify_all()
            return records

    def done(self, count: int) -> None:
        with self._changed:
            self.unsent -= count


class LogPublisher:
    """Hands records to the channel layer from one background thread with one event loop,
    so that callers (apply steps, container followers) never wait on Redis and the
    channel layer keeps one connection instead of one per calling thread.

    The thread sends everything queued since its last send as one batch (at most
    BATCH_LIMIT records): one record per send at a trickle, large batches under load.
    A batch is written to the store (persistent logging) before it is sent, so that a
    stream that subscribes and then reads the store misses none. A failed send is retried
    until it succeeds; meanwhile `publish(wait=True)` blocks once the queue is full, and
    `publish()` drops the record, which streams then report as suppressed.
    """

    QUEUE_LIMIT = 50_000
    QUEUE_BYTES = 2 * 1024 * 1024
    BATCH_LIMIT = 500
    BATCH_BYTES = 512 * 1024
    # Time given to a record for others to join its batch: a send costs the same for one
    # record or hundreds (bench/logs.py: a fifth of the collector's time went to sends).
    LINGER_SECONDS = 0.005
    PERSIST_CHECK_SECONDS = 5.0
    RETRY_MAX_SECONDS = 5.0

    def __init__(
        self,
        *,
        on_sent: Callable[[Sequence[EncodedRecord]], None] | None = None,
        store: LogStore | None = None,
        persist: Callable[[], bool] | None = None,
        group: str = LOGS_GROUP,
        name: str = "system",
    ) -> None:
        """`name` names its thread; `on_sent` is called (in the publisher's thread) with each batch once sent;
        `store` and `persist` (whether to write to it) default to the data dir's store and
        the target's SUPERVISOR_PERSISTENT_LOGGING."""
        self.publisher_id = uuid.uuid4().hex[:12]
        self.name = name
        self.group = group
        self._on_sent = on_sent
        self._store = store
        self._persist = persist
        self._buffer = _RecordBuffer(self.QUEUE_LIMIT, self.QUEUE_BYTES)
        self._next_index = 0
        self._dropped = 0
        self._dropped_lock = threading.Lock()
        self._thread_pid = 0
        self._start_lock = threading.Lock()
        self._persisting = False
        self._persist_checked_at = -self.PERSIST_CHECK_SECONDS

    def publish(self, record: LogRecord, *, wait: bool = False) -> None:
        """Queue a record; with `wait`, block while the queue is full instead of dropping it."""
        self.publish_encoded((record.as_json(), record.timestamp, None), wait=wait)

    def publish_encoded(self, record: EncodedRecord, *, wait: bool = False) -> None:
        if self._thread_pid != os.getpid():  # not started yet, or started before a fork
            self._start_thread()
        if not self._buffer.put(record, wait=wait):
            with self._dropped_lock:
                self._dropped += 1

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued record has been sent (or `timeout`); whether they were."""
        deadline = time.monotonic() + timeout
        while self._buffer.unsent and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._buffer.unsent

    def start(self) -> None:
        """Start the sending thread (the agent does at start-up; elsewhere the first
        record does, in each process)."""
        if self._thread_pid != os.getpid():
            self._start_thread()

    def _start_thread(self) -> None:
        with self._start_lock:
            if self._thread_pid != os.getpid():
                spawn(f"publish-{self.name}", self._run, stopped=lambda: False)
                self._thread_pid = os.getpid()

    def _run(self) -> None:
        # One loop for the thread's life: the channel layer keeps its connection per loop.
        # Blocking on the buffer happens outside the loop, in this daemon thread, so that
        # nothing keeps the process alive at exit.
        layer = get_channel_layer()
        loop = asyncio.new_event_loop()
        try:
            self._send_forever(layer, loop)
        finally:
            loop.close()  # the watch starts a new run, with a loop of its own

    def _send_forever(self, layer: Any, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            records = self._buffer.take(
                self.BATCH_LIMIT, most_bytes=self.BATCH_BYTES, linger=self.LINGER_SECONDS
            )
            try:
                with self._dropped_lock:
                    self._next_index += self._dropped  # a gap the streams report as suppressed
                    self._dropped = 0
                batch = LogBatch.of(self.publisher_id, self._next_index, records)
                self._next_index += len(records)
                self._write_to_store(batch)
                self._send(loop, layer, batch)
                if self._on_sent is not None:
                    self._on_sent(records)
            except Exception:
                logger.exception("could not publish %d log record(s)", len(records))
            finally:
                self._buffer.done(len(records))

    def _send(self, loop: asyncio.AbstractEventLoop, layer: Any, batch: LogBatch) -> None:
        failures = 0
        while True:
            try:
                loop.run_until_complete(layer.group_send(self.group, batch.to_message()))
                return
            except Exception as exc:
                failures += 1
                delay = backoff_delay(failures, base=0.1, cap=self.RETRY_MAX_SECONDS)
                logger.warning("could not publish log records (%s); retrying in %.1f s", exc, delay)
                time.sleep(delay)

    def _write_to_store(self, batch: LogBatch) -> None:
        if time.monotonic() - self._persist_checked_at >= self.PERSIST_CHECK_SECONDS:
            self._persist_checked_at = time.monotonic()
            self._persisting = self._persistent_logging()
        if not self._persisting:
            return
        if self._store is None:
            self._store = default_log_store()
        try:
            self._store.append(batch)
        except OSError as exc:
            logger.warning("could not keep log records on disk: %s", exc)

    def _persistent_logging(self) -> bool:
        if self._persist is not None:
            return self._persist()
        return persistent_logging_enabled()


_publisher = LogPublisher()


def publish_log_record(record: LogRecord) -> None:
    """Queue a record for every log stream listening; never blocks, never raises."""
    _publisher.publish(record)


def start_log_publisher() -> None:
    _publisher.start()


def flush_log_records(timeout: float = 5.0) -> bool:
    return _publisher.flush(timeout)


def system_log(message: str, *, is_stderr: bool = False) -> None:
    """A message of the supervisor itself, to its log and to every log stream."""
    logger.info("%s", message)
    publish_log_record(LogRecord(message=message, timestamp=now_ms(), is_system=True, is_stderr=is_stderr))
