"""The JSON answers of the device API's state reads, built from one `DeviceSnapshot`, and
the parsing of app ids from paths and bodies."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.conf import settings

from apps_api.apikeys import ApiAccess, check_scope
from apps_api.engine.docker import container_environment
from apps_api.engine.state import CurrentService, normalise_image_ref
from apps_api.engine.status import ServiceStatus, container_status
from apps_api.errors import BadRequest, Conflict, NotFound
from apps_api.snapshot import DeviceSnapshot, current_commit, read_snapshot, update_status
from hostcfg.host_info import host_addresses, os_version


def applications_state(snapshot: DeviceSnapshot, access: ApiAccess) -> dict[str, Any]:
    """GET /v2/applications/state: every target app in scope, keyed by app name."""
    result: dict[str, Any] = {}
    for app in snapshot.target_apps(access):
        services: dict[str, dict[str, Any]] = {}
        for service in app.services:
            status = snapshot.status_of(app.app_id, service.service_name)
            services[service.service_name] = {
                "status": status.status if status else "Downloading",
                "image": service.image,
                "downloadProgress": status.download_progress if status else None,
                "releaseId": service.release_id,
            }
            last_change = snapshot.last_change_of(app.app_id, service.service_name)
            if last_change is not None:
                services[service.service_name]["lastChange"] = last_change
        result[app.name] = {
            "appId": app.app_id,
            "appUuid": app.app_uuid,
            "commit": app.commit,
            "updateStatus": update_status(snapshot, app),
            "services": services,
        }
        if app.failed_commit:
            result[app.name]["failedRelease"] = {"commit": app.failed_commit, "reason": app.failed_reason}
    return result


def application_state(app_id: int, access: ApiAccess) -> dict[str, Any]:
    """GET /v2/applications/:appId/state, in the shape of the balena Supervisor API reference, v9
    (docs/api.md "Reads")."""
    snapshot = read_snapshot()
    app = snapshot.target_app(app_id)
    if app is None or not access.allows_app(app_id):
        raise Conflict(f"Application ID does not exist: {app_id}")
    services = {}
    containers = snapshot.containers_of(app_id)
    for service in app.services:
        status = snapshot.status_of(app_id, service.service_name)
        sharing = [c for c in containers if c.image_id == service.image_id]
        services[str(service.image_id)] = {
            "status": "Handing over" if len(sharing) > 1 else (status.status if status else "Downloading"),
            "releaseId": service.release_id,
            "download_progress": status.download_progress if status else None,
        }
    return {
        "commit": current_commit(snapshot, app_id) or "undefined",
        "local": {str(app_id): {"services": services}},
        "dependent": {},
    }


def iso_created_at(created_at: str) -> str:
    """When a container was created, as the original answers it (an ISO 8601 date in UTC,
    milliseconds); the engine's listing gives whole seconds since the epoch."""
    if not created_at.isdigit():
        return created_at
    moment = datetime.fromtimestamp(int(created_at), tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def state_status(snapshot: DeviceSnapshot, access: ApiAccess) -> dict[str, Any]:
    """GET /v2/state/status: the first app in scope, its containers and images."""
    containers = [c for c in snapshot.current.services if access.allows_app(c.app_id)]
    apps = snapshot.target_apps(access)
    first_app = containers[0].app_id if containers else (apps[0].app_id if apps else None)
    container_rows = [
        {
            "status": (snapshot.status_of(c.app_id, c.service_name) or _container_status(c)).status,
            "serviceName": c.service_name,
            "appId": c.app_id,
            "imageId": c.image_id,
            "serviceId": c.service_id,
            "containerId": c.container_id,
            "createdAt": iso_created_at(c.created_at),
        }
        for c in containers
        if c.app_id == first_app
    ]
    image_rows: list[dict[str, Any]] = []
    for app in apps:
        if app.app_id != first_app:
            continue
        for service in app.services:
            status = snapshot.status_of(app.app_id, service.service_name)
            downloading = status is not None and status.status == "Downloading"
            image_rows.append(
                {
                    "name": service.image,
                    "appId": app.app_id,
                    "serviceName": service.service_name,
                    "imageId": service.image_id,
                    "dockerImageId": snapshot.current.images.get(_ref(service.image)),
                    "status": "Downloading" if downloading else "Downloaded",
                    "downloadProgress": status.download_progress if downloading and status else None,
                }
            )
    progress: list[int] = [
        row["downloadProgress"] for row in image_rows if row["downloadProgress"] is not None
    ]
    return {
        "status": "success",
        "appState": "applying" if snapshot.applying else "applied",
        "overallDownloadProgress": sum(progress) / len(progress) if progress else None,
        "containers": container_rows,
        "images": image_rows,
        # The release that runs (the original's commit of the last finished apply), not the target's.
        "release": current_commit(snapshot, first_app) if first_app is not None else None,
    }


def _ref(image: str) -> str:
    return normalise_image_ref(image)


def _container_status(container: CurrentService) -> ServiceStatus:
    return ServiceStatus(container.app_id, container.service_name, container_status(container))


def container_ids(snapshot: DeviceSnapshot, access: ApiAccess, service_name: str | None) -> dict[str, Any]:
    """GET /v2/containerId: one service's container id, or all of them."""
    containers = {
        c.service_name: c.container_id for c in snapshot.current.services if access.allows_app(c.app_id)
    }
    if service_name is None:
        return {"status": "success", "services": containers}
    if service_name not in containers:
        raise ContainerNotFound("Could not find service with that name")
    return {"status": "success", "containerId": containers[service_name]}


class ContainerNotFound(NotFound):
    status = 503


def v1_device(snapshot: DeviceSnapshot) -> dict[str, Any]:
    """GET /v1/device."""

    ips, macs = host_addresses()
    device: dict[str, Any] = {
        "api_port": settings.SUPERVISOR_PORT,
        "ip_address": ips,
        "mac_address": macs,
        "os_version": os_version(),
        "supervisor_version": settings.SUPERVISOR_VERSION,
        "update_pending": bool(snapshot.flags.get("update_pending")),
        "update_failed": bool(snapshot.flags.get("update_failed")),
        "update_downloaded": bool(snapshot.flags.get("update_downloaded")),
    }
    apps = snapshot.target_apps()
    if apps:
        commit = current_commit(snapshot, apps[0].app_id)
        if commit and not snapshot.applying:
            device["commit"] = commit
        if apps[0].services:
            status = snapshot.status_of(apps[0].app_id, apps[0].services[0].service_name)
            if status is not None:
                device["status"] = "Idle" if status.status == "Running" else status.status
                device["download_progress"] = status.download_progress
    return device


HIDDEN_ENVIRONMENT = (
    "BALENA_SUPERVISOR_API_KEY",
    "RESIN_SUPERVISOR_API_KEY",
    "BALENA_API_KEY",
    "RESIN_API_KEY",
)


def v1_app(app_id: int, access: ApiAccess) -> dict[str, Any]:
    """GET /v1/apps/:appId: the one container of a single-container app."""

    check_scope(access, app_id, message="Application is not available")
    snapshot = read_snapshot()
    containers = snapshot.containers_of(app_id)
    if not containers:
        raise BadRequest("App not found", text=True)
    if len({c.service_name for c in containers}) > 1:
        raise BadRequest("Some v1 endpoints are only allowed on single-container apps", text=True)
    container = containers[0]
    environment = container_environment(container.container_id)
    # the balena Supervisor API reference, v9, shows the image reference (docs/api.md "Reads"); a
    # service gone from the target has only the engine's id.
    app = snapshot.target_app(app_id)
    spec = app.service(container.service_name) if app else None
    return {
        "appId": app_id,
        "commit": current_commit(snapshot, app_id),
        "containerId": container.container_id,
        "env": {k: v for k, v in environment.items() if k not in HIDDEN_ENVIRONMENT},
        "imageId": spec.image if spec else container.docker_image_id,
        "releaseId": container.release_id,
    }
