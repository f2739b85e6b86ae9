"""An upgrade keeps everything: the agent of the release at commit 225373c runs a 3-service
target on a data dir, stops, and this agent starts on the same data dir: the same
containers, none recreated or restarted, the state read right, the global key the same."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from supervisor_site.system_services import wait_until
from tests.agent_process import PROJECT_DIR, Agent, free_port
from tests.conftest import BUSYBOX_IMAGE
from tests.integration.conftest import launch_web, manage
from tests.integration.engine_helpers import SUPERVISED

OLD_RELEASE = "225373c"


@pytest.fixture
def old_release(tmp_path: Path) -> Iterator[Path]:
    """A checkout of the older release beside this one (a git worktree; the same virtualenv:
    its requirements are these)."""
    checkout = tmp_path / "old-release"
    added = subprocess.run(["git", "worktree", "add", "--detach", str(checkout), OLD_RELEASE],
                           cwd=PROJECT_DIR, capture_output=True, text=True)  # fmt: skip
    assert added.returncode == 0, f"this test needs the repository's history: {added.stderr}"
    yield checkout
    subprocess.run(
        ["git", "worktree", "remove", "--force", str(checkout)], cwd=PROJECT_DIR, capture_output=True
    )


def three_services() -> dict[str, Any]:
    def service(name: str, image_id: int, **fields: Any) -> dict[str, Any]:
        return {"serviceName": name, "imageId": image_id, "image": BUSYBOX_IMAGE,
                "environment": {"NAME": name}, "labels": {}, "command": ["sleep", "100000"],
                "stop_signal": "SIGKILL", **fields}  # fmt: skip

    services = {
        "1": service("main", 1, volumes=["data:/data"], ports=["18080:80"]),
        "2": service("worker", 2, depends_on=["main"], networks=["backend"]),
        "3": service("side", 3, labels={"io.balena.features.supervisor-api": "1"}),
    }
    app = {"name": "upgraded", "commit": "c0ffee", "releaseId": 7, "services": services,
           "volumes": {"data": {}}, "networks": {"backend": {}}}  # fmt: skip
    return {"local": {"name": "upgrading-device", "config": {}, "apps": {"1": app}}}


def running_containers() -> dict[str, tuple[str, str]]:
    """Service name → (container id, when it started), for the supervised containers."""
    containers = docker.from_env().containers.list(all=True, filters=SUPERVISED)
    return {c.labels["io.balena.service-name"]: (c.id, c.attrs["State"]["StartedAt"]) for c in containers
            if c.status == "running"}  # fmt: skip


def applied(agent: Agent) -> bool:
    status = requests.get(agent.url("/v2/state/status"), timeout=10).json()
    return status["appState"] == "applied" and len(running_containers()) == 3


def test_an_upgrade_from_the_older_release_keeps_every_container(
    old_release: Path, tmp_path: Path, docker_engine: None
) -> None:
    data_dir = tmp_path / "data"
    # The host's OS version, which the older release left out of every container and this one
    # puts in: its containers are kept all the same (container_config.EARLIER_HASHES).
    os_release = data_dir / "host" / "etc" / "os-release"
    os_release.parent.mkdir(parents=True)
    os_release.write_text('PRETTY_NAME="balenaOS 6.0.24"\n')
    port = free_port()  # the same for both, as on a device (it is in the API's address apps get)
    old = launch_web(data_dir, tmp_path, project_dir=old_release, port=port)
    try:
        answer = requests.post(old.url("/v2/local/target-state"), json=three_services(), timeout=30)
        assert answer.status_code == 200, answer.text
        assert wait_until(lambda: applied(old), 120), "the older release did not apply its target"
        before = running_containers()
        key = manage(old.env, "apikey", project_dir=old_release).stdout.strip()
        assert key
    finally:
        old.stop()

    new = launch_web(data_dir, tmp_path, port=port)
    try:
        assert wait_until(lambda: applied(new), 120)
        state = requests.get(new.url("/v2/applications/state"), timeout=10).json()
        assert manage(new.env, "apikey").stdout.strip() == key
        after = running_containers()
    finally:
        new.stop()
        for container in docker.from_env().containers.list(all=True, filters=SUPERVISED):
            container.remove(force=True, v=True)
    assert after == before, "the same containers, none recreated or restarted"
    assert "made when BALENA_HOST_OS_VERSION was empty" in new.log_text()
    services = state["upgraded"]["services"]
    assert {name: (s["status"], s["releaseId"]) for name, s in services.items()} == {
        "main": ("Running", 7),
        "worker": ("Running", 7),
        "side": ("Running", 7),
    }
