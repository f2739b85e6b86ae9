"""Follows the output of every supervised container and publishes it as log records."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from apps_api.engine.docker import (
    ContainerStartEvents,
    EngineUnavailable,
    SupervisedContainer,
    follow_container_output,
    ping_engine,
    running_supervised_containers,
)
from apps_api.logs import LogRecord, parse_timestamped_line, publish_log_record

logger = logging.getLogger(__name__)

ENGINE_RETRY_SECONDS = 5.0
FOLLOWER_END_WAIT_SECONDS = 2.0


class LogCollector:
    """One follower thread per container output stream, attached when the container starts.

    Each stream remembers the timestamp of the last line it published, so a restarted
    container is followed from there: Docker stamps the first lines of a run before the
    start event, so "since the event" would lose them.
    """

    def __init__(self, publish: Callable[[LogRecord], None] = publish_log_record) -> None:
        self._publish = publish
        self._followers: dict[tuple[str, bool], threading.Thread] = {}
        self._last_seen_ns: dict[tuple[str, bool], int] = {}
        self._stopping = threading.Event()
        self._events: ContainerStartEvents | None = None
        self.ready = threading.Event()
        """Set once the collector follows the running containers and listens for new ones."""

    def run(self) -> None:
        """Collect until stop(); waits for the engine when it is not there yet."""
        while not self._stopping.is_set():
            try:
                ping_engine()
                self._events = ContainerStartEvents()
                for container in running_supervised_containers():
                    self.follow(container, after_ns=time.time_ns())
                self.ready.set()
                for container in self._events:
                    self.follow(container)
            except EngineUnavailable as exc:
                logger.warning("log collector: engine unavailable (%s); retrying", exc)
            except Exception:
                if not self._stopping.is_set():
                    logger.exception("log collector: event stream failed; restarting it")
            self._stopping.wait(ENGINE_RETRY_SECONDS)

    def stop(self) -> None:
        self._stopping.set()
        if self._events is not None:
            self._events.close()

    def follow(self, container: SupervisedContainer, *, after_ns: int | None = None) -> None:
        """Publish the container's lines stamped after `after_ns`; by default, after the
        last line already published (or from its first line, for a container not seen yet)."""
        for stderr in (False, True):
            key = (container.id, stderr)
            follower = self._followers.get(key)
            if follower is not None:
                # A restart's start event can come before the last run's stream has ended.
                follower.join(FOLLOWER_END_WAIT_SECONDS)
                if follower.is_alive():
                    continue
            if after_ns is not None or key not in self._last_seen_ns:
                self._last_seen_ns[key] = after_ns or 0
            follower = threading.Thread(
                target=self._forward, args=(container, stderr), daemon=True, name=f"logs-{container.id[:12]}"
            )
            self._followers[key] = follower
            follower.start()

    def _forward(self, container: SupervisedContainer, stderr: bool) -> None:
        key = (container.id, stderr)
        since_seconds = self._last_seen_ns[key] // 1_000_000_000
        pending = b""
        try:
            for chunk in follow_container_output(container.id, stderr=stderr, since=since_seconds):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._publish_line(container, stderr, line)
            if pending:
                self._publish_line(container, stderr, pending)
        except Exception:
            logger.exception("log collector: lost the output of %s", container.service_name or container.id)

    def _publish_line(self, container: SupervisedContainer, stderr: bool, line: bytes) -> None:
        stamp_ns, message = parse_timestamped_line(line.decode("utf-8", errors="replace"))
        key = (container.id, stderr)
        if stamp_ns <= self._last_seen_ns[key]:
            return
        self._last_seen_ns[key] = stamp_ns
        self._publish(
            LogRecord(
                message=message,
                timestamp=stamp_ns // 1_000_000,
                is_stderr=stderr,
                service_id=container.service_id,
                service_name=container.service_name,
            )
        )
