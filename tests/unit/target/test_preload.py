"""What an apps.json preload becomes (no I/O: the v2 uuid lookup is a stand-in function)."""

from __future__ import annotations

from typing import Any

import pytest

from apps_api.engine.state import InvalidTargetState
from apps_api.target.preload import preloaded_target

DEVICE = "0123456789abcdef0123456789abcdef"


def v3_document(*, pin: bool = False) -> dict[str, Any]:
    service = {
        "id": 7,
        "image_id": 70,
        "image": "registry.example/app@sha256:" + "a" * 64,
        "environment": {"MODE": "preloaded"},
        "labels": {},
        "composition": {"command": ["sleep", "1d"]},
    }
    release = {"id": 55, "services": {"main": service}}
    app = {"id": 3, "name": "fleetapp", "class": "fleet", "releases": {"c0ffee": release}}
    config = {"RESIN_SUPERVISOR_POLL_INTERVAL": "600000"}
    return {"config": config, "apps": {"appuuid3": app}, "pinDevice": pin}


def v2_document() -> dict[str, Any]:
    service = {"serviceName": "main", "image": "registry.example/app:latest", "imageId": 70,
               "environment": {}, "labels": {}}  # fmt: skip
    app = {"name": "fleetapp", "commit": "c0ffee", "releaseId": 55, "services": {"7": service}}
    return {"config": {}, "apps": {"3": app}, "pinDevice": True}


def no_lookup(app_id: int) -> str:
    raise AssertionError(f"a v3 apps.json needs no uuid lookup (asked for {app_id})")


def test_a_v3_preload_is_the_fleet_release_with_its_config() -> None:
    target, pin = preloaded_target(v3_document(), device_uuid=DEVICE, app_uuid=no_lookup)
    (app,) = target.apps
    assert (app.app_id, app.app_uuid, app.commit, app.release_id) == (3, "appuuid3", "c0ffee", 55)
    assert app.services[0].environment["MODE"] == "preloaded"
    assert target.config == {"RESIN_SUPERVISOR_POLL_INTERVAL": "600000"}
    assert target.source == "cloud"
    assert pin is None


def test_pin_device_pins_to_the_preloaded_release() -> None:
    assert preloaded_target(v3_document(pin=True), device_uuid=DEVICE, app_uuid=no_lookup)[1] == 55


def test_a_v2_preload_takes_its_app_uuid_from_the_lookup() -> None:
    asked: list[int] = []

    def lookup(app_id: int) -> str:
        asked.append(app_id)
        return "uuid-from-the-cloud"

    target, pin = preloaded_target(v2_document(), device_uuid=DEVICE, app_uuid=lookup)
    (app,) = target.apps
    assert asked == [3]
    assert (app.app_uuid, app.commit, app.release_id, app.services[0].service_name) == (
        "uuid-from-the-cloud", "c0ffee", 55, "main"
    )  # fmt: skip
    assert target.source == "cloud"
    assert pin == 55


def test_a_legacy_array_becomes_one_privileged_host_networked_service_per_app() -> None:
    legacy = [
        {
            "appId": 1234,
            "name": "oldapp",
            "commit": "c0ffee",
            "imageId": "registry.example/oldapp:latest",
            "env": {"GREETING": "hi", "RESIN_DEVICE_UUID": "set-by-the-supervisor"},
            "config": {
                "RESIN_SUPERVISOR_UPDATE_STRATEGY": "kill-then-download",
                "RESIN_HOST_CONFIG_gpu_mem": "16",
            },
        }
    ]
    target, pin = preloaded_target(legacy, device_uuid=DEVICE, app_uuid=lambda app_id: f"uuid-{app_id}")
    (app,) = target.apps
    (main,) = app.services
    assert (app.app_id, app.app_uuid, app.name, app.commit) == (1234, "uuid-1234", "oldapp", "c0ffee")
    assert (main.service_name, main.image) == ("main", "registry.example/oldapp:latest")
    assert main.environment == {"GREETING": "hi"}
    assert main.update_strategy == "kill-then-download"
    assert main.labels["io.resin.legacy-container"] == "1"
    assert main.composition["privileged"] is True
    assert main.composition["network_mode"] == "host"
    assert [v.name for v in app.volumes] == ["resin-data"]
    assert target.config["RESIN_HOST_CONFIG_gpu_mem"] == "16"
    assert pin is None


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("apps", "must be an object"),
        ([{"appId": 1, "commit": "c0ffee", "env": "A=1"}], "0.env: expected an object"),
        (
            {"apps": {"3": {"name": "a", "commit": "c0ffee", "releaseId": 1, "services": {"7": {}}}}},
            "apps.3.services.7",
        ),
        (
            {"apps": {"u": {"id": 3, "name": "a", "releases": {"c0ffee": {"id": 1, "services": {"m": {}}}}}}},
            "apps.u.releases.c0ffee.services.m",
        ),
    ],
    ids=["not-an-object", "legacy-env-not-an-object", "v2-bad-service", "v3-bad-service"],
)
def test_a_bad_preload_is_refused_naming_the_place_in_the_file(document: object, message: str) -> None:
    with pytest.raises(InvalidTargetState) as refused:
        preloaded_target(document, device_uuid=DEVICE, app_uuid=lambda app_id: "u")
    assert str(refused.value).startswith(message)
