"""Apps preloaded into the device image with an apps.json (docs/target-state.md "Preloaded apps")."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from apps_api.cloud import client as cloud
from apps_api.cloud import poll as cloud_poll
from apps_api.models import TargetRecord
from apps_api.target.preload import load_preloaded_apps
from apps_api.target.store import load_target
from hostcfg.identity import load_device_identity
from supervisor_site.system_services import wait_until
from tests.agent_process import Agent
from tests.fake_cloud import FakeCloud, Scripted
from tests.integration.engine_helpers import supervised_containers, wait_applied
from tests.integration.test_cloud import fleet_document, tick_until_polled

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def apps_json() -> Iterator[Path]:
    path = Path(settings.SUPERVISOR_APPS_JSON)
    preloaded = path.with_name("apps.json.preloaded")
    yield path
    path.unlink(missing_ok=True)
    preloaded.unlink(missing_ok=True)


def v3_apps_json(image: str, *, pin: bool = False) -> dict[str, Any]:
    device = fleet_document("device", image)["device"]
    return {"config": device["config"], "apps": device["apps"], "pinDevice": pin}


def v2_apps_json(image: str) -> dict[str, Any]:
    service = {"serviceName": "main", "image": image, "imageId": 70, "environment": {}, "labels": {},
               "command": ["sleep", "100000"], "stop_signal": "SIGKILL"}  # fmt: skip
    app = {"name": "fleetapp", "commit": "c0ffee", "releaseId": 5, "services": {"7": service}}
    return {"config": {}, "apps": {"3": app}, "pinDevice": True}


def test_a_worker_starting_with_an_apps_json_runs_the_preloaded_release(
    apps_json: Path, engine: str, shipped_agent: Agent
) -> None:
    apps_json.write_text(json.dumps(v3_apps_json(engine)))
    shipped_agent.kill_agent(signum=signal.SIGTERM)  # the agent starts again, as at boot
    assert wait_until(lambda: "main" in supervised_containers(), 60), "the preloaded release did not start"
    wait_applied()
    assert not apps_json.exists()
    assert json.loads(apps_json.with_name("apps.json.preloaded").read_text()) == v3_apps_json(engine)
    labels = supervised_containers()["main"].labels
    assert (labels["io.balena.app-uuid"], labels["io.balena.app-id"]) == ("fleetuuid", "3")


def test_a_v2_preload_on_a_new_device_gets_app_uuids_and_its_pin_from_the_cloud(
    apps_json: Path, fake_cloud: FakeCloud, engine: str
) -> None:
    apps_json.write_text(json.dumps(v2_apps_json(engine)))
    fake_cloud.add_release(FakeCloud.application_uuid(3), "c0ffee", 5, [engine])  # the preloaded one
    with pytest.raises(cloud.CloudError, match="must be provisioned"):
        load_preloaded_apps()  # the provisioning key may not read applications
    assert not fake_cloud.requests_to("GET", "/v7/application(*)")

    cloud_poll.request_poll_now(force=False)
    cloud_poll.cloud_tick()  # provisions, loads the apps with the device key, pins, polls
    stored = [json.dumps(record.document) for record in TargetRecord.objects.all()]
    assert any(FakeCloud.application_uuid(3) in document for document in stored)
    [lookup] = fake_cloud.requests_to("GET", "/v7/application(*)")
    assert lookup.headers["Authorization"] == f"Bearer {load_device_identity().device_api_key}"
    [pin] = [r for r in fake_cloud.requests_to("PATCH", "/v7/device(*)") if "is_pinned_on__release" in r.body]
    [poll] = fake_cloud.requests_to("GET", "/device/v3/*/state")
    assert lookup.at < pin.at < poll.at, "pinned before the first poll, so the cloud sends the pinned release"
    device = fake_cloud.devices[load_device_identity().uuid]
    assert device.pinned_release == 5
    cloud_poll.cloud_tick()
    assert len([r for r in fake_cloud.requests_to("PATCH", "/v7/device(*)")
                if "is_pinned_on__release" in r.body]) == 1  # fmt: skip


@pytest.mark.parametrize("refusal", [400, 404])
def test_a_pin_the_cloud_refuses_is_not_asked_again(
    apps_json: Path, fake_cloud: FakeCloud, engine: str, refusal: int
) -> None:
    apps_json.write_text(json.dumps(v2_apps_json(engine)))
    fake_cloud.script("PATCH /v7/device(*)", Scripted(refusal, b"no such release"))

    cloud_poll.request_poll_now(force=False)
    cloud_poll.cloud_tick()  # provisions, loads the apps, then asks for the pin: refused
    wait_applied()
    cloud_poll.cloud_tick()
    cloud_poll.cloud_tick()

    pins = [r for r in fake_cloud.requests_to("PATCH", "/v7/device(*)") if "is_pinned_on__release" in r.body]
    assert len(pins) == 1
    assert fake_cloud.devices[load_device_identity().uuid].pinned_release is None


def test_an_apps_json_that_does_not_validate_is_left_and_nothing_applied(
    apps_json: Path, engine: str
) -> None:
    document = v3_apps_json(engine)
    document["apps"]["fleetuuid"]["releases"]["c0ffee"]["services"]["main"]["environment"] = {"1X": "y"}
    apps_json.write_text(json.dumps(document))
    stored = TargetRecord.objects.count()
    assert not load_preloaded_apps()
    assert apps_json.exists()
    assert TargetRecord.objects.count() == stored


def test_a_provisioned_device_with_a_target_ignores_an_apps_json(
    apps_json: Path, fake_cloud: FakeCloud, engine: str
) -> None:
    uuid = load_device_identity().uuid
    cloud.provision()
    fake_cloud.set_target(uuid, fleet_document(uuid, engine, commit="beef01"))
    tick_until_polled()
    wait_applied()
    apps_json.write_text(json.dumps(v3_apps_json(engine)))
    assert not load_preloaded_apps()
    assert apps_json.exists()
    loaded = load_target()
    assert loaded is not None
    assert loaded[0].apps[0].commit == "beef01"


def test_a_v2_preload_waits_while_the_cloud_cannot_name_its_apps(
    apps_json: Path, fake_cloud: FakeCloud, engine: str
) -> None:
    assert cloud.provision()
    apps_json.write_text(json.dumps(v2_apps_json(engine)))
    fake_cloud.script("GET /v7/application(*)", Scripted(503, b"busy"))
    with pytest.raises(cloud.CloudError):
        load_preloaded_apps()
    assert apps_json.exists()
    cloud_poll.cloud_tick()  # the cloud answers now: the tick loads it (then polls the cloud's)
    assert not apps_json.exists()
    stored = [json.dumps(record.document) for record in TargetRecord.objects.all()]
    assert any(FakeCloud.application_uuid(3) in document for document in stored)
