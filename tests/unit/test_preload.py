"""What an apps.json preload becomes (no I/O: the v2 uuid lookup is a stand-in function)."""

from __future__ import annotations

from typing import Any

import pytest

from apps_api.engine.state import InvalidTargetState
from apps_api.preload import preloaded_target

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


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "must be an object"),
        ({"apps": [{"appId": 1, "imageId": "x"}]}, "apps: the legacy array form is not supported"),
        (
            {"apps": {"3": {"name": "a", "commit": "c0ffee", "releaseId": 1, "services": {"7": {}}}}},
            "apps.3.services.7",
        ),
        (
            {"apps": {"u": {"id": 3, "name": "a", "releases": {"c0ffee": {"id": 1, "services": {"m": {}}}}}}},
            "apps.u.releases.c0ffee.services.m",
        ),
    ],
    ids=["not-an-object", "legacy-array", "v2-bad-service", "v3-bad-service"],
)
def test_a_bad_preload_is_refused_naming_the_place_in_the_file(document: object, message: str) -> None:
    with pytest.raises(InvalidTargetState) as refused:
        preloaded_target(document, device_uuid=DEVICE, app_uuid=lambda app_id: "u")
    assert str(refused.value).startswith(message)
