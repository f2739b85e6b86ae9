"""Whether the device is in local mode (spec/auth.md "Local mode summary")."""

from __future__ import annotations


def local_mode_active() -> bool:
    """On when the device is unmanaged (no `apiEndpoint` in config.json), or when the
    stored target's config has SUPERVISOR_LOCAL_MODE truthy (set from the dashboard)."""
    from apps_api.engine.device_config_steps import device_config
    from apps_api.target_store import load_target
    from hostcfg.identity import current_device_identity

    if not current_device_identity().managed:
        return True
    loaded = load_target()
    return device_config(loaded[0] if loaded else None).local_mode
