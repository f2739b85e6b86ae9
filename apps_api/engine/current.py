"""The current state, read from Docker and recognised only by the supervisor's labels."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from apps_api.engine import docker as engine
from apps_api.engine.container_config import CONFIG_HASH_LABEL, CONFIG_PARTS_LABEL
from apps_api.engine.state import (
    CurrentNetwork,
    CurrentService,
    CurrentState,
    CurrentVolume,
    normalise_image_ref,
)

logger = logging.getLogger(__name__)


def balena_labels(labels: dict[str, str]) -> dict[str, str]:
    """Legacy `io.resin.*` labels under their `io.balena.*` names
    (docs/engine.md "What the engine manages")."""
    renamed: dict[str, str] = {}
    for key, value in labels.items():
        if key.startswith("io.resin."):
            key = "io.balena." + key[len("io.resin.") :].replace("resin", "balena")
        renamed.setdefault(key, value)
    return renamed


def parse_container_name(name: str) -> tuple[str, int, int, str] | None:
    """`<serviceName>_<imageId>_<releaseId>_<commit>` (parsed from the end) → its parts."""
    parts = name.lstrip("/").removeprefix("old_").rsplit("_", 3)
    if len(parts) != 4 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return parts[0], int(parts[1]), int(parts[2]), parts[3]


def _int_label(labels: dict[str, str], key: str) -> int | None:
    value = labels.get(key, "")
    return int(value) if value.isdigit() else None


def current_service(summary: dict[str, Any]) -> CurrentService | None:
    """A container summary (docker `containers` listing) as a CurrentService; None when its
    labels or name do not identify a supervised service."""
    labels = balena_labels(summary.get("Labels") or {})
    name = (summary.get("Names") or [""])[0]
    parsed = parse_container_name(name)
    app_id, service_id = _int_label(labels, "io.balena.app-id"), _int_label(labels, "io.balena.service-id")
    if parsed is None or app_id is None or service_id is None:
        logger.warning("ignoring supervised container %s: incomplete labels or name", name)
        return None
    service_name, image_id, release_id, commit = parsed
    app_uuid = labels.get("io.balena.app-uuid") or str(app_id)
    prefix = f"{app_uuid}_"
    attached = ((summary.get("NetworkSettings") or {}).get("Networks") or {}).keys()
    return CurrentService(
        container_id=summary["Id"],
        container_name=name.lstrip("/"),
        app_id=app_id,
        app_uuid=app_uuid,
        service_name=labels.get("io.balena.service-name") or service_name,
        service_id=service_id,
        image_id=image_id,
        release_id=release_id,
        commit=commit,
        status=summary.get("State", ""),
        docker_image_id=summary.get("ImageID", ""),
        config_hash=labels.get(CONFIG_HASH_LABEL, ""),
        created_at=f"{summary.get('Created', 0):012d}",
        networks=tuple(sorted(n[len(prefix) :] for n in attached if n.startswith(prefix))),
        image=summary.get("Image", ""),
        config_parts=labels.get(CONFIG_PARTS_LABEL, ""),
    )


def read_current_state(
    *,
    managed_images: Iterable[str] = (),
    downloading: Iterable[str] = (),
    app_uuids: dict[int, str] | None = None,
) -> CurrentState:
    """What the engine runs now. `app_uuids` (app id → uuid) lets networks of apps without
    containers be attributed; networks carry their app id label anyway."""
    services = tuple(s for s in map(current_service, engine.list_supervised_containers()) if s is not None)
    uuids = {s.app_id: s.app_uuid for s in services} | (app_uuids or {})

    networks = []
    for network in engine.list_supervised_networks():
        labels = network.get("Labels") or {}
        app_id = _int_label(labels, "io.balena.app-id")
        if app_id is None:
            continue
        prefix = f"{labels.get('io.balena.app-uuid') or uuids.get(app_id, str(app_id))}_"
        docker_name = network["Name"]
        name = docker_name[len(prefix) :] if docker_name.startswith(prefix) else docker_name.split("_", 1)[-1]
        networks.append(CurrentNetwork(app_id, name, docker_name, labels.get(CONFIG_HASH_LABEL, "")))

    volumes = []
    for volume in engine.list_supervised_volumes():
        labels = volume.get("Labels") or {}
        app_part, _, name = volume["Name"].partition("_")
        if not app_part.isdigit() or not name:
            continue
        volumes.append(CurrentVolume(int(app_part), name, volume["Name"], labels.get(CONFIG_HASH_LABEL, "")))

    references = engine.list_image_references()
    images = {normalise_image_ref(ref): image_id for ref, image_id in references.items()}
    return CurrentState(
        services=services,
        networks=tuple(networks),
        volumes=tuple(volumes),
        images=images,
        managed_images=frozenset(normalise_image_ref(r) for r in managed_images),
        downloading=frozenset(normalise_image_ref(r) for r in downloading),
    )


Spawn = Callable[..., threading.Thread]


class _Read:
    """One read of the engine's state, shared by the readers that arrive while it runs."""

    def __init__(self, changes: int) -> None:
        self.changes = changes
        self.done = threading.Event()
        self.waiters = 0
        self.state: CurrentState | None = None
        self.error: BaseException | None = None


class CurrentStateCache:
    """The current state for API reads, read from Docker again only after the engine
    reported a change (or `max_age` passed). Without a live event stream (`start_watching`
    not called, or the engine's events down) it caches nothing.

    The lock guards the bookkeeping only, never a Docker call: readers that find the state
    stale while a read of the latest change runs wait for that read and share its outcome
    (a hung engine costs each of them one timeout, not one per reader before it)."""

    def __init__(self, max_age: float = 30.0) -> None:
        self.max_age = max_age
        self._lock = threading.Lock()
        self._changes = 0
        self._state: CurrentState | None = None
        self._state_changes = -1
        self._state_read_at = 0.0
        self._reading: _Read | None = None
        self._watching = threading.Event()

    def get(self) -> CurrentState:
        with self._lock:
            changes = self._changes
            if (
                self._watching.is_set()
                and self._state is not None
                and self._state_changes == changes
                and time.monotonic() - self._state_read_at < self.max_age
            ):
                return self._state
            read = self._reading
            if read is not None and read.changes == changes:
                read.waiters += 1
                joined = True
            else:
                read = self._reading = _Read(changes)
                joined = False
        if joined:
            read.done.wait()
            if read.error is not None:
                raise read.error
            assert read.state is not None
            return read.state
        try:
            read.state = read_current_state()
        except BaseException as exc:
            read.error = exc
            raise
        finally:
            with self._lock:
                if self._reading is read:
                    self._reading = None
                if read.state is not None and changes >= self._state_changes:
                    self._state, self._state_changes = read.state, changes
                    self._state_read_at = time.monotonic()
            read.done.set()
        return read.state

    def invalidate(self) -> None:
        # Under the lock: the events thread and action threads invalidate at once, and an
        # unlocked `+=` could move the count back to one a stored state was read at.
        with self._lock:
            self._changes += 1

    def start_watching(self, spawn: Spawn) -> None:
        """Follow the engine's events in a thread started by `spawn` (the agent's watch,
        at start-up: the engine layer knows nothing of it)."""
        spawn("engine-events", self._watch, stopped=lambda: False)

    def _watch(self) -> None:
        while True:
            try:
                events = engine.EngineEvents()
                self.invalidate()  # anything may have changed before we listened
                self._watching.set()
                for _ in events:
                    self.invalidate()
            except Exception as exc:
                logger.info("engine events unavailable (%s); reading state on every request", exc)
            self._watching.clear()
            self.invalidate()
            time.sleep(EVENTS_RETRY_SECONDS)


EVENTS_RETRY_SECONDS = 1.0
_cache = CurrentStateCache()


def cached_current_state() -> CurrentState:
    """The current state for reads that may be a few milliseconds behind the engine."""
    return _cache.get()


def invalidate_current_state() -> None:
    _cache.invalidate()


def start_watching_the_engine(spawn: Spawn) -> None:
    _cache.start_watching(spawn)
