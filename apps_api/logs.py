"""Log records and their publication on the channel layer, which the log streams read."""

from __future__ import annotations

import logging
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


def publish_log_record(record: LogRecord) -> None:
    """Hand a record to every log stream listening; never raises (logs must not stop work)."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(LOGS_GROUP, {"type": "log.record", "record": record.as_message()})
    except Exception:  # Redis down: the record is lost, the collector goes on
        logger.exception("could not publish a log record")
