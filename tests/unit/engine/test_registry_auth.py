"""Which registry gets the device's credentials when an image is pulled."""

from __future__ import annotations

from dataclasses import replace

import pytest

from apps_api.engine.container_config import DeviceContext
from apps_api.engine.executor import registry_credentials

REGISTRY = "registry2.example.com"
MANAGED = DeviceContext(
    uuid="abc", host_root="/", device_api_key="secret", api_endpoint="https://api.example.com",
    registry_endpoint=REGISTRY,
)  # fmt: skip
OTHER_REGISTRIES = [
    "evil.example.net/app",
    f"{REGISTRY}.evil.net/app",
    "localhost:5000/app",
    "busybox",
    "lib/app",
]


def auth_for(image: str, device: DeviceContext = MANAGED) -> dict[str, str] | None:
    return registry_credentials(device, image)


def test_the_clouds_registry_gets_the_device_key() -> None:
    assert auth_for(f"{REGISTRY}/v2/abcdef@sha256:01") == {"username": "d_abc", "password": "secret"}
    assert auth_for(f"https://{REGISTRY.upper()}/app".split("://")[1]) is not None


@pytest.mark.parametrize("image", OTHER_REGISTRIES)
def test_any_other_registry_gets_nothing(image: str) -> None:
    assert auth_for(image) is None


def test_without_a_registry_endpoint_or_a_cloud_nothing_is_sent() -> None:
    assert auth_for(f"{REGISTRY}/app", replace(MANAGED, registry_endpoint="")) is None
    assert auth_for(f"{REGISTRY}/app", replace(MANAGED, api_endpoint="")) is None
