"""Health-gated releases: a cloud release that fails its healthcheck or crash-loops is rolled
back to the release before it, whose images were kept, with the app's volume untouched.
Real engine, real worker, real registry, the fake cloud and the web server over HTTP."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from apps_api.apikeys import get_or_create_global_key
from apps_api.apply.single_flight import schedule_apply
from apps_api.cloud import client as cloud
from apps_api.engine import docker as engine_api
from supervisor_site.system_services import wait_until
from tests.fake_cloud import FakeCloud
from tests.integration.conftest import WebProcess, WorkerLog, lock_dir
from tests.integration.engine_helpers import supervised_containers, wait_applied
from tests.integration.test_cloud_releases import last_report, poll
from tests.integration.test_image_fetch import push_unique_image

pytestmark = pytest.mark.django_db(transaction=True)

FAILING_HEALTHCHECK = {"test": ["CMD", "false"], "interval": "1s", "timeout": "1s", "retries": 1}


@pytest.fixture
def images(registry: str, busybox_image: str) -> Iterator[list[str]]:
    """Two references in the registry, absent from the engine: the supervisor fetches them."""
    references = [f"{registry}/test/rollback:v{n}-{os.urandom(3).hex()}" for n in (1, 2)]
    for reference in references:
        push_unique_image(busybox_image, reference, megabytes=1)
    yield references
    client = docker.from_env()
    for reference in references:
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(reference, force=True)


def release(commit: str, release_id: int, image: str, *, window: int, **composition: Any) -> dict[str, Any]:
    """The fake cloud's apps: app 3 "userapp" at `commit`, one service `main` mounting `data`."""
    labels = {"io.balena.update.health-window": str(window)}
    labels.update(composition.pop("labels", {}))
    main = {
        "id": 3,
        "image_id": release_id * 10,
        "image": image,
        "environment": {},
        "labels": labels,
        "composition": {
            "command": ["sleep", "100000"],
            "stop_signal": "SIGKILL",
            "volumes": ["data:/data"],
            **composition,
        },
    }
    the_release = {"id": release_id, "services": {"main": main}, "volumes": {"data": {}}, "networks": {}}
    return {"useruuid": {"id": 3, "name": "userapp", "releases": {commit: the_release}}}


def wait_for_line(log: WorkerLog, text: str, timeout: float = 60) -> str:
    if not wait_until(lambda: log.lines_with(text), timeout, interval=0.2):
        pytest.fail(f"no log line with {text!r} after {timeout} s")
    return log.lines_with(text)[0]


def wait_running(commit: str, timeout: float = 60) -> Any:
    """The `main` container once it runs `commit` and the apply is over."""

    def running() -> bool:
        main = supervised_containers().get("main")
        return main is not None and main.name.endswith(f"_{commit}") and main.status == "running"

    if not wait_until(running, timeout, interval=0.2):
        pytest.fail(f"main is not running release {commit}: {supervised_containers()}")
    wait_applied()
    return supervised_containers()["main"]


def app_state(web: WebProcess) -> dict[str, Any]:
    response = web.get("/v2/applications/state", params={"apikey": get_or_create_global_key().key})
    assert response.status_code == 200, response.text
    return dict(response.json()["userapp"])


def test_a_release_failing_its_healthcheck_then_one_crash_looping_both_end_on_the_previous_release(
    fake_cloud: FakeCloud, engine: str, images: list[str], shared_web: WebProcess, worker_log: WorkerLog
) -> None:
    v1, v2 = images
    cloud.provision()
    poll(fake_cloud, release("c1", 101, v1, window=2))
    wait_for_line(worker_log, "Release c1 of app 'userapp' committed")
    first = supervised_containers()["main"]
    assert first.exec_run(["sh", "-c", "echo precious > /data/file"]).exit_code == 0

    # Release 2's healthcheck never passes.
    poll(fake_cloud, release("c2", 102, v2, window=3, healthcheck=FAILING_HEALTHCHECK))
    assert supervised_containers()["main"].name.endswith("_c2")
    assert engine_api.image_id(v1) is not None  # kept while release 2 is on probation

    line = wait_for_line(worker_log, "Rolling back release c2 of app 'userapp'")
    assert line.endswith("Rolling back release c2 of app 'userapp': service 'main' is unhealthy after 3 s")
    back = wait_running("c1")
    assert back.exec_run(["cat", "/data/file"]).output == b"precious\n"
    state = app_state(shared_web)
    assert (state["commit"], state["updateStatus"], state["failedRelease"]) == (
        "c1",
        "failed",
        {"commit": "c2", "reason": "service 'main' is unhealthy after 3 s"},
    )

    # The same target again: release 2 is not tried again.
    poll(fake_cloud, release("c2", 102, v2, window=3, healthcheck=FAILING_HEALTHCHECK))
    schedule_apply()
    wait_applied()
    assert supervised_containers()["main"].id == back.id

    # Release 3 crash-loops.
    crashing = release("c3", 103, v2, window=5, command=["sh", "-c", "exit 1"], restart="always",
                       labels={"io.balena.update.health-restarts": "1"})  # fmt: skip
    poll(fake_cloud, crashing)
    line = wait_for_line(worker_log, "Rolling back release c3 of app 'userapp'")
    assert "service 'main' restarted" in line
    assert "within 5 s (limit 1)" in line
    back = wait_running("c1")
    assert back.exec_run(["cat", "/data/file"]).output == b"precious\n"
    assert app_state(shared_web)["failedRelease"]["commit"] == "c3"
    app_report = last_report(fake_cloud)["apps"]["useruuid"]
    assert app_report["release_uuid"] == "c1"
    # The release running again is reported with its services, so the cloud keeps its images.
    assert app_report["releases"] == {
        "c3": {"update_status": "aborted", "services": {}},
        "c1": {"update_status": "done", "services": {"main": {"image": v1, "status": "Running"}}},
    }
    assert worker_log.lines_with("Rolling back release c1") == []


def test_a_first_release_that_fails_is_left_running_and_reported_failed(
    fake_cloud: FakeCloud, engine: str, shared_web: WebProcess, worker_log: WorkerLog
) -> None:
    cloud.provision()
    poll(fake_cloud, release("c1", 101, engine, window=2, healthcheck=FAILING_HEALTHCHECK))
    running = supervised_containers()["main"]

    line = wait_for_line(worker_log, "Release c1 of app 'userapp' failed")
    assert line.endswith(
        "Release c1 of app 'userapp' failed: service 'main' is unhealthy after 2 s; "
        "there is no previous release to roll back to"
    )
    wait_applied()
    assert supervised_containers()["main"].id == running.id
    state = app_state(shared_web)
    assert (state["commit"], state["updateStatus"]) == ("c1", "failed")
    assert state["failedRelease"]["commit"] == "c1"


def test_a_rollback_waits_for_the_apps_update_lock(
    fake_cloud: FakeCloud, engine: str, worker_log: WorkerLog
) -> None:
    cloud.provision()
    poll(fake_cloud, release("c1", 101, engine, window=1))
    wait_for_line(worker_log, "Release c1 of app 'userapp' committed")
    poll(fake_cloud, release("c2", 102, engine, window=2, healthcheck=FAILING_HEALTHCHECK))
    failing = supervised_containers()["main"]
    lock = lock_dir("main", app_id=3) / "updates.lock"
    lock.write_text("mine")

    wait_for_line(worker_log, "Rolling back release c2 of app 'userapp'")
    wait_for_line(worker_log, "Updates are locked")
    assert supervised_containers()["main"].id == failing.id

    lock.unlink()
    wait_running("c1")
