"""Device configuration, applied before any app step (docs/host.md "Device configuration on the host").

What a target's `config` changes on the host: `HOST_CONFIG_*` lines in the boot
partition's config.txt on Raspberry Pi device types (effective after a reboot, asked for
with the reboot breadcrumb), `HOST_CONFIG_power_mode`/`fan_profile` in config.json's
`os` object, openvpn.service started or stopped with SUPERVISOR_VPN_CONTROL, avahi
stopped and masked (or unmasked and started) with HOST_DISCOVERABILITY, the firewall of
HOST_FIREWALL_MODE (`host_ops.firewall`), and config.json `persistentLogging` (the host
journal kept across boots) with the reboot that a persistent-logging change needs. Boot
keys this device cannot apply are refused with a system log line naming them. The rest
of the settings are read where they are used (`device_config`). What was applied last is
kept in the data dir, so each change is made and announced once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from django.conf import settings

from apps_api.engine.locks import UpdatesLocked
from apps_api.engine.state import ServiceSpec, TargetState
from apps_api.host_ops.firewall import follow_firewall_mode
from apps_api.host_ops.local_mode import enter_local_mode, leave_local_mode
from apps_api.host_ops.power import run_power_action
from apps_api.logs.publisher import system_log
from hostcfg import dbus
from hostcfg.atomic_file import write_file_atomically
from hostcfg.boot_config import BootConfigPlan, merge_os_settings, plan_boot_config
from hostcfg.device_config import (
    BOOT_CONFIG_PREFIX,
    REBOOT_BREADCRUMB,
    BootConfigError,
    DeviceConfig,
    device_config_from,
    normalise_config,
    reboot_breadcrumb_pending,
    set_reboot_breadcrumb,
    write_boot_config,
)
from hostcfg.device_type import read_device_type
from hostcfg.identity import DeviceConfigError, current_device_identity, update_config_json

logger = logging.getLogger(__name__)

APPLIED_CONFIG_FILE = "applied-device-config.json"
VPN_UNIT = "openvpn.service"
# The socket first: stopped while the service stops, it would start the service again.
AVAHI_UNITS = ["avahi-daemon.socket", "avahi-daemon.service"]
# Deltas are made for balenaEngine's delta images and rsync layers; a plain Docker engine
# cannot apply them, so every image is pulled whole instead.
DELTA_PREFIX = "SUPERVISOR_DELTA"
DELTAS_UNSUPPORTED = (
    "Delta updates are not supported on this engine (they need balenaEngine): images are pulled whole"
)


def apply_device_config(target: TargetState) -> bool:
    """Make the host follow the target's config, once per change; returns whether anything
    was applied. Failures are logged as system messages and never stop the app steps."""

    wanted = normalise_config(target.config)
    applied = _read_applied()
    managed = current_device_identity().managed
    config, warnings = device_config_from(wanted, managed=managed)
    record = dict(applied)
    if wanted != applied.get("config", {}):
        record.update(_apply_config_change(wanted, config, warnings, applied=applied, managed=managed))
    record["firewall"] = follow_firewall_mode(target, config, applied.get("firewall"), managed=managed)
    if record == applied:
        return False
    _write_applied(record)
    return True


def _apply_config_change(
    wanted: dict[str, str],
    config: DeviceConfig,
    warnings: list[str],
    *,
    applied: dict[str, Any],
    managed: bool,
) -> dict[str, Any]:
    """Apply what changed since `applied` (the record of last time); returns the new
    record's config part."""
    previous = applied.get("config", {})
    before, _ = device_config_from(previous, managed=managed)
    device_type, _arch = read_device_type(Path(settings.SUPERVISOR_BOOT_ROOT))
    plan = plan_boot_config(config, device_type=device_type)
    changed = {key: wanted.get(key, "") for key in sorted(set(wanted) | set(previous))
               if wanted.get(key) != previous.get(key)}  # fmt: skip
    unapplied_now = _unapplied_keys(wanted, config, plan)
    unapplied_before = _unapplied_keys(previous, before, plan_boot_config(before, device_type=device_type))
    applying = {key: value for key, value in changed.items()
                if key not in (unapplied_now if key in wanted else unapplied_before)}  # fmt: skip
    said = json.dumps(applying, separators=(",", ":"))  # as the original's JSON.stringify
    if applying:
        system_log(f"Applying configuration change {said}")
    for warning in warnings:
        system_log(warning, is_stderr=True)
    for refusal in plan.refusals:
        keys = [key for key in refusal.keys if key in changed]
        if keys:
            system_log(refusal.message(keys), is_stderr=True)
    reboot_needed = config.persistent_logging != before.persistent_logging and "config" in applied
    try:
        boot_keys = applied.get("boot_keys", [])
        if write_boot_config(Path(settings.SUPERVISOR_BOOT_ROOT), plan.config_txt, previous=boot_keys):
            reboot_needed = True
    except (BootConfigError, OSError) as exc:
        system_log(f"Could not write the boot configuration due to '{exc}'", is_stderr=True)
    if config.delta and not before.delta:
        system_log(DELTAS_UNSUPPORTED)
    _write_os_settings(config.os_settings, previous=applied.get("os_keys", []))
    if config.persistent_logging != before.persistent_logging:
        _write_persistent_logging(config.persistent_logging)
    if config.vpn_control != before.vpn_control:
        _switch_vpn(on=config.vpn_control)
    if config.discoverability != before.discoverability:
        _switch_discoverability(on=config.discoverability)
    # An unmanaged device is always in local mode; a managed one follows its config.
    if managed and "config" in applied and config.local_mode != before.local_mode:
        if config.local_mode:
            enter_local_mode()
        else:
            leave_local_mode()
    if applying:
        system_log(f"Applied configuration change {said}")
    if reboot_needed:
        set_reboot_breadcrumb(Path(settings.SUPERVISOR_HOST_ROOT))
        system_log("Configuration change needs a reboot: rebooting once the apps are applied")
    return {"config": wanted, "boot_keys": sorted(plan.config_txt), "os_keys": sorted(config.os_settings)}


def _unapplied_keys(config: Mapping[str, str], typed: DeviceConfig, plan: BootConfigPlan) -> set[str]:
    """The keys of `config` that are not applied: refused boot keys, `HOST_CONFIG_*`
    entries left out as invalid (those have their own warning), and the delta settings
    (this engine pulls whole images; DELTAS_UNSUPPORTED says so)."""
    kept = {BOOT_CONFIG_PREFIX + name for name in [*plan.config_txt, *typed.os_settings]}
    invalid = {key for key in config if key.startswith(BOOT_CONFIG_PREFIX) and key not in kept}
    deltas = {key for key in config if key.startswith(DELTA_PREFIX)}
    return invalid | deltas | {key for refusal in plan.refusals for key in refusal.keys}


def _write_os_settings(values: dict[str, str], *, previous: list[str]) -> None:
    """config.json `os.power.mode`/`os.fan.profile` (read by the OS; no reboot asked for)."""
    if not values and not previous:
        return
    try:
        update_config_json(
            Path(settings.SUPERVISOR_CONFIG_JSON),
            lambda data: merge_os_settings(data, values, previous=previous),
        )
    except (DeviceConfigError, OSError) as exc:
        system_log(
            f"Could not write the power and fan settings to config.json due to '{exc}'", is_stderr=True
        )


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


def _write_persistent_logging(on: bool) -> None:
    """config.json `persistentLogging`: balenaOS keeps the host journal on disk from the next boot."""

    def change(data: dict[str, Any]) -> None:
        data["persistentLogging"] = on

    try:
        update_config_json(Path(settings.SUPERVISOR_CONFIG_JSON), change)
    except (DeviceConfigError, OSError) as exc:
        system_log(f"Could not write persistentLogging to config.json due to '{exc}'", is_stderr=True)


def _switch_vpn(*, on: bool) -> None:
    try:
        if on:
            dbus.start_unit(VPN_UNIT)
        else:
            dbus.stop_unit(VPN_UNIT)
    except dbus.HostBusError as exc:
        system_log(f"Could not {'start' if on else 'stop'} the VPN due to '{exc}'", is_stderr=True)


def _switch_discoverability(*, on: bool) -> None:
    """avahi (mDNS: `<hostname>.local`) unmasked and started, or stopped and masked, so that
    neither socket activation nor a reboot brings it back."""
    try:
        if on:
            dbus.unmask_unit_files(AVAHI_UNITS)
            dbus.reload_systemd()
            for unit in AVAHI_UNITS:
                dbus.start_unit(unit)
        else:
            for unit in AVAHI_UNITS:
                dbus.stop_unit(unit)
            dbus.mask_unit_files(AVAHI_UNITS)
            dbus.reload_systemd()
    except dbus.HostBusError as exc:
        action = "make the host discoverable" if on else "make the host undiscoverable"
        system_log(f"Could not {action} due to '{exc}'", is_stderr=True)


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
