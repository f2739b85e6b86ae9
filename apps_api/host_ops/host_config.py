"""PATCH /v1/device/host-config as the worker runs it: with every app's update locks held
(the OS restarts the engine when the hostname or proxy changes), write the files, then
restart the host units that pick the change up (docs/host.md "Hostname and proxy")."""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings

from apps_api.device_settings import lock_override
from apps_api.engine.current import read_current_state
from apps_api.engine.locks import update_locks
from apps_api.service_changes import record_lock_overrides
from apps_api.target.store import load_target
from hostcfg import dbus
from hostcfg.host_config import HostConfigChange, HostConfigPatch, write_host_config
from hostcfg.identity import current_device_identity

logger = logging.getLogger(__name__)

# (unit names, newest first; the target that restarts them by itself when config changes)
HOSTNAME_UNITS = (("balena-hostname.service", "resin-hostname.service"), "config-json.target")
PROXY_UNITS = (
    (("balena-proxy-config.service", "resin-proxy-config.service"), "redsocks-conf.target"),
    (("redsocks.service",), "redsocks-conf.target"),
)


class HostUnitsNotRestarted(Exception):
    """The files were written, but a unit that applies them could not be restarted."""


def change_host_config(patch: HostConfigPatch) -> HostConfigChange:
    """Write the validated patch under every app's update locks, then restart the units
    concerned. Raises UpdatesLocked (nothing written) or HostUnitsNotRestarted."""

    host_root = Path(settings.SUPERVISOR_HOST_ROOT)
    loaded = load_target()
    forced = patch.force or lock_override(loaded[0] if loaded else None)
    app_ids = sorted({service.app_id for service in read_current_state().services})
    with update_locks().locked(host_root, app_ids, force=forced) as overridden:
        record_lock_overrides(overridden)
        change = write_host_config(
            patch,
            host_root=host_root,
            boot_root=Path(settings.SUPERVISOR_BOOT_ROOT),
            config_json=Path(settings.SUPERVISOR_CONFIG_JSON),
            uuid=current_device_identity().uuid,
        )
    units = ([HOSTNAME_UNITS] if change.hostname_changed else []) + (
        list(PROXY_UNITS) if change.proxy_changed else []
    )
    try:
        for names, restarted_by in units:
            _restart_unit(names, restarted_by)
    except dbus.HostBusError as exc:
        raise HostUnitsNotRestarted(
            f"Host config saved, but its units could not be restarted: {exc}"
        ) from exc
    return change


def _restart_unit(names: tuple[str, ...], restarted_by: str) -> None:
    """Restart the first of `names` the host has, unless it is PartOf `restarted_by`."""
    for name in names:
        if restarted_by in dbus.unit_part_of(name):
            logger.info("%s follows %s: not restarting it", name, restarted_by)
            return
        try:
            dbus.restart_unit(name)
            return
        except dbus.HostBusError as exc:
            if exc.name != dbus.NO_SUCH_UNIT:
                raise
    logger.warning("none of %s exists on this host: nothing restarted", ", ".join(names))
