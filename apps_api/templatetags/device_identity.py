"""Shows the device identity and its health on the admin home page."""

from __future__ import annotations

from typing import Any

from django import template

from apps_api.apikeys import get_or_create_global_key
from apps_api.health import failed_health_checks
from hostcfg.identity import DeviceConfigError, load_device_identity

register = template.Library()


@register.inclusion_tag("admin/device_identity.html")
def device_identity() -> dict[str, Any]:
    try:
        identity = load_device_identity()
    except DeviceConfigError as exc:
        return {"error": str(exc)}
    return {
        "health_failures": failed_health_checks(),
        "identity": identity,
        "masked_device_api_key": f"…{identity.device_api_key[-4:]}",
        "masked_global_key": f"…{get_or_create_global_key().key[-4:]}",
    }
