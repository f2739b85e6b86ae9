"""What the engine needs to know about this device to build containers: identity, device
type, the engine socket, and an API key for each service that asks for one."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from apps_api.apikeys import get_or_create_service_key, stored_service_key
from apps_api.engine.container_config import DeviceContext, feature_enabled
from apps_api.engine.state import TargetState
from apps_api.target.contracts import DeviceFacts
from hostcfg.device_type import read_device_type
from hostcfg.host_info import kernel_release, os_release_field, os_version
from hostcfg.identity import load_device_identity

# Sources of feature binds that not every host has (kernel-modules, firmware).
OPTIONAL_HOST_PATHS = ("/lib/modules", "/lib/firmware")


def device_context(target: TargetState, *, create_keys: bool = True) -> DeviceContext:
    """The device as the engine sees it, for one round of `target`. Without `create_keys`
    a service that has no API key yet gets none (a plan stores nothing)."""
    identity = load_device_identity()
    slug, arch = read_device_type(Path(settings.SUPERVISOR_BOOT_ROOT))
    key_of = get_or_create_service_key if create_keys else stored_service_key
    found = {
        f"{app.app_id}/{service.service_name}": key_of(app.app_id, service.service_name)
        for app in target.apps
        for service in app.services
        if feature_enabled(service, "supervisor-api")
    }
    keys = {name: key for name, key in found.items() if key is not None}
    docker_host = settings.DOCKER_HOST
    host_root = Path(settings.SUPERVISOR_HOST_ROOT)
    return DeviceContext(
        uuid=identity.uuid,
        host_root=str(host_root),
        docker_socket=docker_host.removeprefix("unix://") if docker_host.startswith("unix://") else "",
        device_type=slug,
        arch=arch,
        device_name=target.name or "",
        api_port=settings.SUPERVISOR_PORT,
        device_api_key=identity.device_api_key,
        api_endpoint=identity.api_endpoint or "",
        registry_endpoint=identity.registry_endpoint,
        service_api_keys=keys,
        missing_host_paths=frozenset(
            p for p in OPTIONAL_HOST_PATHS if not (host_root / p.lstrip("/")).exists()
        ),
        os_board_rev=os_release_field("BALENA_BOARD_REV"),
        os_version=os_version(),
    )


def device_facts() -> DeviceFacts:
    """This device's versions and slugs, which release contracts are judged against."""
    slug, arch = read_device_type(Path(settings.SUPERVISOR_BOOT_ROOT))
    return DeviceFacts(
        supervisor_version=settings.SUPERVISOR_VERSION,
        os_version=os_version(),
        kernel_release=kernel_release(),
        device_type=slug,
        arch=arch,
    )
