"""Reboot and shutdown, as the worker runs them (docs/host.md "Reboot and shutdown";
docs/locks.md "Host OS update guard").

The host goes down only with every app's update locks held and after the app containers
have stopped with their own stop signal and grace period; they start again when the
worker does (engine/temporary_stops.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from django.conf import settings

from apps_api.device_settings import lock_override
from apps_api.engine import docker as engine
from apps_api.engine.current import read_current_state
from apps_api.engine.locks import UpdatesLocked, update_locks
from apps_api.engine.temporary_stops import remember_temporary_stops, start_temporarily_stopped
from apps_api.logs.publisher import system_log
from apps_api.service_changes import record_lock_overrides
from apps_api.target.store import load_target
from hostcfg import dbus

logger = logging.getLogger(__name__)

PowerAction = Literal["reboot", "shutdown"]
# Host OS update in progress: rebooting now could roll the update back
# (docs/locks.md "Host OS update guard").
HUP_BREADCRUMBS = (
    Path("mnt/state/rollback-health-breadcrumb"),
    Path("mnt/state/rollback-altboot-breadcrumb"),
)
# Lets the 202 reach the client before its own container is stopped.
ANSWER_DELAY_SECONDS = 1.0
ANNOUNCEMENTS = {"reboot": "Rebooting", "shutdown": "Shutting down"}
FAILURES = {"reboot": "Reboot failed", "shutdown": "Shutdown failed"}


def host_update_in_progress(host_root: Path) -> bool:
    return any((host_root / breadcrumb).exists() for breadcrumb in HUP_BREADCRUMBS)


def run_power_action(kind: PowerAction, *, force: bool, accepted: Callable[[], None]) -> None:
    """Check the HUP guard, take every app's locks, check logind, call `accepted`, then
    stop the app containers and ask logind to reboot or power off.

    Raises UpdatesLocked (before `accepted`) when an app or a host update holds the device,
    HostBusError when logind cannot be reached (before `accepted`) or refuses (after).
    """

    host_root = Path(settings.SUPERVISOR_HOST_ROOT)
    loaded = load_target()
    forced = force or lock_override(loaded[0] if loaded else None)
    if not forced and host_update_in_progress(host_root):
        raise UpdatesLocked("Waiting for Host OS update to finish")
    current = read_current_state()
    # The locks first: a held lock answers 423 whether or not the host bus answers.
    with update_locks().locked(
        host_root, sorted({s.app_id for s in current.services}), force=forced
    ) as overridden:
        record_lock_overrides(overridden)
        if not dbus.logind_available():
            raise dbus.HostBusError("logind (org.freedesktop.login1) is not on the system bus")
        accepted()
        system_log(ANNOUNCEMENTS[kind])
        time.sleep(ANSWER_DELAY_SECONDS)
        # What runs now, not when the locks were asked for: a container made or restarted
        # meanwhile would otherwise run on into the reboot.
        services = read_current_state().services
        running = [s.container_id for s in services if s.status in ("running", "restarting")]
        stopped = _stop_containers(running)
        try:
            if kind == "reboot":
                dbus.reboot()
            else:
                dbus.power_off()
        except dbus.HostBusError as exc:
            system_log(f"{FAILURES[kind]} due to '{exc}'", is_stderr=True)
            start_temporarily_stopped()
            raise
        logger.info("%s requested from logind after stopping %d container(s)", kind, len(stopped))


def _stop_containers(container_ids: list[str]) -> list[str]:
    """Stop them all at once, each with its own stop signal and grace period."""
    remember_temporary_stops(container_ids)
    if container_ids:
        with ThreadPoolExecutor(max_workers=min(16, len(container_ids))) as pool:
            list(pool.map(engine.stop_container, container_ids))
    return container_ids
