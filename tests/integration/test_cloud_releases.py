"""Cloud releases as balenaCloud sends them: what is not ours is never run, contracts are
judged against this device. Real engine, real worker, the fake cloud over HTTP."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import docker
import pytest
from django.conf import settings

from apps_api.cloud import client as cloud
from apps_api.cloud import poll as cloud_poll
from apps_api.cloud import report as cloud_report
from apps_api.redis_store import CLOUD_REPORT_KEY, redis_client
from hostcfg.identity import load_device_identity
from hostcfg.report_cache import report_cache_path
from tests.fake_cloud import FakeCloud
from tests.integration.engine_helpers import supervised_containers, wait_applied

pytestmark = pytest.mark.django_db(transaction=True)

SUPERVISOR_APP_UUID = "52e35121417640b1b28a680504e4039b"
NEVER_PULLED = "127.0.0.1:9/never-pulled:v1"  # nothing listens there: a pull would fail the apply


def service(
    service_id: int, image: str, *, labels: dict[str, str] | None = None, **fields: Any
) -> dict[str, Any]:
    composition = {"command": ["sleep", "100000"], "stop_signal": "SIGKILL", **fields.pop("composition", {})}
    return {"id": service_id, "image_id": service_id * 10, "image": image, "environment": {},
            "labels": labels or {}, "composition": composition, **fields}  # fmt: skip


def app(
    app_id: int, name: str, services: dict[str, Any], *, commit: str = "c0ffee", **fields: Any
) -> dict[str, Any]:
    return {
        "id": app_id,
        "name": name,
        "releases": {commit: {"id": app_id * 100, "services": services}},
        **fields,
    }


def poll(fake_cloud: FakeCloud, apps: dict[str, Any]) -> None:
    uuid = load_device_identity().uuid
    fake_cloud.set_target(uuid, {uuid: {"name": "fleet-device", "config": {}, "apps": apps}})
    cloud_poll.request_poll_now(force=False)
    cloud_poll.cloud_tick()
    wait_applied()


def last_report(fake_cloud: FakeCloud) -> dict[str, Any]:
    # A whole report, not the difference from the last one (kept in Redis and on the host).
    redis_client().delete(CLOUD_REPORT_KEY)
    report_cache_path(Path(settings.SUPERVISOR_HOST_ROOT)).unlink(missing_ok=True)
    assert cloud_report.report_state_if_due()
    uuid = load_device_identity().uuid
    return dict(fake_cloud.requests_to("PATCH", "/device/v3/state")[-1].body[uuid])


def test_only_the_user_app_of_a_target_with_the_supervisor_and_host_apps_runs(
    fake_cloud: FakeCloud, engine: str
) -> None:
    cloud.provision()
    apps = {
        SUPERVISOR_APP_UUID: app(1, "amd64-supervisor", {"balena-supervisor": service(1, NEVER_PULLED)}),
        "hostosuuid": app(2, "generic-amd64", {"hostos": service(2, NEVER_PULLED)}, is_host=True),
        "useruuid": app(3, "userapp", {
            "main": service(3, engine),
            "resin-supervisor": service(4, NEVER_PULLED),
            "firmware": service(5, NEVER_PULLED, labels={"io.balena.image.class": "overlay"}),
            "rootfs": service(6, NEVER_PULLED, composition={"labels": {"io.balena.image.store": "root"}}),
        }),
    }  # fmt: skip

    poll(fake_cloud, apps)

    containers = docker.DockerClient(base_url=settings.DOCKER_HOST).containers.list(all=True)
    assert [c.name for c in containers if c.labels.get("io.balena.supervised")] == [
        supervised_containers()["main"].name
    ]
    assert supervised_containers()["main"].status == "running"
    report = last_report(fake_cloud)
    assert list(report["apps"]) == ["useruuid"]
    assert list(report["apps"]["useruuid"]["releases"]["c0ffee"]["services"]) == ["main"]
    assert report["apps"]["useruuid"]["releases"]["c0ffee"]["update_status"] == "done"


def test_a_release_whose_contract_does_not_fit_is_rejected_and_the_running_one_stays(
    fake_cloud: FakeCloud, engine: str, caplog: pytest.LogCaptureFixture
) -> None:
    cloud.provision()
    poll(fake_cloud, {"useruuid": app(3, "userapp", {"main": service(3, engine)})})
    running = supervised_containers()["main"]
    newer_supervisor = {"requires": [{"type": "sw.supervisor", "version": ">=99.0.0"}]}
    other_board = {"requires": [{"type": "hw.device-type", "slug": "no-such-board"}]}
    caplog.set_level(logging.INFO)

    needs_newer = {"main": service(3, engine, contract=newer_supervisor)}
    poll(fake_cloud, {
        "useruuid": app(3, "userapp", needs_newer, commit="beef01"),
        "otheruuid": app(4, "otherapp", {
            "web": service(7, engine),
            "gpu": service(8, engine, contract=other_board, labels={"io.balena.features.optional": "true"}),
        }),
    })  # fmt: skip

    containers = supervised_containers()
    assert sorted(containers) == ["main", "web"]
    assert containers["main"].id == running.id  # the release it ran before, untouched
    assert containers["main"].status == "running"
    messages = [r.getMessage() for r in caplog.records]
    assert (
        "Some releases were rejected: app 'userapp': service 'main' requires sw.supervisor >=99.0.0 "
        f"(device has {settings.SUPERVISOR_VERSION})"
    ) in messages
    dropped = "Optional service 'otherapp/gpu' left out: it requires hw.device-type no-such-board"
    assert any(m.startswith(dropped) for m in messages)
    report = last_report(fake_cloud)
    assert report["apps"]["useruuid"]["releases"]["beef01"]["update_status"] == "rejected"
    assert report["apps"]["otheruuid"]["releases"]["c0ffee"]["update_status"] == "done"


def test_a_release_that_cannot_run_is_rejected_and_said_the_rest_applies_and_the_running_one_stays(
    fake_cloud: FakeCloud, engine: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A port the original cannot parse either fails its apply; here that app's release is
    rejected (the cloud told: update_status and a log line), its running release untouched,
    and the other app of the target updates."""
    cloud.provision()
    poll(fake_cloud, {"useruuid": app(3, "userapp", {"main": service(3, engine)})})
    running = supervised_containers()["main"]
    caplog.set_level(logging.INFO)

    unparsable = service(3, engine, composition={"ports": ["80:80/sctp"]})
    poll(fake_cloud, {
        "useruuid": app(3, "userapp", {"main": unparsable}, commit="beef01"),
        "otheruuid": app(4, "otherapp", {"web": service(7, engine)}),
    })  # fmt: skip

    containers = supervised_containers()
    assert sorted(containers) == ["main", "web"]
    assert containers["main"].id == running.id
    assert containers["main"].labels["io.balena.app-uuid"] == "useruuid"
    said = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("Could not move app 'userapp'")
    ]
    assert said == [
        "Could not move app 'userapp' to release beef01: "
        f"{load_device_identity().uuid}.apps.useruuid.releases.beef01.services.main.composition.ports.0: "
        "invalid port protocol 'sctp'"
    ]
    report = last_report(fake_cloud)
    assert report["apps"]["useruuid"]["releases"]["beef01"] == {"update_status": "rejected", "services": {}}
    assert report["apps"]["useruuid"]["release_uuid"] == "c0ffee"
    assert report["apps"]["otheruuid"]["releases"]["c0ffee"]["update_status"] == "done"


def test_a_target_the_original_refuses_whole_is_said_once_and_the_apps_keep_running(
    fake_cloud: FakeCloud, engine: str, caplog: pytest.LogCaptureFixture
) -> None:
    cloud.provision()
    poll(fake_cloud, {"useruuid": app(3, "userapp", {"main": service(3, engine)})})
    running = supervised_containers()["main"].id
    caplog.set_level(logging.INFO)
    unreadable = app(3, "userapp", {"main": service(3, engine)}, commit="beef01")
    unreadable["id"] = "three"  # the original's schema refuses the whole target for it

    for _ in range(2):
        poll(fake_cloud, {"useruuid": unreadable})
        cloud_poll.request_poll_now(force=False)
        cloud_poll.cloud_tick()  # the same target again: 304

    refused = [r.getMessage() for r in caplog.records if "Invalid target state" in r.getMessage()]
    assert len(refused) == 2, "said once per target the cloud sends, not at every poll"
    assert refused[0].startswith("Could not move to new release: Invalid target state. ")
    assert "apps.useruuid.id: invalid id 'three'" in refused[0]
    assert supervised_containers()["main"].id == running


def test_a_bind_mount_in_a_cloud_release_is_left_out_and_the_release_runs(
    fake_cloud: FakeCloud, engine: str, caplog: pytest.LogCaptureFixture
) -> None:
    cloud.provision()
    caplog.set_level(logging.WARNING)
    binding = service(3, engine, composition={"volumes": ["/etc:/host-etc:ro", "/data"]})

    poll(fake_cloud, {"useruuid": app(3, "userapp", {"main": binding})})

    container = supervised_containers()["main"]
    assert container.status == "running"
    assert [
        m["Destination"] for m in container.attrs["Mounts"] if m["Destination"] in ("/host-etc", "/data")
    ] == ["/data"]
    assert any("Ignoring bind mount '/etc:/host-etc'" in r.getMessage() for r in caplog.records)


def test_memory_sizes_are_read_as_docker_compose_writes_them_and_an_unreadable_one_is_no_limit(
    fake_cloud: FakeCloud, engine: str, caplog: pytest.LogCaptureFixture
) -> None:
    cloud.provision()
    caplog.set_level(logging.WARNING)
    limited = service(3, engine, composition={"mem_limit": "1.5g"})
    unreadable = service(4, engine, composition={"mem_limit": "lots"})

    poll(fake_cloud, {"useruuid": app(3, "userapp", {"main": limited, "side": unreadable})})

    containers = supervised_containers()
    assert containers["main"].status == containers["side"].status == "running"
    assert containers["main"].attrs["HostConfig"]["Memory"] == 1536 * 1024 * 1024
    assert containers["side"].attrs["HostConfig"]["Memory"] == 0
    assert any(
        "Ignoring invalid memory size 'lots'" in r.getMessage() and "side" in r.getMessage()
        for r in caplog.records
    )


def test_with_deltas_asked_for_it_is_said_once_and_images_are_pulled_whole(
    engine: str, registry: str, caplog: pytest.LogCaptureFixture
) -> None:
    from apps_api.host_ops.device_config import DELTAS_UNSUPPORTED, apply_device_config
    from apps_api.target.documents import parse_local_target
    from tests.integration.engine_helpers import apply, local_target

    (Path(settings.SUPERVISOR_DATA_DIR) / "applied-device-config.json").unlink(missing_ok=True)
    image = f"{registry}/delta-test:v1"
    client = docker.DockerClient(base_url=settings.DOCKER_HOST)
    client.images.get(engine).tag(image)
    client.images.push(image)
    client.images.remove(image)
    caplog.set_level(logging.INFO)
    with_deltas = {"RESIN_SUPERVISOR_DELTA": "1", "SUPERVISOR_DELTA_VERSION": "3"}

    for config in (with_deltas, {**with_deltas, "SUPERVISOR_POLL_INTERVAL": "600000"}):
        document = local_target({"main": {}}, image=image, config=config)
        apply_device_config(parse_local_target(document))
        apply(document)

    messages = [r.getMessage() for r in caplog.records]
    assert messages.count(DELTAS_UNSUPPORTED) == 1
    # Never announced as applied: only the poll interval was.
    assert [m for m in messages if m.startswith("Applying configuration change")] == [
        'Applying configuration change {"SUPERVISOR_POLL_INTERVAL":"600000"}'
    ]
    assert supervised_containers()["main"].status == "running"
    assert client.images.get(image).id == client.images.get(engine).id
    (Path(settings.SUPERVISOR_DATA_DIR) / "applied-device-config.json").unlink()
