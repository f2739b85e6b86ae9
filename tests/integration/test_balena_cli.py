"""The real balena CLI against this supervisor in local mode: `balena push <device>` builds
on the engine at <device>:2375 and sets the target; `balena device logs <device>` streams
the pushed services' output (docs/local-mode.md "The balena CLI").

The CLI talks only to port 48484 of the device: the device is the session's agent as it
ships, which listens on port 48484 of a loopback address of this run's own
(SUPERVISOR_TEST_ADDRESS), with the engine relayed to port 2375 of the same address. The CLI
is installed from npm into `.cache/balena-cli` on the first run (tests/balena_cli.py).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from django.conf import settings

from supervisor_site.system_services import ServiceStartError, expose_docker_tcp, wait_until
from tests.agent_process import Agent
from tests.balena_cli import BalenaCli, balena_cli
from tests.integration.conftest import WebProcess
from tests.integration.engine_helpers import supervised_containers

pytestmark = pytest.mark.django_db(transaction=True)

DEVICE = os.environ["SUPERVISOR_TEST_ADDRESS"]
SERVICES = {"cli-main": "main says hello", "cli-worker": "worker says hello"}
PUSH_TIMEOUT = 150.0
LOGS_TIMEOUT = 60.0

COMPOSE_FILE = """\
version: "2.1"
services:
  cli-main:
    build: ./cli-main
    stop_signal: SIGKILL
  cli-worker:
    build: ./cli-worker
    stop_signal: SIGKILL
    environment:
      CLI_ENV: x
"""


@pytest.fixture(scope="module")
def docker_tcp(docker_engine: None, service_log_dir: Path) -> Iterator[None]:
    """The engine on tcp://<device>:2375, where `balena push` builds: socat in front of its
    socket as `make run` starts it."""
    try:
        relay = expose_docker_tcp(settings.DOCKER_HOST, service_log_dir, address=(DEVICE, 2375))
    except ServiceStartError as exc:
        pytest.fail(str(exc))
    yield
    if relay is not None:
        relay.stop()


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> BalenaCli:
    return balena_cli(tmp_path_factory.mktemp("balenarc"))


@pytest.fixture
def pushed_images() -> Iterator[None]:
    """Removes the images the CLI builds, after the `engine` fixture removed their containers."""
    yield
    client = docker.from_env()
    for service in SERVICES:
        for image in client.images.list(filters={"label": f"io.resin.local.service={service}"}):
            try:
                client.images.remove(image.id, force=True)
            except docker.errors.APIError as exc:
                # A test session sharing this engine may have started a container of it.
                warnings.warn(f"kept the image of {service}: {exc.explanation}", stacklevel=1)


@pytest.fixture
def device(pushed_images: None, engine: str, shipped_agent: Agent) -> Agent:
    """The session's agent: its web server on <device>:48484, its worker, its log collector."""
    assert (shipped_agent.address, shipped_agent.port) == (DEVICE, 48484)
    return shipped_agent


@pytest.fixture
def project(tmp_path: Path, busybox_image: str) -> Path:
    """A two-service compose project built FROM the test image, each service printing a line a second."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "docker-compose.yml").write_text(COMPOSE_FILE)
    for service, line in SERVICES.items():
        (root / service).mkdir()
        (root / service / "Dockerfile").write_text(
            f'FROM {busybox_image}\nCMD ["sh", "-c", "while true; do echo \'{line}\'; sleep 1; done"]\n'
        )
    return root


def run_cli(cli: BalenaCli, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a session of its own; kill its whole process group past `timeout`."""
    process = subprocess.Popen(
        cli.command(*args), env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        output, _ = process.communicate()
        pytest.fail(f"`balena {' '.join(args)}` did not end within {timeout:.0f} s:\n{output}")
    return subprocess.CompletedProcess(process.args, process.returncode, output)


def follow_until_seen(cli: BalenaCli, *args: str, expected: set[str], timeout: float) -> list[str]:
    """The lines a long-running CLI command prints until one ends with each of `expected`, or
    until `timeout`; then its process group is killed (`device logs` ignores SIGINT and SIGTERM)."""
    process = subprocess.Popen(
        cli.command(*args), env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    missing = set(expected)
    pending = b""
    deadline = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while missing and time.monotonic() < deadline:
                if not selector.select(timeout=min(1.0, max(0.0, deadline - time.monotonic()))):
                    continue
                chunk = os.read(process.stdout.fileno(), 65536)
                if not chunk:
                    break
                *complete, pending = (pending + chunk).split(b"\n")
                for raw in complete:
                    lines.append(raw.decode(errors="replace").rstrip())
                    missing -= {want for want in missing if lines[-1].endswith(want)}
    finally:
        _kill_group(process)
        process.wait(10)
        process.stdout.close()
    return lines


def _kill_group(process: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def push_detached(cli: BalenaCli, project: Path) -> None:
    result = run_cli(cli, "push", DEVICE, "--source", str(project), "--detached", timeout=PUSH_TIMEOUT)
    assert result.returncode == 0, result.stdout


def applied_status(device: WebProcess) -> dict[str, Any] | None:
    """/v2/state/status once applied with a container of every pushed service, else None."""
    status: dict[str, Any] = device.get("/v2/state/status").json()
    services = {container["serviceName"] for container in status["containers"]}
    return status if status["appState"] == "applied" and services == set(SERVICES) else None


def wait_for_pushed_services(device: WebProcess) -> dict[str, Any]:
    if not wait_until(lambda: applied_status(device) is not None, 60, interval=0.5):
        pytest.fail(f"the pushed services were not applied: {device.get('/v2/state/status').json()}")
    status = applied_status(device)
    assert status is not None
    return status


def log_lines_of_the_services() -> set[str]:
    """How `balena device logs` prints a line of each service (after its `[<time>] `)."""
    return {f"[{service}] {line}" for service, line in SERVICES.items()}


def test_push_builds_on_the_engine_and_runs_the_services(
    cli: BalenaCli, docker_tcp: None, device: WebProcess, project: Path
) -> None:
    push_detached(cli, project)

    status = wait_for_pushed_services(device)
    # Only the pushed services: another test session may share this engine.
    containers = {service: supervised_containers()[service] for service in SERVICES}
    for service, container in containers.items():
        assert container.status == "running", service
        assert f"local_{service}:latest" in container.image.tags
    assert "CLI_ENV=x" in containers["cli-worker"].attrs["Config"]["Env"]
    assert status["status"] == "success"
    assert {row["serviceName"]: row["containerId"] for row in status["containers"]} == {
        service: container.id for service, container in containers.items()
    }


def test_device_logs_shows_the_pushed_services_output(
    cli: BalenaCli, docker_tcp: None, device: WebProcess, project: Path
) -> None:
    push_detached(cli, project)
    wait_for_pushed_services(device)
    # Against a missing stream the CLI would only retry until the deadline: say why at once.
    with device.get("/v2/local/logs", stream=True) as response:
        assert response.status_code == 200, f"GET /v2/local/logs answered {response.status_code}"

    expected = log_lines_of_the_services()
    output = follow_until_seen(cli, "device", "logs", DEVICE, expected=expected, timeout=LOGS_TIMEOUT)

    assert all(any(line.endswith(want) for line in output) for want in expected), "\n".join(output)


def test_push_settles_then_streams_the_services_output(
    cli: BalenaCli, docker_tcp: None, device: WebProcess, project: Path
) -> None:
    # Not detached: the CLI follows /v2/local/logs and polls /v2/state/status for livepush.
    expected = {*log_lines_of_the_services(), "Device state settled"}
    output = follow_until_seen(
        cli, "push", DEVICE, "--source", str(project), expected=expected, timeout=PUSH_TIMEOUT
    )

    assert all(any(line.endswith(want) for line in output) for want in expected), "\n".join(output)
