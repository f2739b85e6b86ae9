"""Per-service status as the API reports it (docs/engine.md "Status mapping"), derived from
the current containers, the target and the apply loop's volatile statuses. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from apps_api.engine.state import AppSpec, CurrentService, CurrentState, normalise_image_ref

DOCKER_STATUS_NAMES = {"running": "Running", "created": "Installed", "dead": "Dead"}


@dataclass(frozen=True)
class ServiceStatus:
    app_id: int
    service_name: str
    status: str
    download_progress: int | None = None
    container_id: str | None = None


def container_status(container: CurrentService) -> str:
    """Docker's state in the API's words: Running, Installed, Dead, else docker's own."""
    return DOCKER_STATUS_NAMES.get(container.status, container.status)


def service_statuses(
    current: CurrentState,
    target: Sequence[AppSpec],
    *,
    volatile: Mapping[str, str],
    image_progress: Mapping[str, int],
) -> list[ServiceStatus]:
    """One status per target service and per current container not in the target.

    `volatile` ("<appId>/<service>" → status) is what a running step says (Installing,
    Stopping, Handing over…); `image_progress` (reference → percent) covers downloads.
    A target service with no container is Downloading while its image is missing and
    Downloaded once it is present.
    """
    containers: dict[tuple[int, str], list[CurrentService]] = {}
    for container in current.services:
        containers.setdefault((container.app_id, container.service_name), []).append(container)
    statuses = []
    for app in target:
        for service in app.services:
            key = f"{app.app_id}/{service.service_name}"
            ref = normalise_image_ref(service.image)
            existing = sorted(
                containers.pop((app.app_id, service.service_name), []), key=lambda c: c.created_at
            )
            progress = image_progress.get(ref)
            if len(existing) > 1 and any(c.container_name.startswith("old_") for c in existing):
                newest = existing[-1]
                status = "Awaiting handover"
            elif existing:
                newest = existing[-1]
                status = volatile.get(key) or container_status(newest)
            else:
                newest = None
                downloaded = ref in current.images
                status = volatile.get(key) or ("Downloaded" if downloaded else "Downloading")
                if status == "Downloading" and progress is None:
                    progress = 0
            statuses.append(
                ServiceStatus(
                    app_id=app.app_id,
                    service_name=service.service_name,
                    status=status,
                    download_progress=progress if status == "Downloading" else None,
                    container_id=newest.container_id if newest else None,
                )
            )
    for (app_id, name), leftovers in sorted(containers.items()):
        newest = max(leftovers, key=lambda c: c.created_at)
        status = volatile.get(f"{app_id}/{name}") or container_status(newest)
        statuses.append(ServiceStatus(app_id, name, status, None, newest.container_id))
    return statuses
