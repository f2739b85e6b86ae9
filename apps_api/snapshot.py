"""The device as the API sees it, in one read: the stored target, the containers Docker
runs, and the apply loop's progress in Redis. Reads never wait for an apply; every state
answer (api/answers.py) and the state report are built from one `DeviceSnapshot`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from apps_api import apply_status
from apps_api.apikeys import ApiAccess
from apps_api.engine.current import cached_current_state
from apps_api.engine.state import AppSpec, CurrentService, CurrentState, TargetState
from apps_api.engine.status import ServiceStatus, service_statuses
from apps_api.errors import BadRequest
from apps_api.target.store import load_target_cached


@dataclass(frozen=True)
class DeviceSnapshot:
    target: TargetState | None
    current: CurrentState
    statuses: tuple[ServiceStatus, ...]
    flags: dict[str, Any]
    image_progress: dict[str, int]
    applying: bool
    last_changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """By "appId/service": the service's last change, {"at", "action", "reason"}."""

    def target_apps(self, access: ApiAccess | None = None) -> list[AppSpec]:
        apps = list(self.target.apps) if self.target else []
        return [a for a in apps if access is None or access.allows_app(a.app_id)]

    def target_app(self, app_id: int) -> AppSpec | None:
        return next((a for a in self.target_apps() if a.app_id == app_id), None)

    def containers_of(self, app_id: int) -> list[CurrentService]:
        return sorted((s for s in self.current.services if s.app_id == app_id), key=lambda s: s.service_name)

    def last_change_of(self, app_id: int, service_name: str) -> dict[str, Any] | None:
        return self.last_changes.get(apply_status.service_key(app_id, service_name))

    def status_of(self, app_id: int, service_name: str) -> ServiceStatus | None:
        return next((s for s in self.statuses if (s.app_id, s.service_name) == (app_id, service_name)), None)


def read_snapshot() -> DeviceSnapshot:
    """What the device runs and is doing now, from the caches (no Docker call when warm).
    While the apply progress's stamp and the engine's state are unchanged since the last
    read, that read's snapshot again (the same object: prepared answers key on it), for one
    small Redis round trip; otherwise the progress is read whole."""
    global _last_read
    stamp = apply_status.read_progress_stamp()
    current = cached_current_state()
    last = _last_read
    if last is not None and last.stamp == stamp and last.current is current:
        return last.snapshot
    raw = apply_status.read_raw_progress()
    if last is not None and last.raw == raw and last.current is current:
        snapshot = last.snapshot
    else:
        snapshot = _snapshot(apply_status.progress_from(raw), current)
    _last_read = _Reading(stamp, raw, current, snapshot)
    return snapshot


@dataclass(frozen=True)
class _Reading:
    stamp: tuple[Any, Any]
    """Read before `raw`: a write between the two only makes the next read re-read."""
    raw: apply_status.RawProgress
    current: CurrentState
    snapshot: DeviceSnapshot


_last_read: _Reading | None = None


def _snapshot(progress: apply_status.ApplyProgress, current: CurrentState) -> DeviceSnapshot:
    target = load_target_cached(progress.target_version)
    statuses = service_statuses(
        current,
        target.apps if target else (),
        volatile=progress.service_statuses,
        image_progress=progress.image_progress,
    )
    return DeviceSnapshot(
        target=target,
        current=current,
        statuses=tuple(statuses),
        flags=progress.flags,
        image_progress=progress.image_progress,
        applying=progress.applying,
        last_changes=progress.last_changes,
    )


def update_status(snapshot: DeviceSnapshot, app: AppSpec) -> str:
    """Release update status, by precedence (docs/engine.md "Update status"):
    rejected > failed > aborted > downloading > downloaded > applying changes > done. The API's
    updateStatus and the state report's update_status both come from here (a rejected
    release is reported without services; a failed one failed its health probation)."""
    if app.rejected:
        return "rejected"
    if app.failed_commit:
        return "failed"
    statuses = [snapshot.status_of(app.app_id, s.service_name) for s in app.services]
    words = {s.status for s in statuses if s is not None}
    if snapshot.flags.get("update_failed") and snapshot.applying:
        return "aborted"
    if "Downloading" in words:
        return "downloading"
    if "Downloaded" in words:
        return "downloaded"
    if words & {"Installing", "Installed", "Awaiting handover", "Handing over"}:
        return "applying changes"
    return "done"


def current_commit(snapshot: DeviceSnapshot, app_id: int) -> str | None:
    """The commit the app's containers run, when they agree on one."""
    commits = {c.commit for c in snapshot.containers_of(app_id)}
    return commits.pop() if len(commits) == 1 else None


APP_NOT_FOUND = (
    "App not found: an app needs to be installed for this endpoint to work. If you've recently moved this "
    "device from another app, please push an app and wait for it to be installed first."
)


V2_ENDPOINT_HINT = (
    "serviceName or imageId parameters were not provided or the app is multi-container. "
    "Use the v2 service action endpoints."
)


def single_container_app(snapshot: DeviceSnapshot, app_id: int) -> tuple[AppSpec | None, CurrentService]:
    """The one container of a single-container app (v1 app endpoints)."""
    containers = snapshot.containers_of(app_id)
    if not containers:
        raise BadRequest(APP_NOT_FOUND, text=True)
    if len({c.service_name for c in containers}) > 1:
        raise BadRequest(V2_ENDPOINT_HINT, text=True)
    return snapshot.target_app(app_id), containers[0]
