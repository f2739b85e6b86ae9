"""Whether the device is in local mode (spec/auth.md "Local mode summary")."""

from __future__ import annotations


def local_mode_active() -> bool:
    """On when the device is unmanaged (no `apiEndpoint` in config.json), or when the
    stored target's config has SUPERVISOR_LOCAL_MODE truthy (set from the dashboard)."""
    from apps_api.engine.device_config_steps import stored_device_config
    from hostcfg.identity import current_device_identity

    if not current_device_identity().managed:
        return True
    return stored_device_config().local_mode
