"""A real web process (supervisor_site.web_server) in a data dir of its own, for start-up and fault tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from supervisor_site.system_services import wait_until
from tests.conftest import WorkerProcess
from tests.fake_cloud import FakeCloud

PROJECT_DIR = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def agent_environment(data_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment of a supervisor process: test variables dropped, `overrides` set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    env.update(
        DJANGO_SETTINGS_MODULE="supervisor_site.settings",
        SUPERVISOR_DATA_DIR=str(data_dir),
        SUPERVISOR_LED_FILE=str(data_dir / "led0"),
        SUPERVISOR_HOST_ROOT=str(data_dir / "host"),
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@dataclass
class WebProcess:
    base_url: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path

    def get(self, path: str, **kwargs: object) -> requests.Response:
        return requests.get(self.base_url + path, timeout=10, **kwargs)  # type: ignore[arg-type]

    def output(self) -> str:
        """What the process printed so far."""
        return self.log_path.read_text(errors="replace")


StartWeb = Callable[..., WebProcess]


def launch_web(
    data_dir: Path, log_dir: Path, *, wait: bool = True, port: int | None = None, **overrides: str
) -> WebProcess:
    """Start the web server as the agent runs it, after `migrate`; wait until /ping answers.

    It listens on `port`, or on a free port when None."""
    port = port or free_port()
    env = agent_environment(data_dir, SUPERVISOR_PORT=str(port), SUPERVISOR_LISTEN_ADDRESS="127.0.0.1",
                            **overrides)  # fmt: skip
    migrated = manage(env, "migrate", "--noinput")
    assert migrated.returncode == 0, migrated.stderr
    log_path = log_dir / f"web-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "supervisor_site.web_server"],
            cwd=PROJECT_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    web = WebProcess(f"http://127.0.0.1:{port}", env, process, log_path)
    if wait:
        assert wait_until(lambda: _answers(web) or process.poll() is not None, 60), "no web server"
        assert process.poll() is None, web.output()
    return web


def stop_web(web: WebProcess) -> None:
    if web.process.poll() is None:
        web.process.terminate()
        try:
            web.process.wait(20)
        except subprocess.TimeoutExpired:
            web.process.kill()


@pytest.fixture
def start_web(tmp_path: Path) -> Iterator[StartWeb]:
    started: list[WebProcess] = []

    def start(*, wait: bool = True, **overrides: str) -> WebProcess:
        web = launch_web(tmp_path / "data", tmp_path, wait=wait, **overrides)
        started.append(web)
        return web

    yield start
    for web in started:
        stop_web(web)


def _answers(web: WebProcess) -> bool:
    try:
        return web.get("/ping").status_code == 200
    except requests.ConnectionError:
        return False


@pytest.fixture
def engine(busybox_image: str, celery_worker: object) -> Iterator[str]:
    """A clean engine and apply state, a worker to apply; yields the test image."""
    from apps_api import apply_status
    from apps_api.redis_store import APPLY_LOCK_KEY, APPLY_REQUEST_KEY, SERVICE_LAST_CHANGE_KEY, redis_client
    from tests.integration.engine_helpers import remove_supervised_objects, wait_applied

    remove_supervised_objects()
    redis_client().delete(APPLY_REQUEST_KEY, APPLY_LOCK_KEY, SERVICE_LAST_CHANGE_KEY)
    apply_status.set_flags(update_failed=False)
    yield busybox_image
    wait_applied(60)
    remove_supervised_objects()


@pytest.fixture
def shared_web(engine: str, tmp_path: Path) -> Iterator[WebProcess]:
    """The web server on the tests' own database, Redis and engine (the worker is the tests' one)."""
    from django.conf import settings

    from apps_api.redis_store import SCHEDULER_TICK_KEY, redis_client

    # The tests' worker runs no scheduler: a tick left by a test that ticked by hand would
    # make /v1/healthy fail once it is a minute old.
    redis_client().delete(SCHEDULER_TICK_KEY)
    data_dir = Path(settings.SUPERVISOR_DATA_DIR)
    web = launch_web(
        data_dir,
        tmp_path,
        DJANGO_SETTINGS_MODULE="tests.settings",
        SUPERVISOR_TEST_DATA_DIR=str(data_dir),
        SUPERVISOR_TEST_REDIS_URL=settings.REDIS_URL,
    )
    yield web
    stop_web(web)


class WorkerLog:
    """The test worker's own log from now on, where its system messages are written too."""

    def __init__(self, worker: WorkerProcess) -> None:
        self.path = worker.log_path
        self.start = self.path.stat().st_size

    def lines_with(self, text: str) -> list[str]:
        return [line for line in self.path.read_bytes()[self.start :].decode(errors="replace").splitlines()
                if text in line]  # fmt: skip


@pytest.fixture
def worker_log(celery_worker: WorkerProcess) -> WorkerLog:
    return WorkerLog(celery_worker)


def lock_dir(service: str, app_id: int = 1) -> Path:
    from django.conf import settings

    return (
        Path(settings.SUPERVISOR_HOST_ROOT) / "tmp" / "balena-supervisor" / "services" / str(app_id) / service
    )


@pytest.fixture
def fake_cloud(redis_server: str) -> Iterator[FakeCloud]:
    """A fake cloud, and a device whose config.json points at it with a provisioning key."""
    from django.conf import settings

    from apps_api import redis_store
    from hostcfg.identity import load_device_identity, read_config_json

    cloud_keys = (
        redis_store.CLOUD_POLL_STATE_KEY,
        redis_store.CLOUD_POLL_NOW_KEY,
        redis_store.CLOUD_TICK_LOCK_KEY,
    )
    config_json = Path(settings.SUPERVISOR_CONFIG_JSON)
    fake = FakeCloud()
    fake.start()
    original = config_json.read_text() if config_json.exists() else None
    identity = load_device_identity()
    config = {
        k: v for k, v in read_config_json(config_json).items() if k not in ("deviceId", "registered_at")
    }
    config.update(
        apiEndpoint=fake.url, apiKey=fake.provisioning_key, applicationId="1", deviceType="genericx86-64-ext"
    )
    config_json.write_text(json.dumps(config))
    redis_store.redis_client().delete(*cloud_keys)
    assert identity.uuid
    yield fake
    fake.stop()
    redis_store.redis_client().delete(*cloud_keys)
    if original is None:
        config_json.unlink()
    else:
        config_json.write_text(original)
