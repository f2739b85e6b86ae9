"""What a cloud target may hold that this agent must never run (docs/target-state.md "Not ours to run").

balenaCloud's target carries the device's own supervisor release and, on newer OSes,
host-OS apps and their extension images; running them as user containers would start a
second, unprivileged supervisor or install host blocks into the data store. They are
left out of the applied state, by app uuid, service name or image labels.
"""

from __future__ import annotations

from typing import Any

# The supervisor's app uuid per architecture (amd64, aarch64, armv7hf, i386, rpi): the
# same in every balena environment.
SUPERVISOR_APP_UUIDS = frozenset(
    {
        "52e35121417640b1b28a680504e4039b",
        "900de4f3cbac4b9bbd232885a35e407b",
        "2e66a95795c149959c69472a8c2f92b8",
        "531b357e155c480cbec0fdd33041a1f5",
        "6822565f766e413e96d9bebe2227cdcc",
    }
)
SUPERVISOR_SERVICE_NAMES = frozenset({"balena-supervisor", "resin-supervisor"})
IMAGE_CLASS_LABEL = "io.balena.image.class"
IMAGE_STORE_LABEL = "io.balena.image.store"


def unmanaged_app_reason(uuid: str, app: Any) -> str | None:
    """Why the cloud app `uuid` is not ours to run, or None."""
    if uuid in SUPERVISOR_APP_UUIDS:
        return "the supervisor's own release"
    if isinstance(app, dict) and app.get("is_host") is True:
        return "a host OS app"
    return None


def unmanaged_service_reason(name: str, service: Any) -> str | None:
    """Why the service `name` of a user app is not ours to run, or None: a supervisor
    image, or a host extension (an image class other than `service`, or an image meant for
    a store other than the data partition)."""
    if name in SUPERVISOR_SERVICE_NAMES:
        return "a supervisor image"
    for labels in _label_maps(service):
        image_class = labels.get(IMAGE_CLASS_LABEL, "service")
        if image_class != "service":
            return f"a host extension ({IMAGE_CLASS_LABEL}={image_class})"
        store = labels.get(IMAGE_STORE_LABEL, "data")
        if store != "data":
            return f"a host extension ({IMAGE_STORE_LABEL}={store})"
    return None


def _label_maps(service: Any) -> list[dict[str, Any]]:
    if not isinstance(service, dict):
        return []
    composition = service.get("composition")
    maps = [service.get("labels"), composition.get("labels") if isinstance(composition, dict) else None]
    return [labels for labels in maps if isinstance(labels, dict)]
