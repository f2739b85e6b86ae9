"""Which boot keys of the device configuration this device applies, where, and which it
refuses and why: config.txt only on Raspberry Pi device types and never with the keys that
choose what boots; power and fan profiles in config.json; other device families' boot
files not supported. Pure functions; no Django.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hostcfg.device_config import BOOT_CONFIG_PREFIX, OS_SETTINGS, DeviceConfig

RASPBERRY_PI_PREFIXES = ("raspberry", "rpi", "revpi-")
RASPBERRY_PI_DEVICE_TYPES = frozenset({"fincm3", "npe-x500-m3", "rt-rpi-300", "243390-rpi3", "nebra-hnt"})
"""Device type slugs that boot from a Raspberry Pi config.txt: every `raspberry*`/`rpi*`
slug, the Revolution Pi boards (`revpi-*`), and these Pi-based boards (balena's list)."""

FORBIDDEN_CONFIG_TXT_KEYS = frozenset(
    {
        "disable_commandline_tags",
        "cmdline",
        "kernel",
        "kernel_address",
        "kernel_old",
        "ramfsfile",
        "ramfsaddr",
        "initramfs",
        "device_tree_address",
        "init_emmc_clock",
        "avoid_safe_mode",
    }
)
"""config.txt keys that choose what boots (kernel, initramfs, command line, load
addresses): balenaOS sets them itself and a wrong value leaves the device unbootable, so
they are never written (balena's forbidden list)."""


@dataclass(frozen=True)
class Refusal:
    """Configuration variables this device does not apply, and why (one system log line)."""

    keys: tuple[str, ...]
    reason: str

    def message(self, keys: Iterable[str] | None = None) -> str:
        """`Not applying <keys>: <reason>`, naming `keys` (default: all of them)."""
        return f"Not applying {', '.join(self.keys if keys is None else keys)}: {self.reason}"


@dataclass(frozen=True)
class BootConfigPlan:
    config_txt: dict[str, str]
    """The entries to write into config.txt (keys without `HOST_CONFIG_`)."""
    refusals: tuple[Refusal, ...]


def is_raspberry_pi(device_type: str) -> bool:
    """Whether the device type boots from a Raspberry Pi config.txt (see RASPBERRY_PI_DEVICE_TYPES)."""
    return device_type.startswith(RASPBERRY_PI_PREFIXES) or device_type in RASPBERRY_PI_DEVICE_TYPES


def plan_boot_config(config: DeviceConfig, *, device_type: str) -> BootConfigPlan:
    """Which boot entries this device writes, and the ones it refuses.

    config.txt is written only on Raspberry Pi device types, and never with a key of
    FORBIDDEN_CONFIG_TXT_KEYS; the boot keys of other device families are not supported.
    (`os_settings` go to config.json on any device type and are not part of this plan.)
    """
    refusals: list[Refusal] = []
    entries = dict(config.boot_config)
    if entries and not is_raspberry_pi(device_type):
        keys = tuple(BOOT_CONFIG_PREFIX + name for name in sorted(entries))
        reason = f"config.txt is only written on Raspberry Pi device types, and this device is {device_type}"
        refusals.append(Refusal(keys, reason))
        entries = {}
    forbidden = sorted(set(entries) & FORBIDDEN_CONFIG_TXT_KEYS)
    if forbidden:
        keys = tuple(BOOT_CONFIG_PREFIX + name for name in forbidden)
        refusals.append(
            Refusal(keys, "these config.txt keys choose what boots and could make the device unbootable")
        )
        entries = {name: value for name, value in entries.items() if name not in FORBIDDEN_CONFIG_TXT_KEYS}
    if config.unsupported_boot_keys:
        refusals.append(Refusal(config.unsupported_boot_keys, "not supported on this device"))
    return BootConfigPlan(config_txt=entries, refusals=tuple(refusals))


def merge_os_settings(
    config_json: dict[str, Any], settings: Mapping[str, str], *, previous: Iterable[str] = ()
) -> None:
    """Put `settings` (OS_SETTINGS names: {"power_mode": "low"}) into a config.json object
    as `os.power.mode`/`os.fan.profile`, in place, keeping every other key of `os`; the
    names of `previous` (applied last time) that `settings` no longer has are removed,
    with the objects they leave empty. Values the supervisor never set are not touched.
    """
    names = sorted((set(settings) | set(previous)) & set(OS_SETTINGS))
    if not names:
        return
    os_object = config_json.get("os")
    os_object = dict(os_object) if isinstance(os_object, dict) else {}
    for name in names:
        section, field_name = OS_SETTINGS[name]
        part = os_object.get(section)
        part = dict(part) if isinstance(part, dict) else {}
        if name in settings:
            part[field_name] = settings[name]
        else:
            part.pop(field_name, None)
        if part:
            os_object[section] = part
        else:
            os_object.pop(section, None)
    if os_object:
        config_json["os"] = os_object
    else:
        config_json.pop("os", None)
