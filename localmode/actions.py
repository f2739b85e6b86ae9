"""What the local-mode endpoints read and do: the target state as the balena CLI sees it,
setting a new one, and the device's type (docs/local-mode.md "Endpoints")."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings

from apps_api.actions import set_target_state
from apps_api.device_settings import local_mode_active
from apps_api.engine.state import InvalidTargetState
from apps_api.errors import BadRequest
from apps_api.target.documents import parse_local_target
from apps_api.target.store import load_target
from hostcfg.device_config import filled_target_config
from hostcfg.device_type import read_device_type
from hostcfg.identity import current_device_identity

if TYPE_CHECKING:
    from apps_api.engine.state import TargetState

NOT_IN_LOCAL_MODE = "Target state can only set when device is in local mode"


def local_target_state() -> dict[str, Any]:
    """GET /v2/local/target-state's `state`: the device name, the target config with every
    default filled in, and the apps of the last local-mode target as they were posted (none
    when the target came from elsewhere), next to the empty `dependent` of
    the balena Supervisor API reference, v9."""

    loaded = load_target()
    target, record = loaded if loaded else (None, None)
    posted = record.posted_apps if record is not None and record.source == "local" else None
    return {
        "local": {
            "name": (target.name if target else None) or "",
            "config": filled_target_config(
                target.config if target else {}, managed=current_device_identity().managed
            ),
            "apps": posted or {},
        },
        "dependent": {"apps": [], "devices": []},
    }


def set_local_target_state(body: object) -> int:
    """Validate and store a v2 target and start applying it (answering before the apply
    ends); returns the target's record id. Raises BadRequest outside local mode or for an
    invalid document (nothing stored). Called by: POST /v2/local/target-state."""

    if not local_mode_active():
        raise BadRequest(NOT_IN_LOCAL_MODE)
    loaded = load_target()
    try:
        target = parse_local_target(body, current_name=loaded[0].name if loaded else None)
    except InvalidTargetState as exc:
        raise BadRequest(f"Invalid target state.\n{exc}") from exc
    assert isinstance(body, dict)  # parse_local_target accepts objects only
    posted_apps = body["local"].get("apps") or {}
    return set_target_state(
        _staying_in_local_mode(target), force=body.get("force") is True, posted_apps=posted_apps
    )


def _staying_in_local_mode(target: TargetState) -> TargetState:
    """On a managed device only the dashboard ends local mode: a posted config without
    SUPERVISOR_LOCAL_MODE (or with it false) must not end it, and remove what it pushed."""

    if not current_device_identity().managed:
        return target
    name = "SUPERVISOR_LOCAL_MODE"
    config = {
        k: v for k, v in target.config.items() if k.removeprefix("BALENA_").removeprefix("RESIN_") != name
    }
    return replace(target, config={**config, "SUPERVISOR_LOCAL_MODE": "true"})


def device_info() -> dict[str, str]:
    """The architecture and device type, from the boot partition's device-type.json."""

    slug, arch = read_device_type(Path(settings.SUPERVISOR_BOOT_ROOT))
    return {"arch": arch, "deviceType": slug}
