"""The README's commands as a new user runs them: `make run` starts the agent and answers,
`make apikey` prints the key the API accepts, Ctrl-C stops it within 10 s and the apps run on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests

from supervisor_site.system_services import wait_until
from tests.agent_process import PROJECT_DIR, free_port
from tests.integration.engine_helpers import SUPERVISED, local_target

pytestmark = pytest.mark.services


@pytest.fixture
def make_env(tmp_path: Path, busybox_image: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPERVISOR_", "REDIS_URL", "DJANGO_"))}
    env.update(
        SUPERVISOR_DATA_DIR=str(tmp_path / "data"),
        SUPERVISOR_HOST_ROOT=str(tmp_path / "host"),
        SUPERVISOR_LED_FILE=str(tmp_path / "led0"),
        SUPERVISOR_PORT=str(free_port()),
        SUPERVISOR_LISTEN_ADDRESS="127.0.0.1",
        # The tests' private bus and network namespace, never the host's.
        SUPERVISOR_DBUS_ADDRESS=os.environ["SUPERVISOR_DBUS_ADDRESS"],
        SUPERVISOR_FIREWALL_NETNS=os.environ["SUPERVISOR_FIREWALL_NETNS"],
    )
    return env


@pytest.fixture
def make_run(make_env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(tmp_path / "make-run.log", "wb") as log:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "run"], cwd=PROJECT_DIR, env=make_env,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    yield process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    for container in docker.from_env().containers.list(all=True, filters={"label": "io.balena.app-id=71"}):
        container.remove(force=True, v=True)
    for network in docker.from_env().networks.list(filters={"label": "io.balena.app-id=71"}):
        network.remove()


def test_make_run_answers_make_apikey_is_accepted_and_ctrl_c_leaves_the_apps_running(
    make_env: dict[str, str], make_run: subprocess.Popen[bytes], busybox_image: str, tmp_path: Path
) -> None:
    base = f"http://127.0.0.1:{make_env['SUPERVISOR_PORT']}"

    def answers() -> bool:
        try:
            return requests.get(f"{base}/ping", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    assert wait_until(lambda: answers() or make_run.poll() is not None, 60), (
        tmp_path / "make-run.log"
    ).read_text()
    assert make_run.poll() is None, (tmp_path / "make-run.log").read_text()
    document = local_target({"main": {}}, image=busybox_image)
    document["local"]["apps"]["71"] = document["local"]["apps"].pop("1")
    assert requests.post(f"{base}/v2/local/target-state", json=document, timeout=30).status_code == 200

    def running() -> list[str]:
        listed = docker.from_env().api.containers(filters={**SUPERVISED, "label": "io.balena.app-id=71"})
        return [c["Id"] for c in listed]

    assert wait_until(lambda: len(running()) == 1, 60)
    # A managed device (config.json names a cloud): the API now wants the key.
    config_json = Path(make_env["SUPERVISOR_DATA_DIR"]) / "boot" / "config.json"
    config_json.write_text(
        json.dumps({**json.loads(config_json.read_text()), "apiEndpoint": "http://127.0.0.1:9"})
    )
    apikey = subprocess.run(["make", "--no-print-directory", "-s", "apikey"], cwd=PROJECT_DIR, env=make_env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    key = apikey.stdout.strip()
    assert apikey.returncode == 0, apikey.stderr
    assert key
    assert requests.get(f"{base}/v1/device", timeout=10).status_code == 401
    assert (
        requests.get(f"{base}/v1/device", headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code
        == 200
    )

    container = running()
    interrupted = time.monotonic()
    os.killpg(make_run.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
    make_run.wait(30)
    assert time.monotonic() - interrupted < 10
    assert not answers()
    assert running() == container, "the app's container stopped with the agent"
