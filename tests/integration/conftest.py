"""Fixtures of the integration tests: the session's agent as it ships (tests/conftest.py),
reset between tests; whole agents in data dirs of their own for start-up and fault tests;
a fake cloud."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_client import Client as AgentClient
from tests.agent_process import Agent, free_port
from tests.conftest import BUSYBOX_IMAGE
from tests.fake_cloud import FakeCloud
from tests.route_coverage import AGENT_ADDRESSES

PROJECT_DIR = Path(__file__).resolve().parents[2]


def manage(
    env: dict[str, str], *args: str, project_dir: Path = PROJECT_DIR
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=project_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(autouse=True)
def _session_agent(shipped_agent: Agent) -> None:
    """Every integration test may call the session's agent (tests/agent_client.py)."""


# A whole agent as it ships, in a data dir of its own (start-up, fault and default-settings tests).
WebProcess = Agent
StartWeb = Callable[..., Agent]


def launch_web(
    data_dir: Path,
    log_dir: Path,
    *,
    wait: bool = True,
    port: int | None = None,
    project_dir: Path = PROJECT_DIR,
    **overrides: str,
) -> Agent:
    """Start an agent as the systemd unit does (parent, its redis-server, the agent process)
    on `data_dir`, with the environment `overrides`; wait until it is ready.

    It listens on `port`, or on a free port when None."""
    agent = Agent(
        data_dir,
        port=port or free_port(),
        host_root=data_dir / "host",
        log_file=log_dir / f"agent-{data_dir.name}.log",
        project_dir=project_dir,
        extra_env={
            "SUPERVISOR_LED_FILE": str(data_dir / "led0"),
            "SUPERVISOR_LISTEN_ADDRESS": "127.0.0.1",
            **overrides,
        },
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    agent.start(wait=False)
    AGENT_ADDRESSES.add((agent.address, agent.port))
    if wait:
        agent.wait_ready()
    return agent


def stop_web(web: Agent) -> None:
    web.stop()


@pytest.fixture
def start_web(tmp_path: Path, docker_engine: None) -> Iterator[StartWeb]:
    started: list[Agent] = []

    def start(*, wait: bool = True, **overrides: str) -> Agent:
        web = launch_web(tmp_path / "data", tmp_path, wait=wait, **overrides)
        started.append(web)
        return web

    yield start
    for web in started:
        stop_web(web)


@pytest.fixture
def engine(shipped_agent: Agent) -> Iterator[str]:
    """A clean engine and apply state, the session agent to apply; yields the test image."""
    from apps_api import apply_status
    from apps_api.redis_store import APPLY_LOCK_KEY, APPLY_REQUEST_KEY, SERVICE_LAST_CHANGE_KEY, redis_client
    from tests.integration.engine_helpers import remove_supervised_objects, wait_applied

    wait_applied(60)
    remove_supervised_objects()
    redis_client().delete(APPLY_REQUEST_KEY, APPLY_LOCK_KEY, SERVICE_LAST_CHANGE_KEY)
    apply_status.set_flags(update_failed=False)
    clear_host_leftovers()
    yield BUSYBOX_IMAGE
    wait_applied(60)
    remove_supervised_objects()
    clear_host_leftovers()


@pytest.fixture
def admin_client(transactional_db: None, shipped_agent: Agent) -> AgentClient:
    """A maintainer signed in to the session agent's admin over HTTP."""
    from django.contrib.auth.models import User

    User.objects.create_superuser("admin", "admin@example.com", "admin-pass-1")
    client = AgentClient()
    assert client.login(username="admin", password="admin-pass-1")
    return client


def clear_host_leftovers() -> None:
    """What a test may leave on the host root for the next one: update locks, the reboot
    breadcrumb, temporarily stopped containers."""
    from django.conf import settings

    state_dir = Path(settings.SUPERVISOR_HOST_ROOT) / "tmp" / "balena-supervisor"
    for lock in [
        *state_dir.glob("services/*/*/updates.lock"),
        *state_dir.glob("services/*/*/resin-updates.lock"),
    ]:
        if lock.is_dir():
            shutil.rmtree(lock, ignore_errors=True)
        else:
            lock.unlink(missing_ok=True)
    (state_dir / "reboot-after-apply").unlink(missing_ok=True)


@pytest.fixture
def shared_web(engine: str, shipped_agent: Agent) -> Agent:
    """The session agent (its web server, worker and engine), after the engine was reset."""
    return shipped_agent


class WorkerLog:
    """The agent's log from now on, where its worker's and system messages are written too."""

    def __init__(self, agent: Agent) -> None:
        self.path = agent.log_path
        self.start = self.path.stat().st_size

    def lines_with(self, text: str) -> list[str]:
        return [line for line in self.path.read_bytes()[self.start :].decode(errors="replace").splitlines()
                if text in line]  # fmt: skip


@pytest.fixture
def worker_log(shipped_agent: Agent) -> WorkerLog:
    return WorkerLog(shipped_agent)


def lock_dir(service: str, app_id: int = 1) -> Path:
    from django.conf import settings

    return (
        Path(settings.SUPERVISOR_HOST_ROOT) / "tmp" / "balena-supervisor" / "services" / str(app_id) / service
    )


@contextlib.contextmanager
def device_of_fake_cloud(config_json: Path, base: Path) -> Iterator[FakeCloud]:
    """A fake cloud, and `config_json` (a copy of `base`'s identity) pointing at it with a
    provisioning key; the cloud keys of Redis cleared before and after."""
    from apps_api import redis_store
    from hostcfg.identity import load_device_identity, read_config_json

    cloud_keys = (
        redis_store.CLOUD_POLL_STATE_KEY,
        redis_store.CLOUD_POLL_NOW_KEY,
        redis_store.CLOUD_TICK_LOCK_KEY,
    )
    fake = FakeCloud()
    fake.start()
    original = config_json.read_text() if config_json.exists() else None
    assert load_device_identity(base).uuid
    config = {k: v for k, v in read_config_json(base).items() if k not in ("deviceId", "registered_at")}
    config.update(
        apiEndpoint=fake.url, apiKey=fake.provisioning_key, applicationId="1", deviceType="genericx86-64-ext"
    )
    config_json.write_text(json.dumps(config))
    redis_store.redis_client().delete(*cloud_keys)
    try:
        yield fake
    finally:
        fake.stop()
        redis_store.redis_client().delete(*cloud_keys)
        if original is None:
            config_json.unlink()
        else:
            config_json.write_text(original)


@pytest.fixture
def fake_cloud(redis_server: str, settings: Any, tmp_path: Path) -> Iterator[FakeCloud]:
    """A fake cloud that the cloud code run in this test process talks to: the test's own
    config.json (the device's identity) points at it, the session agent's does not, so the
    agent's own cloud ticks stay out of what the fake receives."""
    agents_config = Path(settings.SUPERVISOR_CONFIG_JSON)
    settings.SUPERVISOR_CONFIG_JSON = str(tmp_path / "config.json")
    with device_of_fake_cloud(tmp_path / "config.json", agents_config) as fake:
        yield fake


@pytest.fixture
def agent_fake_cloud(shipped_agent: Agent) -> Iterator[FakeCloud]:
    """A fake cloud that the session agent itself provisions with, polls and reports to."""
    from django.conf import settings

    config_json = Path(settings.SUPERVISOR_CONFIG_JSON)
    with device_of_fake_cloud(config_json, config_json) as fake:
        yield fake
