"""Session fixtures that start the real services the integration tests drive.

Each service is started only when absent and stopped only if started here.
Tests whose worker-side code writes to the database must use `transactional_db`:
a `db` test holds SQLite's write lock for its whole length.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings

from supervisor_site.system_services import ensure_dockerd, wait_until
from tests import agent_client
from tests.agent_process import Agent, processes
from tests.balena_cli import install_in_background
from tests.host_bus import HostBus
from tests.route_coverage import AGENT_ADDRESSES, record_if_agent
from tests.systemd_units import UnitsAgent

PROJECT_DIR = Path(__file__).resolve().parent.parent
BUSYBOX_IMAGE = "local/busybox:latest"
BUSYBOX_APPLETS = ["sh", "sleep", "echo", "cat", "ls", "env", "date", "seq", "true", "false", "kill"]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The session's data dir goes, unless a test failed: its logs (log/agent.log,
    dockerd.log, registry.log) are what the failure messages point at."""
    if hasattr(session.config, "workerinput"):
        return
    data_dir = os.environ["SUPERVISOR_TEST_DATA_DIR"]
    if exitstatus == 0:
        shutil.rmtree(data_dir, ignore_errors=True)
    else:
        print(f"\nservice logs kept in {data_dir}/log")


BALENA_CLI_TESTS = ("tests/integration/test_balena_cli.py", "tests/integration/test_localmode_command.py")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The route check last: it reads what every other test called. The balena CLI, when its
    tests run, installed meanwhile."""
    last = [item for item in items if item.name == "test_every_route_is_called_through_the_shipped_agent"]
    for item in last:
        items.remove(item)
        items.append(item)
    if any(item.nodeid.startswith(BALENA_CLI_TESTS) for item in items):
        install_in_background()


@pytest.fixture(scope="session")
def service_log_dir() -> Path:
    path = Path(settings.SUPERVISOR_DATA_DIR) / "log"
    path.mkdir(parents=True, exist_ok=True)
    return path


ENGINE_LOCK = Path("/run/lock/supervisor-tests-engine.lock")
AGENT_TITLES = ("supervisor: parent", "supervisor: agent")  # `make run`'s, and the units' agent


@pytest.fixture(scope="session")
def docker_engine(service_log_dir: Path) -> Iterator[None]:
    """The engine, held by this run alone: the agent under test owns every supervised
    container on it, so a second run, or any other agent on this machine (a `make run`, the
    installed unit), beside it would fight over them; the run stops at once, saying so."""
    ENGINE_LOCK.parent.mkdir(parents=True, exist_ok=True)
    lock = open(ENGINE_LOCK, "a+")  # noqa: SIM115 - held for the whole session
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        pytest.exit(f"another test run uses this Docker engine ({lock.read().strip()}); run one at a time", 3)
    lock.truncate(0)
    lock.write(f"pid {os.getpid()}, data dir {settings.SUPERVISOR_DATA_DIR}\n")
    lock.flush()
    if agents := [pid for pid, title in processes().items() if title.startswith(AGENT_TITLES)]:
        pytest.exit(f"an agent already runs on this machine (pid {agents[0]}): it and the tests' agent "
                    "would reconcile the same engine's containers; stop it first", 3)  # fmt: skip
    started = ensure_dockerd(settings.DOCKER_HOST, service_log_dir)
    yield
    if started is not None:
        started.stop()


@pytest.fixture(scope="session")
def busybox_image(docker_engine: None) -> str:
    """local/busybox:latest, imported from Debian's static busybox (nothing can be pulled)."""
    if subprocess.run(["docker", "image", "inspect", BUSYBOX_IMAGE], capture_output=True).returncode == 0:
        return BUSYBOX_IMAGE
    with tempfile.TemporaryDirectory() as root:
        bin_dir = Path(root, "bin")
        bin_dir.mkdir()
        shutil.copy("/bin/busybox", bin_dir / "busybox")
        for applet in BUSYBOX_APPLETS:
            (bin_dir / applet).symlink_to("busybox")
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["docker", "import", "-", BUSYBOX_IMAGE], stdin=tar.stdout, check=True, capture_output=True
        )
        assert tar.wait() == 0
    return BUSYBOX_IMAGE


@pytest.fixture
def managed_device() -> Iterator[None]:
    """config.json names a cloud (nothing listens there): the device API wants a key."""
    from hostcfg.identity import load_device_identity, read_config_json, write_config_json

    path = Path(settings.SUPERVISOR_CONFIG_JSON)
    load_device_identity()
    original = read_config_json(path)
    write_config_json(path, {**original, "apiEndpoint": "http://127.0.0.1:9"})
    try:
        yield
    finally:
        write_config_json(path, original)


@pytest.fixture(scope="session")
def host_bus_daemon() -> Iterator[HostBus]:
    bus = HostBus(Path(settings.SUPERVISOR_DBUS_ADDRESS.removeprefix("unix:path=")))
    bus.start()
    yield bus
    bus.stop()


@pytest.fixture
def host_bus(host_bus_daemon: HostBus) -> HostBus:
    """The private system bus with logind and systemd stand-ins, calls and units reset."""
    host_bus_daemon.reset()
    return host_bus_daemon


@pytest.fixture(scope="session")
def shipped_agent(
    docker_engine: None,
    busybox_image: str,
    host_bus_daemon: HostBus,
    django_db_setup: None,
    django_db_blocker: Any,
    service_log_dir: Path,
) -> Iterator[Agent]:
    """The agent as a device's systemd units run it (tests/systemd_units.py: its own
    redis-server on a unix socket, and the agent process with the web server and the worker,
    each started again when it ends), on the tests' data dir, database and private system bus.
    The agents the tests start for themselves run as `make run` starts them (the parent).

    Started once for the session; the `engine` fixture resets what the tests change. The
    disruptive-action limit is off: the suite acts on its containers far more often than a
    minute allows any client (tests/integration/test_action_limits.py runs the defaults)."""
    data_dir = Path(settings.SUPERVISOR_DATA_DIR)
    agent = UnitsAgent(
        data_dir,
        port=settings.SUPERVISOR_PORT,
        address=os.environ["SUPERVISOR_TEST_ADDRESS"],
        host_root=Path(settings.SUPERVISOR_HOST_ROOT),
        log_file=service_log_dir / "agent.log",
        extra_env={
            "SUPERVISOR_LED_FILE": settings.SUPERVISOR_LED_FILE,
            "SUPERVISOR_DBUS_ADDRESS": settings.SUPERVISOR_DBUS_ADDRESS,
            "SUPERVISOR_FIREWALL_NETNS": os.environ["SUPERVISOR_FIREWALL_NETNS"],
            "SUPERVISOR_ACTION_RATE_LIMIT": "0",
            "SUPERVISOR_BLINK_SECONDS": "3",  # the blink's course, in a fifth of the time
        },
    )
    with django_db_blocker.unblock():
        from django.db import connections

        connections.close_all()  # the agent writes the database from now on
    agent.start()
    AGENT_ADDRESSES.add((agent.address, agent.port))
    agent_client.BASE_URL.append(agent.base_url)
    yield agent
    agent_client.BASE_URL.remove(agent.base_url)
    stopped_in = time.monotonic()
    agent.stop()
    assert time.monotonic() - stopped_in < 10, f"the agent took over 10 s to stop; see {agent.log_path}"


@pytest.fixture(scope="session")
def redis_server(shipped_agent: Agent) -> str:
    """The session agent's own redis-server (its unix socket), which the tests read too."""
    return settings.REDIS_URL


@pytest.fixture(scope="session", autouse=True)
def calls_to_agents_recorded() -> Iterator[None]:
    """Every `requests` call to an agent the tests started counts for the route check."""
    send = requests.Session.send

    def recording_send(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> Any:
        record_if_agent(request.method or "GET", request.url or "")
        return send(self, request, **kwargs)

    requests.Session.send = recording_send  # type: ignore[method-assign]
    yield
    requests.Session.send = send  # type: ignore[method-assign]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def registry(
    docker_engine: None, service_log_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real Docker registry on loopback; yields its address (`127.0.0.1:<port>`).

    The engine accepts loopback registries over plain HTTP without configuration.
    """
    import urllib.request

    root = tmp_path_factory.mktemp("registry")
    port = _free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n"
    )
    with open(service_log_dir / "registry.log", "ab") as log:
        process = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
        )

    def answers() -> bool:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).status == 200
        except OSError:
            return False

    try:
        if not wait_until(lambda: answers() or process.poll() is not None, 30) or process.poll() is not None:
            pytest.fail(f"docker-registry did not start; see {service_log_dir / 'registry.log'}")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(20)
