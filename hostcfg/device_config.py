"""Device configuration variables (`SUPERVISOR_*`, `HOST_*`) and the boot config.txt.

Pure functions over the target's `config` mapping plus two file writers that take their
paths as parameters; no Django. Which boot keys a device applies is `hostcfg.boot_config`.
Canonical names are the unprefixed ones of docs/configuration.md "Device configuration variables":
`BALENA_`/`RESIN_` are stripped on the way in and never reported back.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hostcfg.atomic_file import write_file_atomically
from hostcfg.owned_dirs import touch_in_owned_directory

logger = logging.getLogger(__name__)


def is_truthy(value: object) -> bool:
    """Loose booleans of labels and config variables: "1", "true", "on", "yes"."""
    return str(value).strip().lower() in {"1", "true", "on", "yes"}


FirewallMode = Literal["on", "off", "auto"]

MIN_POLL_INTERVAL_MS = 10_000
"""The cloud enforces a minimum poll interval; a (local) target below this floor is
invalid like any other bad value (default + warning), not clamped to it."""

WARNING_TEMPLATE = "Warning: Ignoring invalid device configuration value for {key}, using default instead"
BOOT_WARNING_TEMPLATE = "Warning: Ignoring invalid device configuration value for {key}, not applied"

BOOT_CONFIG_PREFIX = "HOST_CONFIG_"
# The boot keys besides HOST_CONFIG_ (extlinux.conf, extra_uEnv.txt, ACPI tables, Jetson
# ODMDATA, the boot splash) are kept so they are never dropped silently, but this
# supervisor has no writer for them: they are refused with a log line.
_BOOT_KEY_PREFIXES = (BOOT_CONFIG_PREFIX, "HOST_EXTLINUX_", "HOST_CONFIGFS_", "HOST_ODMDATA_")
_BOOT_KEY_NAMES = frozenset({"HOST_SPLASH_IMAGE"})
# Stripped in this order of precedence: BALENA_ beats RESIN_ beats the bare name, so the
# cloud's current spelling wins over both the legacy one and a hand-written one.
_NAMESPACES = ("BALENA_", "RESIN_", "")
_LEGACY_NAMES = {"OVERRIDE_LOCK": "SUPERVISOR_OVERRIDE_LOCK"}

_FALSY = frozenset({"false", "0", "off", "no", ""})
_DECIMAL = re.compile(r"\d+", re.ASCII)
_CONFIG_TXT_KEY = re.compile(r"[A-Za-z0-9_.\-]+", re.ASCII)
_QUOTED_LIST = re.compile(r'\s*"[^"]*"(?:\s*,\s*"[^"]*")*\s*')

REBOOT_BREADCRUMB = Path("tmp/balena-supervisor/reboot-after-apply")

OS_SETTINGS = {"power_mode": ("power", "mode"), "fan_profile": ("fan", "profile")}
"""`HOST_CONFIG_<name>` entries that are not config.txt lines: the OS reads them from
config.json (`os.power.mode`, `os.fan.profile`; Jetson power and fan profiles)."""


@dataclass(frozen=True)
class DeviceConfig:
    """The target device configuration, typed and validated; see `device_config_from`."""

    poll_interval_ms: int
    instant_update_trigger: bool
    local_mode: bool
    connectivity_check: bool
    log_control: bool
    api_request_timeout_ms: int
    delta: bool
    delta_request_timeout_ms: int
    delta_apply_timeout_ms: int
    delta_retry_count: int
    delta_retry_interval_ms: int
    delta_version: int
    lock_override: bool
    persistent_logging: bool
    hardware_metrics: bool
    vpn_control: bool
    firewall_mode: FirewallMode
    discoverability: bool
    boot_config: dict[str, str] = field(default_factory=dict)
    """The `HOST_CONFIG_*` entries meant for config.txt, keyed without the prefix
    ({"gpu_mem": "16"}); whether they are written depends on the device (`boot_config`)."""
    os_settings: dict[str, str] = field(default_factory=dict)
    """`HOST_CONFIG_power_mode`/`fan_profile`, keyed without the prefix: config.json `os` values."""
    unsupported_boot_keys: tuple[str, ...] = ()
    """`HOST_EXTLINUX_*`, `HOST_CONFIGFS_*`, `HOST_ODMDATA_*`, `HOST_SPLASH_IMAGE` given (sorted)."""


# --- values ----------------------------------------------------------------------------


def parse_bool(value: str) -> bool | None:
    """Loose boolean: the truthy strings of `is_truthy`, or "false"/"0"/"off"/"no"/"";
    None for anything else."""
    if is_truthy(value):
        return True
    return False if value.strip().lower() in _FALSY else None


def _parse_count(value: str) -> int | None:
    text = value.strip()
    return int(text) if _DECIMAL.fullmatch(text) else None


def _parse_poll_interval(value: str) -> int | None:
    count = _parse_count(value)
    return count if count is not None and count >= MIN_POLL_INTERVAL_MS else None


def _parse_delta_version(value: str) -> int | None:
    count = _parse_count(value)
    return count if count in (2, 3) else None


def _parse_firewall_mode(value: str) -> str | None:
    mode = value.strip().lower()
    return mode if mode in ("on", "off", "auto") else None


@dataclass(frozen=True)
class _Setting:
    key: str
    attribute: str
    parse: Callable[[str], Any]
    default: str


_LOCAL_MODE = "SUPERVISOR_LOCAL_MODE"
_SETTINGS: tuple[_Setting, ...] = (
    _Setting("SUPERVISOR_POLL_INTERVAL", "poll_interval_ms", _parse_poll_interval, "900000"),
    _Setting("SUPERVISOR_INSTANT_UPDATE_TRIGGER", "instant_update_trigger", parse_bool, "true"),
    _Setting(_LOCAL_MODE, "local_mode", parse_bool, "false"),  # "true" when unmanaged
    _Setting("SUPERVISOR_CONNECTIVITY_CHECK", "connectivity_check", parse_bool, "true"),
    _Setting("SUPERVISOR_LOG_CONTROL", "log_control", parse_bool, "true"),
    _Setting("SUPERVISOR_API_REQUEST_TIMEOUT", "api_request_timeout_ms", _parse_count, "59000"),
    _Setting("SUPERVISOR_DELTA", "delta", parse_bool, "false"),
    _Setting("SUPERVISOR_DELTA_REQUEST_TIMEOUT", "delta_request_timeout_ms", _parse_count, "59000"),
    _Setting("SUPERVISOR_DELTA_APPLY_TIMEOUT", "delta_apply_timeout_ms", _parse_count, "0"),
    _Setting("SUPERVISOR_DELTA_RETRY_COUNT", "delta_retry_count", _parse_count, "30"),
    _Setting("SUPERVISOR_DELTA_RETRY_INTERVAL", "delta_retry_interval_ms", _parse_count, "10000"),
    _Setting("SUPERVISOR_DELTA_VERSION", "delta_version", _parse_delta_version, "2"),
    _Setting("SUPERVISOR_OVERRIDE_LOCK", "lock_override", parse_bool, "false"),
    _Setting("SUPERVISOR_PERSISTENT_LOGGING", "persistent_logging", parse_bool, "false"),
    _Setting("SUPERVISOR_HARDWARE_METRICS", "hardware_metrics", parse_bool, "true"),
    _Setting("SUPERVISOR_VPN_CONTROL", "vpn_control", parse_bool, "true"),
    _Setting("HOST_FIREWALL_MODE", "firewall_mode", _parse_firewall_mode, "off"),
    _Setting("HOST_DISCOVERABILITY", "discoverability", parse_bool, "true"),
)
KNOWN_KEYS = frozenset(setting.key for setting in _SETTINGS)


def _default(setting: _Setting, *, managed: bool) -> str:
    if setting.key == _LOCAL_MODE and not managed:
        return "true"
    return setting.default


def is_boot_config_key(key: str) -> bool:
    """Device-specific keys that end up in boot files (`HOST_CONFIG_gpu_mem`, …)."""
    return key in _BOOT_KEY_NAMES or any(
        key.startswith(prefix) and len(key) > len(prefix) for prefix in _BOOT_KEY_PREFIXES
    )


# --- the config mapping ----------------------------------------------------------------


def normalise_config(raw: Mapping[str, str]) -> dict[str, str]:
    """The target config under canonical names, known and boot-config keys only.

    One `BALENA_`/`RESIN_` prefix is stripped; when several spellings of one key are given,
    BALENA_ wins over RESIN_, which wins over the bare name. Legacy `OVERRIDE_LOCK` (any
    prefix) becomes `SUPERVISOR_OVERRIDE_LOCK` unless that is given under any spelling.
    Unknown keys are dropped (logged at debug level).
    """
    chosen: dict[str, tuple[int, str]] = {}
    dropped: list[str] = []
    for key, value in raw.items():
        rank, name = next((rank, key[len(ns) :]) for rank, ns in enumerate(_NAMESPACES) if key.startswith(ns))
        if name in _LEGACY_NAMES:
            rank, name = rank + len(_NAMESPACES), _LEGACY_NAMES[name]
        if name not in KNOWN_KEYS and not is_boot_config_key(name):
            dropped.append(key)
            continue
        if name not in chosen or rank < chosen[name][0]:
            chosen[name] = (rank, value)
    if dropped:
        logger.debug("unknown device configuration variables ignored: %s", ", ".join(sorted(dropped)))
    return {name: value for name, (_, value) in chosen.items()}


def device_config_from(raw: Mapping[str, str], *, managed: bool) -> tuple[DeviceConfig, list[str]]:
    """The typed configuration of a target config, and one warning per value ignored.

    A missing key takes its default (docs/configuration.md "Device configuration variables";
    SUPERVISOR_LOCAL_MODE defaults to true on an unmanaged device). An invalid value takes
    the default too, and yields `Warning: Ignoring invalid device configuration value for
    <KEY>, using default instead`. A `HOST_CONFIG_*` entry that cannot be a config.txt line (odd characters in
    the name, a line break in the value) is left out with a warning.
    """
    config = normalise_config(raw)
    warnings: list[str] = []
    values: dict[str, Any] = {}
    for setting in _SETTINGS:
        default = _default(setting, managed=managed)
        parsed = setting.parse(config[setting.key]) if setting.key in config else None
        if parsed is None:
            if setting.key in config:
                warnings.append(WARNING_TEMPLATE.format(key=setting.key))
            parsed = setting.parse(default)
        values[setting.attribute] = parsed
    boot_config: dict[str, str] = {}
    os_settings: dict[str, str] = {}
    for key, value in config.items():
        if not key.startswith(BOOT_CONFIG_PREFIX):
            continue
        name = key[len(BOOT_CONFIG_PREFIX) :]
        if name in OS_SETTINGS:
            os_settings[name] = value
        elif _fits_config_txt(name, value):
            boot_config[name] = value
        else:
            warnings.append(BOOT_WARNING_TEMPLATE.format(key=key))
    unsupported = tuple(
        sorted(key for key in config if is_boot_config_key(key) and not key.startswith(BOOT_CONFIG_PREFIX))
    )
    return (
        DeviceConfig(
            **values, boot_config=boot_config, os_settings=os_settings, unsupported_boot_keys=unsupported
        ),
        warnings,
    )


def filled_target_config(raw: Mapping[str, str], *, managed: bool) -> dict[str, str]:
    """The stored target config as `GET /v2/local/target-state` reports it: canonical
    (unprefixed) names, every known key present (missing ones at their default, so
    SUPERVISOR_VPN_CONTROL is 'true' when absent), given values verbatim even if invalid,
    then the boot-config keys under their own names."""
    config = normalise_config(raw)
    filled = {
        setting.key: config.get(setting.key, _default(setting, managed=managed)) for setting in _SETTINGS
    }
    filled.update((key, value) for key, value in config.items() if key not in filled)
    return filled


def initial_config_variables(current: Mapping[str, str], target: Mapping[str, str]) -> dict[str, str]:
    """The config variables a newly provisioned device creates in the cloud
    (docs/cloud.md "Provisioning", step 4), named `RESIN_<KEY>`: its current values that
    differ from the managed default and that the cloud's target does not set. Local mode
    is never carried into the cloud and the VPN never turned off from here: those two
    count as their defaults whatever they are."""
    defaults = {setting.key: setting.default for setting in _SETTINGS}
    forced = {_LOCAL_MODE: "false", "SUPERVISOR_VPN_CONTROL": "true"}
    targeted = normalise_config(target)
    return {
        f"RESIN_{key}": value
        for key, value in ((key, forced.get(key, value)) for key, value in normalise_config(current).items())
        if key not in targeted and value != defaults.get(key)
    }


# --- config.txt ------------------------------------------------------------------------


class BootConfigError(ValueError):
    """An entry cannot be written as a config.txt line, or config.txt cannot be read as text."""


def config_txt_values(value: str) -> list[str]:
    """The config.txt values of one entry: a quoted list `"2=op","3=op"` is one line per
    item (for repeatable keys such as dtoverlay, dtparam, gpio); anything else is one
    line, taken verbatim apart from surrounding blanks (`dtoverlay=vc4-kms-v3d,cma-256`)."""
    if _QUOTED_LIST.fullmatch(value):
        return re.findall(r'"([^"]*)"', value)
    return [value.strip()]


def _line_key(line: str) -> str | None:
    text = line.strip()
    if not text or text.startswith("#") or "=" not in text:
        return None
    return text.split("=", 1)[0].strip()


def _fits_config_txt(key: str, value: str) -> bool:
    return bool(_CONFIG_TXT_KEY.fullmatch(key)) and not any(c in value for c in "\r\n\0")


def _render(key: str, value: str) -> list[str]:
    if not _fits_config_txt(key, value):
        raise BootConfigError(f"config.txt entry {key!r}={value!r} cannot be written as one line")
    return [f"{key}={item}\n" for item in config_txt_values(value)]


def write_boot_config(boot_root: Path, entries: Mapping[str, str], *, previous: Iterable[str] = ()) -> bool:
    """Make `<boot_root>/config.txt` carry `entries` (keys without `HOST_CONFIG_`); True if
    the file changed.

    The supervisor manages the keys of `entries` and of `previous` (the keys it applied
    last time, which the caller keeps): every unconditional line of a managed key is
    replaced by the entry's lines, at the place of its first occurrence, or dropped when
    the key is no longer in `entries`; new keys are appended (after an `[all]` line if the
    file ends inside a conditional `[filter]` section). Every other line, including lines
    under conditional sections and repeated dtoverlay/dtparam lines of unmanaged keys,
    is kept byte for byte and in order. An unchanged file is not rewritten; a changed one
    is replaced atomically with its permissions kept. A file that is not UTF-8 text is
    never rewritten (BootConfigError), nor is one when an entry cannot be a single line.
    """
    managed = set(entries) | set(previous)
    rendered = {key: _render(key, value) for key, value in entries.items()}
    path = boot_root / "config.txt"
    try:
        stat = path.stat()
        old = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        if not entries:
            return False
        old, mode = "", 0o644
    except UnicodeDecodeError as exc:
        raise BootConfigError(f"{path}: not UTF-8 text ({exc}); not rewritten") from exc
    else:
        mode = stat.st_mode & 0o7777
    lines: list[str] = []
    placed: set[str] = set()
    unconditional = True
    for line in old.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("["):
            unconditional = stripped.lower().startswith("[all]")
        elif unconditional and (key := _line_key(line)) in managed:
            if key in rendered and key not in placed:
                lines.extend(rendered[key])
                placed.add(key)
            continue
        lines.append(line)
    missing = sorted(set(rendered) - placed)
    if missing:
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += "\n"
        if not unconditional:
            lines.append("[all]\n")
        lines.extend(line for key in missing for line in rendered[key])
    new = "".join(lines)
    if new == old:
        return False
    write_file_atomically(path, new, mode=mode)
    return True


# --- reboot breadcrumb -----------------------------------------------------------------


def set_reboot_breadcrumb(host_root: Path) -> None:
    """Ask for a reboot once the state settles: touch `<host_root>/tmp/balena-supervisor/
    reboot-after-apply` (/tmp is tmpfs on the device, so the reboot clears it)."""
    directory, name = REBOOT_BREADCRUMB.parent, REBOOT_BREADCRUMB.name
    touch_in_owned_directory(host_root / directory.parts[0], directory.parts[1:], name)


def reboot_breadcrumb_pending(host_root: Path, *, boot_time: float) -> bool:
    """True if the breadcrumb was touched after `boot_time` (epoch seconds), i.e. during
    this boot; a breadcrumb older than the boot has already been honoured."""
    try:
        return (host_root / REBOOT_BREADCRUMB).stat().st_mtime > boot_time
    except FileNotFoundError:
        return False
