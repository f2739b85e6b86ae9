"""Log records and their publication on the channel layer, which the log streams read."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

logger = logging.getLogger(__name__)

LOGS_GROUP = "supervisor.logs"


@dataclass(frozen=True)
class LogRecord:
    message: str
    timestamp: int
    """Milliseconds since the epoch."""
    is_system: bool = False
    is_stderr: bool = False
    service_id: int | None = None
    service_name: str | None = None

    def as_message(self) -> dict[str, Any]:
        """The record as the log streams carry it (spec: logs-hostconfig-misc.md)."""
        body: dict[str, Any] = {"message": self.message, "timestamp": self.timestamp}
        if self.is_system:
            body["isSystem"] = True
        else:
            body["serviceId"] = self.service_id
            body["serviceName"] = self.service_name
        if self.is_stderr:
            body["isStdErr"] = True
        return body


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_timestamped_line(line: str) -> tuple[int, str]:
    """Split Docker's `2026-11-25T21:50:00.123456789Z message` into (nanoseconds, message)."""
    stamp, _, message = line.partition(" ")
    seconds, _, fraction = stamp.rstrip("Z").partition(".")
    try:
        whole = datetime.fromisoformat(seconds + "+00:00")
    except ValueError:
        return time.time_ns(), line
    nanos = int(fraction.ljust(9, "0")[:9]) if fraction.isdigit() else 0
    return int(whole.timestamp()) * 1_000_000_000 + nanos, message


class LogPublisher:
    """Hands records to the channel layer from one background thread with one event loop,
    so that callers (apply steps, container followers) never wait on Redis and the
    channel layer keeps one connection instead of one per calling thread."""

    QUEUE_LIMIT = 10_000

    def __init__(self) -> None:
        self._queue: queue.Queue[LogRecord] = queue.Queue(self.QUEUE_LIMIT)
        self._dropped = 0
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def publish(self, record: LogRecord) -> None:
        self._ensure_thread()
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._dropped += 1

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every queued record has been handed over (or `timeout`)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="log-publisher", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        # One loop for the thread's life: the channel layer keeps its connection per loop.
        # Blocking on the queue happens outside the loop, in this daemon thread, so that
        # nothing keeps the process alive at exit.
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        loop = asyncio.new_event_loop()
        while True:
            record = self._queue.get()
            try:
                if self._dropped:
                    dropped, self._dropped = self._dropped, 0
                    note = LogRecord(
                        f"Warning: Suppressed {dropped} message(s) due to high load", now_ms(), True
                    )
                    loop.run_until_complete(self._send(layer, note))
                loop.run_until_complete(self._send(layer, record))
            except Exception:  # Redis down: the record is lost, publishing goes on
                logger.exception("could not publish a log record")
            finally:
                self._queue.task_done()

    @staticmethod
    async def _send(layer: Any, record: LogRecord) -> None:
        await layer.group_send(LOGS_GROUP, {"type": "log.record", "record": record.as_message()})


_publisher = LogPublisher()


def publish_log_record(record: LogRecord) -> None:
    """Queue a record for every log stream listening; never blocks, never raises."""
    _publisher.publish(record)


def flush_log_records(timeout: float = 5.0) -> None:
    _publisher.flush(timeout)
