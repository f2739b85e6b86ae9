"""The real balena CLI against this supervisor in local mode: `balena push 127.0.0.1` builds
on the engine at 127.0.0.1:2375 and sets the target; `balena device logs 127.0.0.1` streams
the pushed services' output (spec/balena-cli.md).

The CLI only talks to port 48484 of the device, so the web process under test listens
there, on the tests' own database, Redis, worker and engine. The CLI is installed from npm
into `.cache/balena-cli` on the first run (tests/balena_cli.py).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from django.conf import settings

from supervisor_site.system_services import ServiceStartError, StartedService, expose_docker_tcp, wait_until
from tests.balena_cli import BalenaCli, balena_cli
from tests.integration.conftest import PROJECT_DIR, WebProcess, agent_environment, launch_web, stop_web
from tests.integration.engine_helpers import supervised_containers

pytestmark = pytest.mark.django_db(transaction=True)

DEVICE = "127.0.0.1"
SUPERVISOR_PORT = 48484
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


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def docker_tcp(docker_engine: None, service_log_dir: Path) -> Iterator[None]:
    """The engine on tcp://127.0.0.1:2375, where `balena push` builds: socat in front of its
    socket as `make run` starts it, unless an engine answers there already."""
    try:
        relay = expose_docker_tcp(settings.DOCKER_HOST, service_log_dir)
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


def _shared_settings() -> dict[str, str]:
    """The variables that make a supervisor process use the tests' database and Redis."""
    return {
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "SUPERVISOR_TEST_DATA_DIR": str(settings.SUPERVISOR_DATA_DIR),
        "SUPERVISOR_TEST_REDIS_URL": settings.REDIS_URL,
    }


@pytest.fixture
def device(pushed_images: None, engine: str, tmp_path: Path) -> Iterator[WebProcess]:
    """The supervisor's web process on 127.0.0.1:48484, sharing the tests' database and worker."""
    if _listening(SUPERVISOR_PORT):
        pytest.fail(
            f"port {SUPERVISOR_PORT} is taken (a `make run`?): the balena CLI talks only to that port"
        )
    web = launch_web(Path(settings.SUPERVISOR_DATA_DIR), tmp_path, port=SUPERVISOR_PORT, **_shared_settings())
    yield web
    stop_web(web)


@pytest.fixture
def log_collector(device: WebProcess, tmp_path: Path) -> Iterator[None]:
    """`manage.py collect_logs`, the log collection the agent's worker runs, on the tests' settings."""
    with open(tmp_path / "collect_logs.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "collect_logs"], cwd=PROJECT_DIR,
            env=agent_environment(Path(settings.SUPERVISOR_DATA_DIR), **_shared_settings()),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    yield
    StartedService("collect_logs", process).stop()


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
    cli: BalenaCli, docker_tcp: None, device: WebProcess, log_collector: None, project: Path
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
    cli: BalenaCli, docker_tcp: None, device: WebProcess, log_collector: None, project: Path
) -> None:
    # Not detached: the CLI follows /v2/local/logs and polls /v2/state/status for livepush.
    expected = {*log_lines_of_the_services(), "Device state settled"}
    output = follow_until_seen(
        cli, "push", DEVICE, "--source", str(project), expected=expected, timeout=PUSH_TIMEOUT
    )

    assert all(any(line.endswith(want) for line in output) for want in expected), "\n".join(output)
