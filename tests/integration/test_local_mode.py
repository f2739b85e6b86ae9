"""Local mode as the balena CLI drives it: target state in, device info, status while applying."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import docker
import pytest
from django.conf import settings

from apps_api.apikeys import get_or_create_global_key
from apps_api.models import TargetRecord
from hostcfg.device_type import machine_arch
from hostcfg.identity import load_device_identity
from supervisor_site.system_services import wait_until
from tests.agent_client import Client
from tests.host_bus import HostBus
from tests.integration.engine_helpers import local_target, set_target, supervised_containers, wait_applied

pytestmark = pytest.mark.django_db(transaction=True)

# The example body of the balena Supervisor API reference, v9, with its images made from the test image.
SEED_TARGET: dict[str, Any] = {
    "local": {
        "name": "Home",
        "config": {
            "HOST_CONFIG_disable_splash": "1",
            "HOST_CONFIG_dtparam": "i2c_arm=on,i2s=on",
            "HOST_CONFIG_enable_uart": "1",
            "HOST_CONFIG_gpio": '"2=op","3=op"',
            "HOST_CONFIG_gpu_mem": "16",
            "SUPERVISOR_LOCAL_MODE": "1",
            "SUPERVISOR_POLL_INTERVAL": "600000",
            "SUPERVISOR_VPN_CONTROL": "true",
            "SUPERVISOR_CONNECTIVITY_CHECK": "true",
            "SUPERVISOR_LOG_CONTROL": "true",
            "SUPERVISOR_DELTA": "false",
            "SUPERVISOR_DELTA_REQUEST_TIMEOUT": "30000",
            "SUPERVISOR_DELTA_APPLY_TIMEOUT": "",
            "SUPERVISOR_DELTA_RETRY_COUNT": "30",
            "SUPERVISOR_DELTA_RETRY_INTERVAL": "10000",
            "SUPERVISOR_DELTA_VERSION": "2",
            "SUPERVISOR_OVERRIDE_LOCK": "false",
            "SUPERVISOR_PERSISTENT_LOGGING": "false",
        },
        "apps": {
            "1": {
                "name": "localapp",
                "commit": "localcommit",
                "releaseId": "1",
                "services": {
                    "1": {
                        "environment": {},
                        "labels": {},
                        "imageId": 1,
                        "serviceName": "one",
                        "serviceId": 1,
                        "image": "local_image_one:latest",
                        "running": True,
                        "command": "sleep 100000",
                        "stop_signal": "SIGKILL",
                    },
                    "2": {
                        "environment": {},
                        "labels": {},
                        "network_mode": "container:one",
                        "imageId": 2,
                        "serviceName": "two",
                        "serviceId": 2,
                        "image": "local_image_two:latest",
                        "running": True,
                        "command": "sleep 100000",
                        "stop_signal": "SIGKILL",
                    },
                },
                "volumes": {},
                "networks": {},
            }
        },
    }
}


@pytest.fixture
def local_images(engine: str) -> str:
    """What `balena push` leaves on the engine: images tagged `local_image_<service>`."""
    client = docker.from_env()
    for service in ("one", "two"):
        client.images.get(engine).tag(f"local_image_{service}", "latest")
    return engine


def post(body: object, **headers: str):  # type: ignore[no-untyped-def]
    return Client().post(
        "/v2/local/target-state", json.dumps(body), content_type="application/json", **headers
    )


def test_get_target_state_has_the_seed_shape_with_defaults_filled_in(engine: str) -> None:
    set_target(local_target({"main": {}}, image=engine, config={"RESIN_SUPERVISOR_POLL_INTERVAL": "60000"}))
    wait_applied()
    response = Client().get("/v2/local/target-state")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["status"] == "success"
    assert body["state"]["dependent"] == {"apps": [], "devices": []}
    local = body["state"]["local"]
    assert local["name"] == "test-device"
    assert local["config"]["SUPERVISOR_POLL_INTERVAL"] == "60000"
    assert local["config"]["SUPERVISOR_VPN_CONTROL"] == "true"
    assert local["config"]["SUPERVISOR_LOCAL_MODE"] == "true"  # the test device is unmanaged
    assert local["apps"] == {}  # that target was not posted to the local-mode endpoint


def test_the_seed_example_is_accepted_applied_and_echoed(local_images: str, host_bus: HostBus) -> None:
    response = post(SEED_TARGET)
    assert (response.status_code, response.json()) == (200, {"status": "success", "message": "OK"})
    assert response["Content-Type"] == "application/json"
    # The CLI polls this from the moment the POST returns, until its containers exist.
    assert Client().get("/v2/state/status").json()["appState"] == "applying"
    wait_applied()
    containers = supervised_containers()
    assert sorted(containers) == ["one", "two"]
    status = Client().get("/v2/state/status").json()
    assert status["appState"] == "applied"
    assert {c["serviceName"]: c["containerId"] for c in status["containers"]} == {
        name: container.id for name, container in containers.items()
    }
    state = Client().get("/v2/local/target-state").json()["state"]["local"]
    assert state["name"] == "Home"
    assert state["apps"] == SEED_TARGET["local"]["apps"]
    assert state["config"]["HOST_CONFIG_gpu_mem"] == "16"
    container_id = Client().get("/v2/containerId", {"serviceName": "two"}).json()
    assert container_id == {"status": "success", "containerId": containers["two"].id}


def test_a_rebuilt_image_under_the_same_name_replaces_the_container(local_images: str) -> None:
    target = copy.deepcopy(SEED_TARGET)
    target["local"]["config"] = {}
    assert post(target).status_code == 200
    wait_applied()
    before = supervised_containers()["one"].id
    # `balena push` rebuilds: same tag, same target document, another image behind the tag.
    client = docker.from_env()
    rebuilt = client.containers.create(local_images, command=["true"])
    try:
        rebuilt.commit("local_image_one", "latest", changes=["LABEL rebuilt=1"])
    finally:
        rebuilt.remove()
    assert post(target).status_code == 200
    wait_applied()
    after = supervised_containers()["one"]
    assert after.id != before
    assert after.image.labels.get("rebuilt") == "1"


def test_a_container_removed_behind_our_back_is_recreated_on_the_next_post(local_images: str) -> None:
    target = copy.deepcopy(SEED_TARGET)
    target["local"]["config"] = {}
    assert post(target).status_code == 200
    wait_applied()
    supervised_containers()["two"].remove(force=True)
    assert post(target).status_code == 200
    assert wait_until(lambda: "two" in supervised_containers(), 30)
    wait_applied()


def test_an_invalid_target_is_400_and_nothing_is_stored(engine: str) -> None:
    stored = TargetRecord.objects.count()
    target = copy.deepcopy(SEED_TARGET)
    target["local"]["apps"]["1"]["services"]["1"]["environment"] = {"1BAD": "x"}
    response = post(target)
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "failed"
    assert body["message"].startswith("Invalid target state.\nlocal.apps.1.services.1.environment")
    assert post({"local": "nope"}).status_code == 400
    bad_json = Client().post("/v2/local/target-state", "{", content_type="application/json")
    assert bad_json.status_code == 400
    assert TargetRecord.objects.count() == stored


def test_posting_outside_local_mode_is_refused(engine: str, managed_device: None) -> None:
    key = get_or_create_global_key().key
    response = post(SEED_TARGET, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 400
    assert response.json() == {
        "status": "failed",
        "message": "Target state can only set when device is in local mode",
    }
    assert post(SEED_TARGET).status_code == 401  # managed and not in local mode: a key is needed
    # The dashboard's SUPERVISOR_LOCAL_MODE turns local mode on: no key, POST allowed.
    set_target(local_target({}, image=engine, config={"BALENA_SUPERVISOR_LOCAL_MODE": "1"}))
    wait_applied()
    target = copy.deepcopy(SEED_TARGET)
    target["local"]["apps"] = {}
    assert post(target).status_code == 200


def test_device_info_comes_from_device_type_json_or_the_machine(engine: str) -> None:
    device_type = Path(settings.SUPERVISOR_BOOT_ROOT) / "device-type.json"
    device_type.unlink(missing_ok=True)
    body = Client().get("/v2/local/device-info").json()
    assert body["status"] == "success"
    assert body["info"]["arch"] == machine_arch()
    device_type.write_text(json.dumps({"slug": "raspberrypi4-64", "arch": "aarch64"}))
    try:
        body = Client().get("/v2/local/device-info").json()
        assert body == {"status": "success", "info": {"arch": "aarch64", "deviceType": "raspberrypi4-64"}}
    finally:
        device_type.unlink()


def fleet_target(image: str, *, local_mode: bool) -> dict[str, Any]:
    """What the cloud sends this device (v3): one service, and the dashboard's local mode switch."""
    composition = {"command": ["sleep", "100000"], "stop_signal": "SIGKILL"}
    service = {
        "id": 7,
        "image_id": 70,
        "image": image,
        "environment": {},
        "labels": {},
        "composition": composition,
    }
    release = {"id": 5, "services": {"fleet": service}, "volumes": {}, "networks": {}}
    app = {"id": 3, "name": "fleetapp", "releases": {"c0ffee": release}}
    config = {"SUPERVISOR_LOCAL_MODE": "1" if local_mode else "0"}
    return {load_device_identity().uuid: {"name": "dev", "config": config, "apps": {"fleetuuid": app}}}


def test_leaving_local_mode_removes_what_it_created(local_images: str, managed_device: None) -> None:
    set_target(fleet_target(local_images, local_mode=False))
    wait_applied()
    set_target(fleet_target(local_images, local_mode=True))
    wait_applied()
    # The developer pushes a build of their own, with a volume.
    client = docker.from_env()
    build = client.containers.create(local_images, command=["true"])
    try:
        pushed = build.commit("local_image_one", "latest", changes=["LABEL io.resin.local.image=1"])
    finally:
        build.remove()
    target = copy.deepcopy(SEED_TARGET)
    target["local"]["config"] = {}
    del target["local"]["apps"]["1"]["services"]["2"]
    target["local"]["apps"]["1"]["services"]["1"]["volumes"] = ["scratch:/scratch"]
    target["local"]["apps"]["1"]["volumes"] = {"scratch": {}}
    assert post(target).status_code == 200
    wait_applied()
    assert sorted(supervised_containers()) == ["one"]
    # The dashboard turns local mode off: the fleet's release comes back, nothing of the push stays.
    set_target(fleet_target(local_images, local_mode=False))
    wait_applied()
    assert sorted(supervised_containers()) == ["fleet"]
    assert not client.volumes.list(filters={"name": "1_scratch"})
    assert pushed.id not in [
        image.id for image in client.images.list(filters={"label": "io.resin.local.image=1"})
    ]
    assert not TargetRecord.objects.filter(source="local").exists()


def test_leaving_local_mode_without_a_snapshot_removes_nothing(
    local_images: str, managed_device: None
) -> None:
    fleet_on = fleet_target(local_images, local_mode=False)
    (app,) = next(iter(fleet_on.values()))["apps"].values()
    (release,) = app["releases"].values()
    release["volumes"] = {"fleetdata": {}}
    release["services"]["fleet"]["composition"]["volumes"] = ["fleetdata:/data"]
    set_target(fleet_on)
    wait_applied()
    fleet = supervised_containers()["fleet"]
    assert fleet.exec_run(["sh", "-c", "echo precious > /data/marker"]).exit_code == 0
    fleet_local = copy.deepcopy(fleet_on)
    next(iter(fleet_local.values()))["config"]["SUPERVISOR_LOCAL_MODE"] = "1"
    set_target(fleet_local)
    wait_applied()
    (Path(settings.SUPERVISOR_DATA_DIR) / "local-mode-snapshot.json").unlink()

    set_target(fleet_on)
    wait_applied()
    assert docker.from_env().volumes.list(filters={"name": "3_fleetdata"})
    fleet = supervised_containers()["fleet"]
    assert fleet.exec_run(["cat", "/data/marker"]).output == b"precious\n"
    assert not TargetRecord.objects.filter(source="local").exists()


def test_a_web_page_cannot_use_the_keyless_api(engine: str) -> None:
    # A cross-site form: refused before anything runs (no app 1 exists to purge anyway).
    form = Client().post("/v1/purge", "appId=1&force=true", content_type="application/x-www-form-urlencoded")
    assert form.status_code == 415
    assert form.json() == {
        "status": "failed",
        "message": "Unsupported media type: send JSON (application/json)",
    }
    # DNS rebinding: the page's own name in Host.
    rebound = Client().post(
        "/v1/blink", "{}", content_type="application/json", headers={"Host": "evil.example"}
    )
    assert rebound.status_code == 403
    foreign = Client().post("/v1/blink", "{}", content_type="application/json",
                            headers={"Origin": "https://evil.example"})  # fmt: skip
    assert foreign.status_code == 403
    cross_site = Client().get("/v2/cleanup-volumes", headers={"Sec-Fetch-Site": "cross-site"})
    assert cross_site.status_code == 403
    # The device's own clients: an address, its names, the same origin, or no browser at all.
    for host in ("127.0.0.1:48484", "10.114.104.1", "localhost", "[::1]:48484"):
        assert Client().get("/v2/version", headers={"Host": host}).status_code == 200, host
    same_origin = {"Host": "10.114.104.1:48484", "Origin": "http://10.114.104.1:48484"}
    assert Client().get("/v2/version", headers=same_origin).status_code == 200
