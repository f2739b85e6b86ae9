"""Session fixtures that start the real services the integration tests drive.

Each service is started only when absent and stopped only if started here.
Tests whose worker-side code writes to the database must use `transactional_db`:
a `db` test holds SQLite's write lock for its whole length.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from supervisor_site.system_services import ensure_dockerd, ensure_redis, wait_until
from tests.host_bus import HostBus

PROJECT_DIR = Path(__file__).resolve().parent.parent
BUSYBOX_IMAGE = "local/busybox:latest"
BUSYBOX_APPLETS = ["sh", "sleep", "echo", "cat", "ls", "env", "date", "seq", "true", "false", "kill"]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not hasattr(session.config, "workerinput"):
        shutil.rmtree(os.environ["SUPERVISOR_TEST_DATA_DIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def service_log_dir() -> Path:
    path = Path(settings.SUPERVISOR_DATA_DIR) / "log"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def docker_engine(service_log_dir: Path) -> Iterator[None]:
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


@pytest.fixture(scope="session")
def redis_server(service_log_dir: Path) -> Iterator[str]:
    started = ensure_redis(settings.REDIS_URL, service_log_dir)
    from apps_api.redis_store import redis_client

    redis_client().flushdb()
    yield settings.REDIS_URL
    if started is not None:
        started.stop()


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


class WorkerProcess:
    """A real Celery worker process on the real Redis, with the test settings."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from supervisor_site.celery import app

        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "supervisor_site", "worker", "--pool=threads",
                 "--concurrency=4", "--queues=supervisor", "--without-heartbeat", "--without-gossip",
                 "--without-mingle", "--loglevel=INFO", "--hostname=test-worker@%h"],
                cwd=PROJECT_DIR, env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        process = self.process
        if not wait_until(lambda: bool(app.control.ping(timeout=0.5)) or process.poll() is not None, 60):
            pytest.fail(f"the Celery worker did not answer; see {self.log_path}")
        if process.poll() is not None:
            pytest.fail(f"the Celery worker exited with {process.returncode}; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL: no warm shutdown, as when the device loses power."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="session")
def celery_worker(redis_server: str, django_db_setup: None, service_log_dir: Path) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(service_log_dir / "celery-worker.log")
    worker.start()
    yield worker
    worker.stop()


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
