"""The device's logs, uploaded to the cloud as they are published
(docs/cloud.md "Logs upload"). Runs in the log collector's process: one thread reads the log group of the
channel layer (container lines and the worker's system messages alike) into a bounded
buffer, another keeps a log stream to the cloud open while there is something to send.

The buffer outlives connections and comes before provisioning: from the start of a managed
device, and while the cloud is away or slow, it fills to 256 KB; what does not fit is
dropped and reported as one system message once sending resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

from apps_api.backoff import backoff_delay
from apps_api.cloud.client import CloudError, LogStream, cloud_device
from apps_api.device_settings import stored_device_config
from apps_api.logs.records import LOGS_GROUP, LogBatch, LogSequencer, now_ms, suppressed_line
from apps_api.watched_threads import spawn

if TYPE_CHECKING:
    from apps_api.cloud.client import CloudDevice

logger = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 10_000
TRUNCATED_SUFFIX = "[...]"
BUFFER_BYTES = 256 * 1024
START_DELAY_SECONDS = 5.0
"""Time between opening a stream and sending on it, as the original does."""
IDLE_SECONDS = 60.0
RECONNECT_BASE_SECONDS = 5.0
RECONNECT_MAX_SECONDS = 300.0
ENABLED_CHECK_SECONDS = 5.0
# channels_redis forgets a group member after a day (group_expiry): join again well before.
GROUP_REJOIN_SECONDS = 3600.0


def cloud_log_line(line: str) -> bytes | None:
    """A record as the log streams carry it (LogRecord.as_json) in the cloud's form, as the
    original sends it: its message capped at 10 000 characters ("[...]" included),
    serviceName left out; None for a container line without a service id, which the
    original does not send either."""
    record = json.loads(line)
    if not record.get("isSystem") and record.get("serviceId") is None:
        return None
    message = str(record.get("message", ""))
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - len(TRUNCATED_SUFFIX)] + TRUNCATED_SUFFIX
    uploaded: dict[str, object] = {"message": message, "timestamp": record.get("timestamp") or now_ms()}
    if record.get("isSystem"):
        uploaded["isSystem"] = True
    uploaded["isStdErr"] = bool(record.get("isStdErr"))
    if record.get("serviceId") is not None:
        uploaded["serviceId"] = record["serviceId"]
    return json.dumps(uploaded, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


class PendingLogs:
    """NDJSON lines waiting for the cloud, at most `limit` bytes of them; lines that do
    not fit are counted, and reported after the lines that were kept."""

    def __init__(self, limit: int = BUFFER_BYTES) -> None:
        self._lines: deque[bytes] = deque()
        self._size = 0
        self._limit = limit
        self._dropped = 0
        self._changed = threading.Condition(threading.Lock())

    def add(self, line: bytes) -> None:
        with self._changed:
            if self._size + len(line) > self._limit:
                self._dropped += 1
                return
            self._lines.append(line)
            self._size += len(line)
            if len(self._lines) == 1:
                self._changed.notify_all()

    def wait(self, timeout: float) -> bool:
        """Whether there is something to send, waiting up to `timeout` seconds for it."""
        with self._changed:
            return self._changed.wait_for(lambda: bool(self._lines or self._dropped), timeout)

    def take(self) -> bytes:
        """Everything waiting, and a line reporting what was dropped since the last take."""
        with self._changed:
            taken = b"".join(self._lines)
            self._lines.clear()
            self._size = 0
            if self._dropped:
                taken += cloud_log_line(suppressed_line(self._dropped)) or b""
                self._dropped = 0
            return taken

    def clear(self) -> None:
        with self._changed:
            self._lines.clear()
            self._size = 0
            self._dropped = 0


def log_upload_enabled() -> bool:
    """Whether logs are kept for the cloud: a managed device, provisioned or not yet (what
    its first release logs is sent once it is), not in local mode, whose target does not
    turn SUPERVISOR_LOG_CONTROL off."""

    try:
        if cloud_device() is None:
            return False
        config = stored_device_config()
    except Exception as exc:
        logger.warning("cloud logs: could not tell whether to upload (%s)", exc)
        return False
    return config.log_control and not config.local_mode


def reconnect_delay(failures: int, *, base: float = RECONNECT_BASE_SECONDS) -> float:
    """5 s doubling with each failure in a row, at most 5 minutes."""
    return backoff_delay(failures, base=base, cap=RECONNECT_MAX_SECONDS)


class CloudLogUploader:
    """Uploads what is published to the log group while log_upload_enabled() says so.
    `start()` starts its two daemon threads; `stop()` ends them."""

    def __init__(
        self,
        *,
        group: str = LOGS_GROUP,
        start_delay: float = START_DELAY_SECONDS,
        idle_seconds: float = IDLE_SECONDS,
        reconnect_base: float = RECONNECT_BASE_SECONDS,
        enabled: Callable[[], bool] = log_upload_enabled,
    ) -> None:
        self.pending = PendingLogs()
        self._group = group
        self._start_delay = start_delay
        self._idle_seconds = idle_seconds
        self._reconnect_base = reconnect_base
        self._enabled_now = enabled
        self._enabled = False
        self._checked_at = -ENABLED_CHECK_SECONDS
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._receiving: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self.joined = threading.Event()
        """Set while the uploader listens to the log group (only while uploading)."""
        self.ready = threading.Event()
        """Set once the uploader knows whether to upload, and listens if it is to."""

    @property
    def uploading(self) -> bool:
        """Whether the last check found logs are to be uploaded."""
        return self._enabled

    def start(self) -> None:
        spawn("cloud-logs-in", self._receive_forever, stopped=self._stopping.is_set)
        spawn("cloud-logs-out", self._send_forever, stopped=self._stopping.is_set)

    def stop(self) -> None:
        self._stopping.set()
        if self._loop is not None and self._receiving is not None:
            with contextlib.suppress(RuntimeError):  # its loop is closed: the thread has ended
                self._loop.call_soon_threadsafe(self._receiving.cancel)

    # --- from the log group into the buffer --------------------------------------------------

    def _receive_forever(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._receiving = loop.create_task(self._receive())
        try:
            loop.run_until_complete(self._receiving)
        except asyncio.CancelledError:
            pass
        finally:
            loop.close()

    async def _receive(self) -> None:
        """Member of the log group only while uploading: otherwise (unmanaged, local mode)
        the publishers need not send every batch to one more channel."""

        # A layer instance of its own: channels_redis lets one event loop at a time receive
        # on an instance, and the web server's log streams receive on the shared one in theirs.
        layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
        self._wake = asyncio.Event()
        channel = await layer.new_channel()
        sequencer = LogSequencer()
        joined_at: float | None = None
        try:
            while not self._stopping.is_set():
                try:
                    if not self._enabled:
                        if joined_at is not None:
                            await layer.group_discard(self._group, channel)
                            joined_at = None
                            self.joined.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), ENABLED_CHECK_SECONDS)
                        self._wake.clear()
                        continue
                    if joined_at is None or time.monotonic() - joined_at >= GROUP_REJOIN_SECONDS:
                        await layer.group_add(self._group, channel)
                        if joined_at is None:
                            sequencer = LogSequencer()  # what was sent while away was not lost
                        joined_at = time.monotonic()
                        self.joined.set()
                        self.ready.set()
                    # Bounded, so that a device quiet for a day still joins again in time.
                    message = await asyncio.wait_for(layer.receive(channel), GROUP_REJOIN_SECONDS / 2)
                    lines = sequencer.take(LogBatch.from_message(message))
                    if self._enabled:
                        for line in lines:
                            if (uploaded := cloud_log_line(line)) is not None:
                                self.pending.add(uploaded)
                except TimeoutError:
                    continue
                except Exception as exc:
                    logger.warning("cloud logs: could not read the log group (%s); retrying", exc)
                    await asyncio.sleep(1.0)
        finally:
            with contextlib.suppress(Exception):
                await layer.group_discard(self._group, channel)
            with contextlib.suppress(Exception):
                await layer.close_pools()

    # --- from the buffer to the cloud --------------------------------------------------------

    def _refresh_enabled(self) -> bool:
        if time.monotonic() - self._checked_at >= ENABLED_CHECK_SECONDS:
            self._checked_at = time.monotonic()
            enabled = self._enabled_now()
            turned_on = enabled and not self._enabled
            self._enabled = enabled
            if not enabled:
                self.pending.clear()
                self.ready.set()
            elif turned_on and self._loop is not None and self._wake is not None:
                self._loop.call_soon_threadsafe(self._wake.set)  # join the log group now
        return self._enabled

    def _send_forever(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            opened_at = time.monotonic()
            try:
                if not self._refresh_enabled():
                    self._stopping.wait(ENABLED_CHECK_SECONDS)
                    continue
                if not self.pending.wait(ENABLED_CHECK_SECONDS) or (device := cloud_device()) is None:
                    continue
                if not device.provisioned:  # kept in the buffer until the device has its key
                    self._stopping.wait(ENABLED_CHECK_SECONDS)
                    continue
                opened_at = time.monotonic()
                self._stream(device)
                failures = 0
            except Exception as exc:
                # A stream that had been working for a while starts the backoff afresh.
                failures = 1 if time.monotonic() - opened_at >= self._idle_seconds else failures + 1
                delay = reconnect_delay(failures, base=self._reconnect_base)
                if isinstance(exc, CloudError):
                    logger.warning("cloud logs: %s; reconnecting in %.0f s", exc, delay)
                else:
                    logger.exception("cloud logs: upload failed; trying again in %.0f s", delay)
                self._stopping.wait(delay)

    def _stream(self, device: CloudDevice) -> None:
        """Send on one stream until it has been idle for a while (or the upload is turned
        off); raises CloudError when the cloud answers or the connection fails."""

        stream = LogStream(device)
        try:
            if self._stopping.wait(self._start_delay):
                return
            last_sent = time.monotonic()
            while not self._stopping.is_set():
                if stream.answered():
                    raise CloudError("the cloud ended the log stream")
                if not self._refresh_enabled():
                    stream.finish()
                    return
                if self.pending.wait(1.0):
                    stream.write(self.pending.take())
                    last_sent = time.monotonic()
                elif time.monotonic() - last_sent >= self._idle_seconds:
                    stream.finish()
                    return
        finally:
            stream.close()
