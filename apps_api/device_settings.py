"""The device settings of the target in force: the one place that reads them.

Each setting is parsed from a target's `config` by `hostcfg.device_config` (every prefix and
legacy name, invalid values as defaults); the functions here pick the target (the stored
one, unless given) and the fact asked for.
"""

from __future__ import annotations

import logging

from apps_api.engine.state import TargetState
from apps_api.target.store import load_target
from hostcfg.device_config import DeviceConfig, device_config_from
from hostcfg.identity import current_device_identity

logger = logging.getLogger(__name__)


def device_config(target: TargetState | None) -> DeviceConfig:
    """The typed settings of a target (defaults without one); invalid values are defaults."""
    raw = target.config if target is not None else {}
    return device_config_from(raw, managed=current_device_identity().managed)[0]


def stored_device_config() -> DeviceConfig:
    """The typed settings of the stored target (defaults before any target)."""
    loaded = load_target()
    return device_config(loaded[0] if loaded else None)


def poll_interval_seconds(target: TargetState | None = None) -> float:
    """SUPERVISOR_POLL_INTERVAL of `target`, or of the stored target when none is given."""
    config = device_config(target) if target is not None else stored_device_config()
    return config.poll_interval_ms / 1000


def lock_override(target: TargetState | None) -> bool:
    """SUPERVISOR_OVERRIDE_LOCK of `target`; off without a target."""
    return device_config(target).lock_override


def stored_lock_override() -> bool:
    """SUPERVISOR_OVERRIDE_LOCK of the stored target; off before any target."""
    return stored_device_config().lock_override


def instant_updates_enabled() -> bool:
    """SUPERVISOR_INSTANT_UPDATE_TRIGGER of the stored target (on by default)."""
    return stored_device_config().instant_update_trigger


def local_mode_active() -> bool:
    """On when the device is unmanaged (no `apiEndpoint` in config.json), or when the
    stored target's config has SUPERVISOR_LOCAL_MODE truthy (set from the dashboard)
    (docs/local-mode.md "Turning it on")."""
    if not current_device_identity().managed:
        return True
    return stored_device_config().local_mode


def persistent_logging_enabled() -> bool:
    """SUPERVISOR_PERSISTENT_LOGGING of the stored target (off without one, or when the
    database cannot be read)."""
    try:
        return stored_device_config().persistent_logging
    except Exception as exc:
        logger.info("persistent logging off: could not read the target (%s)", exc)
        return False


def hardware_metrics_enabled() -> bool:
    """SUPERVISOR_HARDWARE_METRICS of the stored target (on by default)."""
    return stored_device_config().hardware_metrics


DEFAULT_API_REQUEST_TIMEOUT_SECONDS = 59.0


def api_request_timeout_seconds() -> float:
    """SUPERVISOR_API_REQUEST_TIMEOUT of the stored target, in seconds (the variable is in
    milliseconds, 59000 by default). 0 cannot bound a request (the HTTP client refuses it):
    it counts as the default."""
    milliseconds = stored_device_config().api_request_timeout_ms
    return milliseconds / 1000 if milliseconds > 0 else DEFAULT_API_REQUEST_TIMEOUT_SECONDS
