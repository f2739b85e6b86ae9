"""What one client of the log streams receives: the batches of the channel layer's group
as NDJSON text, with a record for what was lost, no line twice, and nothing while the
device is not in local mode. Shared by the NDJSON view and the WebSocket consumer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from enum import Enum
from typing import Any

from asgiref.sync import sync_to_async

from apps_api.apikeys import find_api_key
from apps_api.device_settings import local_mode_active
from apps_api.logs.records import LOGS_GROUP, LogBatch, LogSequencer
from apps_api.logs.store import default_log_store
from hostcfg.values import ascii_int

FIRST_LINE = '{"message":"Streaming logs","isSystem":true}\n'
LOCAL_MODE_CHECK_SECONDS = 2.0
# channels_redis forgets a group member after a day (group_expiry): join again well before.
GROUP_REJOIN_SECONDS = 3600.0


class LocalModeGate:
    """Whether the device is in local mode, asked again at most every few seconds."""

    def __init__(self) -> None:
        self._open = False
        self._checked_at = -LOCAL_MODE_CHECK_SECONDS

    async def is_open(self) -> bool:
        if time.monotonic() - self._checked_at >= LOCAL_MODE_CHECK_SECONDS:
            self._checked_at = time.monotonic()
            self._open = await sync_to_async(local_mode_active)()
        return self._open


REPLAY_CHUNK_BYTES = 256 * 1024


class LogFollower:
    """One client's subscription: `start()` joins the group, `replay()` reads the store (if
    asked), `text_of()` turns each group message into what the client is sent, `stop()`
    leaves the group."""

    def __init__(
        self, layer: Any, channel: str, *, since_ms: int | None = None, group: str = LOGS_GROUP
    ) -> None:
        self.layer = layer
        self.channel = channel
        self.since_ms = since_ms
        self.group = group
        self._sequencer = LogSequencer()
        self._gate = LocalModeGate()
        self._joined_at = 0.0

    async def start(self) -> None:
        """Join the group: from now on, text_of() gets every batch published."""
        await self._join()

    async def replay(self) -> AsyncIterator[str]:
        """The store's records since `since_ms` as NDJSON text, in chunks of about
        REPLAY_CHUNK_BYTES (a full store is 16 MiB: never in memory at once); nothing
        without `since_ms` or outside local mode. Call after start(): a batch written
        while the store is read then comes live."""
        if self.since_ms is None or not await self._gate.is_open():
            return
        batches = default_log_store().batches()
        while chunk := await asyncio.to_thread(self._next_chunk, batches):
            yield chunk

    def _next_chunk(self, batches: Iterator[LogBatch]) -> str:
        lines: list[str] = []
        size = 0
        for batch in batches:
            for line in self._sequencer.take(batch, since_ms=self.since_ms, replay=True):
                lines.append(line)
                size += len(line) + 1
            if size >= REPLAY_CHUNK_BYTES:
                break
        return "".join(line + "\n" for line in lines)

    async def text_of(self, message: dict[str, Any]) -> str:
        """What the client is sent for one group message: NDJSON lines, or ""."""
        if time.monotonic() - self._joined_at >= GROUP_REJOIN_SECONDS:
            await self._join()
        lines = self._sequencer.take(LogBatch.from_message(message))
        if not lines or not await self._gate.is_open():
            return ""
        return "\n".join(lines) + "\n"

    async def stop(self) -> None:
        await self.layer.group_discard(self.group, self.channel)

    async def _join(self) -> None:
        await self.layer.group_add(self.group, self.channel)
        self._joined_at = time.monotonic()


MAX_SINCE_MS = 2**53


def parse_since(raw: str | None) -> int | None:
    """`?since=` of a log stream: milliseconds since the epoch, in ASCII digits; None when
    absent. Raises ValueError otherwise."""
    if not raw:
        return None
    since = ascii_int(raw, maximum=MAX_SINCE_MS)
    if since is None:
        raise ValueError("since must be a timestamp in milliseconds")
    return since


class LogsAccess(Enum):
    KEYED = "keyed"
    KEYLESS = "keyless"  # local mode: the browser checks apply (apps_api/api/browsers.py)


def logs_access(key: str) -> LogsAccess | None:
    """/v2/local/* needs no key in local mode, else any valid key (docs/api.md "API keys"); None when
    the caller may not read the logs."""
    if key and find_api_key(key) is not None:
        return LogsAccess.KEYED
    return LogsAccess.KEYLESS if local_mode_active() else None
