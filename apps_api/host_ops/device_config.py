"""Device configuration, applied before any app step (spec: target-state.md).

What a target's `config` changes on the host: `HOST_CONFIG_*` lines in the boot
partition's config.txt (effective after a reboot, asked for with the reboot breadcrumb),
openvpn.service started or stopped with SUPERVISOR_VPN_CONTROL, and the reboot that a
persistent-logging change needs. The rest of the settings are read where they are used
(`device_config`). What was applied last is kept in the data dir, so each change is made
and announced once.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from django.conf import settings

from apps_api.engine.locks import UpdatesLocked
from apps_api.engine.state import ServiceSpec, TargetState
from apps_api.host_ops.local_mode import enter_local_mode, leave_local_mode
from apps_api.host_ops.power import run_power_action
from apps_api.logs.publisher import system_log
from hostcfg import dbus
from hostcfg.atomic_file import write_file_atomically
from hostcfg.device_config import (
    REBOOT_BREADCRUMB,
    BootConfigError,
    device_config_from,
    normalise_config,
    reboot_breadcrumb_pending,
    set_reboot_breadcrumb,
    write_boot_config,
)
from hostcfg.identity import current_device_identity

logger = logging.getLogger(__name__)

APPLIED_CONFIG_FILE = "applied-device-config.json"
VPN_UNIT = "openvpn.service"
# Deltas are made for balenaEngine's delta images and rsync layers; a plain Docker engine
# cannot apply them, so every image is pulled whole instead.
DELTAS_UNSUPPORTED = (
    "Delta updates are not supported on this engine (they need balenaEngine): images are pulled whole"
)


def apply_device_config(target: TargetState) -> bool:
    """Make the host follow the target's config, once per change; returns whether anything
    was applied. Failures are logged as system messages and never stop the app steps."""

    wanted = normalise_config(target.config)
    applied = _read_applied()
    previous = applied.get("config", {})
    if wanted == previous:
        return False
    changed = {key: wanted.get(key, "") for key in sorted(set(wanted) | set(previous))
               if wanted.get(key) != previous.get(key)}  # fmt: skip
    system_log(f"Applying configuration change {json.dumps(changed)}")
    config, warnings = device_config_from(wanted, managed=current_device_identity().managed)
    before, _ = device_config_from(previous, managed=current_device_identity().managed)
    for warning in warnings:
        system_log(warning, is_stderr=True)
    reboot_needed = config.persistent_logging != before.persistent_logging and "config" in applied
    try:
        boot_keys = applied.get("boot_keys", [])
        if write_boot_config(Path(settings.SUPERVISOR_BOOT_ROOT), config.boot_config, previous=boot_keys):
            reboot_needed = True
    except (BootConfigError, OSError) as exc:
        system_log(f"Could not write the boot configuration due to '{exc}'", is_stderr=True)
    if config.delta and not before.delta:
        system_log(DELTAS_UNSUPPORTED)
    if config.vpn_control != before.vpn_control:
        _switch_vpn(on=config.vpn_control)
    # An unmanaged device is always in local mode; a managed one follows its config.
    if current_device_identity().managed and "config" in applied and config.local_mode != before.local_mode:
        if config.local_mode:
            enter_local_mode()
        else:
            leave_local_mode()
    if reboot_needed:
        set_reboot_breadcrumb(Path(settings.SUPERVISOR_HOST_ROOT))
        system_log("Configuration change needs a reboot: rebooting once the apps are applied")
    _write_applied({"config": wanted, "boot_keys": sorted(config.boot_config)})
    return True


def reboot_pending() -> bool:
    """Whether a reboot was asked for during this boot and has not happened yet."""
    import psutil  # lazy: only when a reboot breadcrumb is checked

    return reboot_breadcrumb_pending(Path(settings.SUPERVISOR_HOST_ROOT), boot_time=psutil.boot_time())


def ask_reboot_for_service(service: ServiceSpec) -> None:
    """`service` (labelled io.balena.update.requires-reboot) is installed: the device
    reboots once the apply settles, through the same locked path, and it starts after."""
    set_reboot_breadcrumb(Path(settings.SUPERVISOR_HOST_ROOT))
    system_log(f"Service '{service.service_name}' requires a reboot: rebooting once the apps are applied")


def reboot_if_requested() -> None:
    """Reboot when a configuration change asked for it during this boot (the reboot
    breadcrumb), with the app locks honoured like POST /v1/reboot; a lock postpones it to
    the next settled apply."""
    host_root = Path(settings.SUPERVISOR_HOST_ROOT)
    if not reboot_pending():
        return
    try:
        run_power_action("reboot", force=False, accepted=lambda: None)
    except (UpdatesLocked, dbus.HostBusError) as exc:
        system_log(f"Reboot for a configuration change postponed due to '{exc}'", is_stderr=True)
        return
    # On a real device the reboot has begun (and /tmp goes with it); where logind only
    # records the call, this keeps the device from asking again after every apply.
    (host_root / REBOOT_BREADCRUMB).unlink(missing_ok=True)


def _switch_vpn(*, on: bool) -> None:
    try:
        if on:
            dbus.start_unit(VPN_UNIT)
        else:
            dbus.stop_unit(VPN_UNIT)
    except dbus.HostBusError as exc:
        system_log(f"Could not {'start' if on else 'stop'} the VPN due to '{exc}'", is_stderr=True)


def applied_device_config() -> dict[str, str]:
    """The config (canonical names) last applied to the host; empty before any."""
    config = _read_applied().get("config")
    return {str(k): str(v) for k, v in config.items()} if isinstance(config, dict) else {}


def _applied_path() -> Path:
    return Path(settings.SUPERVISOR_DATA_DIR) / APPLIED_CONFIG_FILE


def _read_applied() -> dict[str, Any]:
    try:
        applied = json.loads(_applied_path().read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        logger.warning("ignoring unreadable %s", _applied_path())
        return {}
    return applied if isinstance(applied, dict) else {}


def _write_applied(applied: dict[str, Any]) -> None:
    write_file_atomically(_applied_path(), json.dumps(applied, sort_keys=True))
