"""Follows the output of every supervised container and publishes it as log records."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apps_api.engine.current import balena_labels
from apps_api.engine.docker import (
    SUPERVISED_LABEL,
    ContainerEvents,
    ContainerOutput,
    EngineUnavailable,
    inspect_container,
    list_supervised_containers,
    ping_engine,
)
from apps_api.logs.publisher import LogPublisher, system_log
from apps_api.logs.records import (
    LOGS_GROUP,
    ContainerLineEncoder,
    EncodedRecord,
    output_stream_key,
    parse_docker_time,
    parse_timestamped_line,
)
from apps_api.logs.service_exits import ServiceExits
from apps_api.service_changes import record_crash

logger = logging.getLogger(__name__)

ENGINE_RETRY_SECONDS = 5.0
FOLLOW_RETRY_SECONDS = 1.0
POSITIONS_SAVE_SECONDS = 0.5
POSITIONS_FILE = "log-collector-positions.json"


def is_supervised(labels: dict[str, str]) -> bool:
    return SUPERVISED_LABEL in balena_labels(labels)


@dataclass(frozen=True)
class FollowedContainer:
    """What the collector needs to know of a container to follow it."""

    id: str
    service_name: str
    service_id: int | None
    tty: bool
    stdout: bool
    """False when BALENA_LOGS_LEVEL asks for stderr only."""
    attach: bool
    """False when BALENA_LOGS_LEVEL=none."""
    run_began_ns: int
    """A time before the first line of its current (or, once stopped, last) run, and after
    the last line of the run before: where a container seen for the first time is
    followed from."""

    @classmethod
    def from_inspect(cls, details: dict[str, Any]) -> FollowedContainer:
        config = details.get("Config") or {}
        state = details.get("State") or {}
        labels = balena_labels(config.get("Labels") or {})
        environment = dict(line.split("=", 1) for line in config.get("Env") or [] if "=" in line)
        level = str(environment.get("BALENA_LOGS_LEVEL") or environment.get("RESIN_LOGS_LEVEL") or "").lower()
        service_id = labels.get("io.balena.service-id", "")
        return cls(
            id=details["Id"],
            service_name=labels.get("io.balena.service-name", ""),
            service_id=int(service_id) if service_id.isdigit() else None,
            tty=bool(config.get("Tty")),
            stdout=level not in ("err", "error"),
            attach=level != "none",
            run_began_ns=_run_began_ns(state),
        )


# Docker stamps the first lines of a run a little before the StartedAt it records.
STARTED_AT_MARGIN_NS = 1_000_000_000


def _run_began_ns(state: dict[str, Any]) -> int:
    if state.get("Running"):
        # The previous run's end (zero time if there was none), which Docker records
        # after that run's last line.
        return parse_docker_time(state.get("FinishedAt") or "") or 0
    # Stopped already: FinishedAt is this run's end.
    started = parse_docker_time(state.get("StartedAt") or "") or 0
    return max(0, started - STARTED_AT_MARGIN_NS)


def _describe_service(container_id: str, attributes: dict[str, str]) -> str:
    """`<service name> <image id>`, as the supervisor's own lines name a service."""
    image = attributes.get("image", "")
    try:
        details = inspect_container(container_id)
    except Exception as exc:
        logger.warning("log collector: could not inspect container %s (%s)", container_id[:12], exc)
        details = None
    if details is not None:
        image = str(details.get("Image") or image)
    return f"{balena_labels(attributes).get('io.balena.service-name', '')} {image}"


def journal_crash(container_id: str, attributes: dict[str, str]) -> None:
    """Journal a supervised container's exit that the supervisor did not cause, with its
    exit code (the `die` event's `exitCode`)."""
    labels = balena_labels(attributes)
    app_id, service_name = labels.get("io.balena.app-id", ""), labels.get("io.balena.service-name", "")
    code = attributes.get("exitCode", "")
    if not app_id.isdigit() or not service_name:
        return
    try:
        record_crash(int(app_id), service_name, int(code) if code.lstrip("-").isdigit() else None)
    except Exception:  # the journal must not stop the collector following the others
        logger.exception("log collector: could not journal the exit of %s", container_id[:12])


class CollectorPositions:
    """The timestamp of the last line read and of the last line published, per container
    output stream; the published ones are saved, so that a new collector process resumes
    where the last one stopped (a line published twice after a crash is dropped by the
    streams, which remember each stream's last cursor).

    `read[key]` has one writer, the follower of that container, which updates it without
    the lock (once per line); keys are added and removed under the lock, and iterations
    copy the keys first. `sent` is only touched under the lock."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()
        self.read: dict[str, int] = {}
        self.sent: dict[str, int] = self._load()
        self._dirty = False
        self._saved_at = 0.0

    def _load(self) -> dict[str, int]:
        if self._path is None or not self._path.exists():
            return {}
        try:
            return {str(k): int(v) for k, v in json.loads(self._path.read_text()).items()}
        except (OSError, ValueError, AttributeError) as exc:
            logger.warning("log collector: ignoring unreadable %s (%s)", self._path, exc)
            return {}

    def resume_from(self, key: str, default: int) -> int:
        """Where to resume `key`: after the last line read in this process, else after the
        last one a previous process published, else after `default`."""
        with self._lock:
            since = self.read.get(key, self.sent.get(key, default))
            self.read[key] = since
            if key not in self.sent:
                self.sent[key] = since
                self._dirty = True
            return since

    def published(self, records: Sequence[EncodedRecord]) -> None:
        with self._lock:
            sent = self.sent
            for _, _, cursor in records:
                if cursor is not None:
                    key, nanos = cursor
                    if nanos > sent.get(key, 0):
                        sent[key] = nanos
                        self._dirty = True
        if time.monotonic() - self._saved_at >= POSITIONS_SAVE_SECONDS:
            self.save()

    def forget(self, container_id: str) -> None:
        """Drop the positions of a container that was removed."""
        with self._lock:
            for stderr in (False, True):
                key = output_stream_key(container_id, stderr)
                self.read.pop(key, None)
                self._dirty |= self.sent.pop(key, None) is not None

    def forget_except(self, container_ids: set[str]) -> None:
        """Drop the positions of containers that no longer exist."""
        short_ids = {container_id[:12] for container_id in container_ids}
        with self._lock:
            for positions in (self.read, self.sent):
                # list() copies the keys at once: a follower may be adding its key meanwhile.
                for key in [k for k in list(positions) if k.split(":")[0] not in short_ids]:
                    positions.pop(key, None)
            self._dirty = True

    def save(self) -> None:
        # One save at a time, whole: two would share the temporary file, and an older
        # snapshot could land after a newer one.
        with self._save_lock:
            with self._lock:
                if self._path is None or not self._dirty:
                    return
                snapshot, self._dirty = dict(self.sent), False
                self._saved_at = time.monotonic()
            temporary = self._path.with_suffix(".tmp")
            try:
                temporary.write_text(json.dumps(snapshot))
                os.replace(temporary, self._path)
            except OSError as exc:
                with self._lock:
                    self._dirty = True
                logger.warning("log collector: could not save positions to %s (%s)", self._path, exc)


class LogCollector:
    """One follower thread per supervised container (both its streams in one request),
    attached when the container starts and resumed after the last line read when it
    starts again. Docker stamps the first lines of a run before the start event, so "from
    the event" would lose them; a container first seen is followed from the end of its
    previous run. The same events tell the user when a service exits or is restarted
    without the supervisor asking (service_exits.py).

    Records are published with `wait`: when Redis is slow the followers stop reading, and
    Docker keeps the lines, rather than the collector dropping them.
    """

    def __init__(
        self,
        *,
        positions_path: Path | None = None,
        group: str = LOGS_GROUP,
        publish: Callable[[EncodedRecord], None] | None = None,
        announce: Callable[[str], None] = system_log,
    ) -> None:
        """`positions_path`: where positions survive the process (none: they do not);
        `group`: the channel layer group to publish to; `publish`: a stand-in for the
        publisher, for tests; `announce`: where system lines (`Service exited …`) go."""
        self.positions = CollectorPositions(positions_path)
        self._publisher = LogPublisher(on_sent=self.positions.published, group=group, name="apps")
        self._publish = publish or (lambda record: self._publisher.publish_encoded(record, wait=True))
        self._lock = threading.Lock()
        self._followers: dict[str, threading.Thread] = {}
        self._outputs: dict[str, ContainerOutput] = {}
        self._again: set[str] = set()
        self._stopping = threading.Event()
        self._events: ContainerEvents | None = None
        self._exits = ServiceExits(announce=announce, describe=_describe_service, exited=journal_crash)
        self.ready = threading.Event()
        """Set once the collector follows the existing containers and listens for new ones."""

    def run(self) -> None:
        """Collect until stop(); waits for the engine when it is not there yet. Publishes
        what was read and saves the positions before returning."""
        while not self._stopping.is_set():
            try:
                ping_engine()
                self._events = ContainerEvents()
                self._follow_existing()
                self.ready.set()
                for action, container_id, attributes in self._events:
                    if not is_supervised(attributes):
                        continue
                    self._exits.observe(action, container_id, attributes)
                    if action == "start":
                        self.follow(container_id)
            except EngineUnavailable as exc:
                logger.warning("log collector: engine unavailable (%s); retrying", exc)
            except Exception:
                if not self._stopping.is_set():
                    logger.exception("log collector: event stream failed; restarting it")
            self._stopping.wait(ENGINE_RETRY_SECONDS)
        self._publisher.flush(timeout=10)
        self.positions.save()

    def start_publisher(self) -> None:
        self._publisher.start()

    def stopped(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """End run() (from another thread or a signal handler): followers stop reading."""
        self._stopping.set()
        if self._events is not None:
            self._events.close()
        with self._lock:
            outputs = list(self._outputs.values())
        for output in outputs:
            output.close()

    def _follow_existing(self) -> None:
        """Running containers, and stopped ones a previous process had not read to the end."""
        summaries = list_supervised_containers()
        self.positions.forget_except({summary["Id"] for summary in summaries})
        for summary in summaries:
            known = any(output_stream_key(summary["Id"], err) in self.positions.sent for err in (False, True))
            if summary.get("State") == "running" or known:
                self.follow(summary["Id"])

    def follow(self, container_id: str) -> None:
        """Make sure the container's output is being followed (again, if it restarted)."""
        with self._lock:
            follower = self._followers.get(container_id)
            if follower is not None and follower.is_alive():
                # Still reading the last run's output: it looks again once that ends.
                self._again.add(container_id)
                return
            follower = threading.Thread(
                target=self._follow_runs, args=(container_id,), daemon=True, name=f"logs-{container_id[:12]}"
            )
            self._followers[container_id] = follower
        follower.start()

    def _follow_runs(self, container_id: str) -> None:
        while not self._stopping.is_set():
            attached = True
            try:
                attached = self._follow_once(container_id)
            except Exception:
                if not self._stopping.is_set():
                    logger.exception("log collector: output of container %s interrupted", container_id[:12])
                    self._stopping.wait(FOLLOW_RETRY_SECONDS)
            # Its output ends when it stops; if it runs (again, or still, after an error),
            # follow on from the last line read.
            running = attached and self._running(container_id)
            with self._lock:
                self._outputs.pop(container_id, None)
                if not running and container_id not in self._again:
                    del self._followers[container_id]
                    return
                self._again.discard(container_id)

    @staticmethod
    def _running(container_id: str) -> bool:
        try:
            details = inspect_container(container_id)
        except Exception as exc:
            logger.warning("log collector: could not inspect container %s (%s)", container_id[:12], exc)
            return False  # run() follows it again once the engine answers
        return details is not None and bool((details.get("State") or {}).get("Running"))

    def _follow_once(self, container_id: str) -> bool:
        """Publish the container's output until it stops; False if it is not to be
        followed (removed, or BALENA_LOGS_LEVEL=none)."""
        details = inspect_container(container_id)
        if details is None:
            self.positions.forget(container_id)
            return False
        container = FollowedContainer.from_inspect(details)
        if not container.attach:
            return False
        since = min(
            self.positions.resume_from(output_stream_key(container_id, stderr), container.run_began_ns)
            for stderr in ((False, True) if container.stdout else (True,))
        )
        output = ContainerOutput(container_id, tty=container.tty, since_ns=since, stdout=container.stdout)
        with self._lock:
            self._outputs[container_id] = output
        if self._stopping.is_set():
            output.close()
        read = self.positions.read
        encoders = {
            stderr: ContainerLineEncoder(
                container_id=container_id,
                stderr=stderr,
                service_id=container.service_id,
                service_name=container.service_name,
            )
            for stderr in (False, True)
        }
        publish = self._publish
        for stderr, raw in output:
            encoder = encoders[stderr]
            # The rest of a long tty line has no timestamp: it follows the piece before it
            # (stamped now, it would sort after the lines that follow and hide them).
            last_ns = read[encoder.stream_key]
            stamp_ns, message = parse_timestamped_line(
                raw.decode("utf-8", errors="replace"), unstamped_ns=last_ns + 1
            )
            if stamp_ns <= read[encoder.stream_key]:
                continue  # already published: `since` is inclusive, and both streams share it
            if self._stopping.is_set():
                break
            read[encoder.stream_key] = stamp_ns
            publish(encoder.encode(message, stamp_ns))
        return True
