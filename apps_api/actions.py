"""What the supervisor does when asked: views and tasks call these, never the engine.

Callers are listed on each action.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from apps_api import apply_status
from apps_api.apikeys import ApiAccess, UnknownApiKey, check_scope
from apps_api.apikeys import regenerate_api_key as regenerate
from apps_api.apply.app_actions import AppNotRunning, ServiceGone
from apps_api.apply.planning import explain_posted_target, explain_stored_target, plan_document
from apps_api.apply.single_flight import cancel_running_apply, schedule_apply
from apps_api.cloud.client import CloudError, cloud_device, fetch_device_tags
from apps_api.cloud.poll import request_poll_now
from apps_api.device_settings import instant_updates_enabled
from apps_api.engine.causes import Cause, api_cause
from apps_api.engine.container_config import volume_docker_name
from apps_api.engine.current import invalidate_current_state
from apps_api.engine.docker import remove_unused_supervised_volumes
from apps_api.engine.locks import UpdatesLocked
from apps_api.engine.state import InvalidTargetState, TargetState
from apps_api.errors import ActionFailed, BadRequest, InternalFailure, Locked, NotFound, PowerActionRefused
from apps_api.host_ops.host_config import HostUnitsNotRestarted
from apps_api.redis_store import BLINK_LOCK_KEY, new_reply_key, redis_client, wait_for_reply
from apps_api.snapshot import (
    APP_NOT_FOUND,
    V2_ENDPOINT_HINT,
    DeviceSnapshot,
    read_snapshot,
    single_container_app,
)
from apps_api.target.documents import parse_target
from apps_api.target.intake import accept_target
from apps_api.target.store import load_target
from apps_api.task_outcomes import TaskFailed, TaskNotDone, run_and_wait
from apps_api.tasks import app_action, blink, cloud_tick, host_config_change, power_action, service_action
from hostcfg import dbus
from hostcfg.host_config import HostConfigInvalid, parse_host_config_patch
from hostcfg.host_config import read_host_config as read
from hostcfg.host_info import vpn_connected
from hostcfg.identity import current_device_identity, load_device_identity, read_config_json
from hostcfg.tags import list_tags

logger = logging.getLogger(__name__)


def identify_device() -> bool:
    """Blink the LED for 15 s in the worker; a request while it blinks is ignored.

    Returns whether a blink was started. Called by: POST /v1/blink.
    """

    # The key outlives the blink by a little so a lost worker cannot block blinking forever.
    if not redis_client().set(BLINK_LOCK_KEY, "1", nx=True, ex=int(settings.SUPERVISOR_BLINK_SECONDS) + 5):
        logger.info("identify request ignored: already blinking")
        return False
    blink.delay(BLINK_LOCK_KEY)
    return True


def set_target_state(
    target: TargetState, *, force: bool = False, posted_apps: dict[str, Any] | None = None
) -> int:
    """Store a validated target and have it applied; returns the target's record id.
    Called by: manage.py apply_target, POST /v2/local/target-state."""
    return accept_target(target, force=force, posted_apps=posted_apps)


def next_plan(*, access: ApiAccess) -> dict[str, Any]:
    """What the engine would do next against the stored target, as /v2/plan answers it:
    only the key's apps for a scoped key. Called by: GET /v2/plan."""
    return plan_document(explain_stored_target().plan, app_ids=_scoped_apps(access))


def plan_target_document(document: object, *, access: ApiAccess, force: bool = False) -> dict[str, Any]:
    """What the engine would do first if the target `document` (either format; its `force`
    or `force` here override update locks) were stored now; stores and changes nothing.
    Raises BadRequest naming the invalid field, NotInScope when the target holds an app
    outside a scoped key's.
    Called by: POST /v2/plan, manage.py apply_target --dry-run."""
    loaded = load_target()
    try:
        target = parse_target(document, device_uuid=load_device_identity().uuid,
                              current_name=loaded[0].name if loaded else None)  # fmt: skip
    except InvalidTargetState as exc:
        raise BadRequest(f"Invalid target state.\n{exc}") from exc
    for app in target.apps:
        check_scope(access, app.app_id)
    force = force or (isinstance(document, dict) and document.get("force") is True)
    return plan_document(explain_posted_target(target, force=force).plan, app_ids=_scoped_apps(access))


def _scoped_apps(access: ApiAccess) -> frozenset[int] | None:
    return None if access.all_apps else access.app_ids


SERVICE_ACTION_TIMEOUT_SECONDS = 120
SERVICE_ACTIONS = ("restart", "stop", "start")


@dataclass(frozen=True)
class ServiceSelector:
    """Which service of an app a v2 service action means: by name, or by image id."""

    service_name: str | None = None
    image_id: int | None = None


def act_on_service(
    action: str, *, access: ApiAccess, app_id: int, selector: ServiceSelector, force: bool, route: str
) -> str:
    """Restart, stop or start one service of an app (v2 service endpoints); returns the
    container id. `route` ("POST /v2/…") is journaled as the cause, with the key's scope.
    Called by: POST /v2/applications/:appId/(restart|stop|start)-service."""
    check_scope(access, app_id)
    service_name, image_id = selector.service_name, selector.image_id
    if service_name is None and image_id is None:
        raise BadRequest(V2_ENDPOINT_HINT, text=True)
    snapshot = read_snapshot()
    containers = snapshot.containers_of(app_id)
    if not containers:
        raise NotFound(APP_NOT_FOUND, text=True)
    names = sorted({c.service_name for c in containers})
    if len(names) == 1:
        chosen = names[0]  # a single-service app: the selector's value does not matter
    else:
        matches = [c.service_name for c in containers if c.service_name == service_name or
                   (image_id is not None and c.image_id == image_id)]  # fmt: skip
        if not matches:
            raise NotFound("Service not found, a container must exist for this endpoint to work", text=True)
        chosen = matches[0]
    return _run_service_action(action, snapshot, app_id, chosen, force=force, cause=_api_cause(route, access))


def _api_cause(route: str, access: ApiAccess) -> Cause:
    return api_cause(route, all_apps=access.all_apps, app_ids=access.app_ids)


def act_on_single_container_app(
    action: str, *, access: ApiAccess, app_id: int, force: bool, route: str
) -> str:
    """Stop or start the one service of a single-container app; returns the container id.
    `route` as for act_on_service. Called by: POST /v1/apps/:appId/stop, POST /v1/apps/:appId/start."""
    check_scope(access, app_id, text=True)
    snapshot = read_snapshot()
    _, container = single_container_app(snapshot, app_id)
    # The v1 stop is temporary: the container starts again when the supervisor does
    # (docs/api.md "Stop and start").
    return _run_service_action(
        action, snapshot, app_id, container.service_name, force=force, temporary=action == "stop",
        cause=_api_cause(route, access),
    )  # fmt: skip


def _run_service_action(
    action: str,
    snapshot: DeviceSnapshot,
    app_id: int,
    service_name: str,
    *,
    force: bool,
    cause: Cause,
    temporary: bool = False,
) -> str:
    app = snapshot.target_app(app_id)
    if app is None or app.service(service_name) is None:
        raise NotFound("Service does not exist in target release", text=True)

    def send(reply_key: str) -> None:
        service_action.delay(
            action, app_id, service_name, force, temporary, cause.route, cause.scope, reply_key
        )

    try:
        return str(_wait_for_worker(send, SERVICE_ACTION_TIMEOUT_SECONDS, raises=(ServiceGone,)))
    except ServiceGone as exc:
        raise NotFound(str(exc), text=True) from exc
    finally:
        invalidate_current_state()


def _wait_for_worker(
    send: Callable[[str], None], timeout: float, *, raises: tuple[type[Exception], ...]
) -> Any:
    """The result of the task `send` queues; an update lock is UpdatesLocked (423), any
    other failure of the worker, or none in time, ActionFailed (503) with its message."""
    try:
        return run_and_wait(send, timeout=timeout, raises=(UpdatesLocked, *raises))
    except (TaskFailed, TaskNotDone) as exc:
        raise ActionFailed(str(exc)) from exc


def regenerate_api_key(*, access: ApiAccess) -> str:
    """Replace the key that authenticated this request. Called by: POST /v1/regenerate-api-key."""

    try:
        return regenerate(access.key)
    except UnknownApiKey as exc:
        raise ActionFailed(str(exc)) from exc


def trigger_update(*, force: bool, cancel: bool) -> bool:
    """Poll the cloud's target now (a managed device), or apply the stored target again (an
    unmanaged one); `cancel` aborts a running apply first. Returns whether an update was
    triggered (instant updates are on by default). Called by: POST /v1/update."""

    if cancel:
        cancel_running_apply()
    if not (force or instant_updates_enabled()):
        return False
    if current_device_identity().managed:
        request_poll_now(force=force)
        cloud_tick.delay()
        return True
    apply_status.set_flags(update_failed=False)
    schedule_apply(force=force)
    return True


# Locks are waited for up to 10 s per app (docs/locks.md "Locks around an action"): enough
# for a few apps.
POWER_ACTION_ACCEPT_SECONDS = 60


def power_off_device(kind: str, *, force: bool) -> None:
    """Reboot (`kind="reboot"`) or shut down the device: returns once the worker holds every
    app's update locks; it then stops the apps and asks logind. Raises PowerActionRefused.
    Called by: POST /v1/reboot, POST /v1/shutdown."""

    reply_key = new_reply_key()
    power_action.delay(kind, force, reply_key)
    reply = wait_for_reply(reply_key, timeout=POWER_ACTION_ACCEPT_SECONDS)
    if reply is None:
        raise PowerActionRefused(f"The {kind} was not confirmed in time", locked=False)
    if not reply.get("accepted"):
        raise PowerActionRefused(str(reply.get("error")), locked=bool(reply.get("locked")))


HOST_CONFIG_TIMEOUT_SECONDS = 120


def read_host_config() -> dict[str, Any]:
    """The hostname and proxy settings. Called by: GET /v1/device/host-config."""

    identity = current_device_identity()
    configured = read_config_json(Path(settings.SUPERVISOR_CONFIG_JSON)).get("hostname")
    return read(
        host_root=Path(settings.SUPERVISOR_HOST_ROOT),
        boot_root=Path(settings.SUPERVISOR_BOOT_ROOT),
        fallback_hostname=configured if isinstance(configured, str) and configured else identity.uuid[:7],
    )


def change_host_config(*, body: object) -> None:
    """Validate a host-config patch here (400 text), then apply it in the worker under every
    app's update locks (423 text) and restart the host units concerned (503 text on failure).
    Called by: PATCH /v1/device/host-config."""

    try:
        parse_host_config_patch(body)
    except HostConfigInvalid as exc:
        raise BadRequest(str(exc), text=True) from exc
    try:
        run_and_wait(
            lambda reply_key: host_config_change.delay(body, reply_key),
            timeout=HOST_CONFIG_TIMEOUT_SECONDS,
            raises=(UpdatesLocked, HostUnitsNotRestarted),
        )
    except UpdatesLocked as exc:
        raise Locked(str(exc), text=True) from exc
    except HostUnitsNotRestarted as exc:
        raise ActionFailed(str(exc), text=True) from exc
    except (TaskFailed, TaskNotDone) as exc:  # the endpoint answers every error in text
        logger.error("host config change failed: %s", exc)
        raise ActionFailed(str(exc), text=True) from exc


def vpn_status() -> dict[str, bool]:
    """Whether openvpn.service runs (systemd over D-Bus) and whether the tunnel is up (the
    flag file openvpn writes on the host). Called by: GET /v2/device/vpn."""

    try:
        enabled = dbus.unit_active_state("openvpn.service") == "active"
    except dbus.HostBusError as exc:
        raise ActionFailed(str(exc)) from exc
    return {"enabled": enabled, "connected": vpn_connected()}


def device_tags() -> list[dict[str, Any]]:
    """The device's tags: from the cloud when managed (500 when it cannot be reached), else
    those kept on the device. Called by: GET /v2/device/tags."""

    device = cloud_device()
    if device is None:
        return list_tags()
    try:
        return fetch_device_tags(device)
    except CloudError as exc:
        raise InternalFailure(str(exc)) from exc


APP_ACTION_TIMEOUT_SECONDS = 300


def act_on_app(action: str, *, access: ApiAccess, app_id: int, force: bool, route: str) -> None:
    """Restart (new containers) or purge (new containers, empty named volumes) an app;
    `route` as for act_on_service.
    Called by: POST /v1/restart, /v1/purge, /v2/applications/:appId/(restart|purge)."""

    check_scope(access, app_id)
    if not read_snapshot().containers_of(app_id):
        raise ActionFailed(f"Application with ID {app_id} is not in the current state")
    cause = _api_cause(route, access)

    def send(reply_key: str) -> None:
        app_action.delay(action, app_id, force, cause.route, cause.scope, reply_key)

    try:
        _wait_for_worker(send, APP_ACTION_TIMEOUT_SECONDS, raises=(AppNotRunning,))
    except AppNotRunning as exc:
        raise ActionFailed(str(exc)) from exc
    finally:
        invalidate_current_state()


def cleanup_volumes() -> list[str]:
    """Remove the supervisor's volumes that nothing uses: no container mounts them and no
    app of the target names them, whatever the caller's scope. Called by: GET /v2/cleanup-volumes."""

    loaded = load_target()
    apps = loaded[0].apps if loaded else ()
    keep = {volume_docker_name(app.app_id, volume.name) for app in apps for volume in app.volumes}
    removed = remove_unused_supervised_volumes(keep)
    if removed:
        logger.info("removed unused volumes: %s", ", ".join(removed))
    return removed
