"""POST /v1/reboot and /v1/shutdown: locks, the HUP guard, apps stopped, then logind.

logind is the stand-in of tests/host_bus.py on a real private dbus-daemon: it records the
call instead of rebooting, which is the one thing a test machine cannot do.
"""

from __future__ import annotations

import json
import signal
from datetime import datetime
from pathlib import Path

import pytest
from django.conf import settings
from pytest_django.fixtures import SettingsWrapper

from apps_api.engine.locks import UpdatesLocked
from apps_api.host_ops.power import run_power_action
from supervisor_site.system_services import wait_until
from tests.agent_client import Client
from tests.agent_process import Agent
from tests.host_bus import HostBus
from tests.integration.conftest import lock_dir
from tests.integration.engine_helpers import apply, local_target, supervised_containers

pytestmark = pytest.mark.django_db(transaction=True)

HUP_BREADCRUMB = Path("mnt/state/rollback-health-breadcrumb")


@pytest.fixture
def two_services(engine: str, host_bus: HostBus) -> str:
    apply(local_target({"main": {}, "side": {"restart": "unless-stopped"}}, image=engine))
    return engine


def post(path: str, body: dict | None = None):  # type: ignore[no-untyped-def]
    return Client().post(path, json.dumps(body or {}), content_type="application/json")


def logind_calls(host_bus: HostBus) -> list[tuple[str, float]]:
    return [(c.member, c.at) for c in host_bus.services.calls if c.member in ("Reboot", "PowerOff")]


def wait_for_logind(host_bus: HostBus) -> tuple[str, float]:
    assert wait_until(lambda: bool(logind_calls(host_bus)), 60, interval=0.05), "logind was never called"
    (call,) = logind_calls(host_bus)
    return call


def finished_at(container) -> float:  # type: ignore[no-untyped-def]
    container.reload()
    stamp = container.attrs["State"]["FinishedAt"]  # RFC 3339 with nanoseconds
    return datetime.fromisoformat(stamp[:26].rstrip("Z") + "+00:00").timestamp()


@pytest.mark.parametrize(("path", "member"), [("/v1/reboot", "Reboot"), ("/v1/shutdown", "PowerOff")])
def test_power_action_stops_the_apps_then_calls_logind(
    two_services: str, host_bus: HostBus, path: str, member: str
) -> None:
    response = post(path)
    assert response.status_code == 202
    assert response.json() == {"Data": "OK", "Error": ""}
    called, at = wait_for_logind(host_bus)
    assert called == member
    containers = supervised_containers()
    for container in containers.values():
        container.reload()
        assert container.status == "exited"
        assert finished_at(container) <= at
    assert wait_until(lambda: not list(lock_dir("main").glob("*updates.lock")), 10), "locks not released"


def test_a_user_lock_refuses_with_423_and_nothing_is_stopped(two_services: str, host_bus: HostBus) -> None:
    (lock_dir("side") / "updates.lock").touch()
    response = post("/v1/reboot")
    assert response.status_code == 423
    assert response.json() == {"Data": "", "Error": "Lockfile exists for { appId: 1, service: side }"}
    assert logind_calls(host_bus) == []
    assert all(c.status == "running" for c in supervised_containers().values())
    assert (lock_dir("side") / "updates.lock").exists()
    assert not (lock_dir("main") / "updates.lock").exists()


def test_force_deletes_the_user_lock_and_reboots(two_services: str, host_bus: HostBus) -> None:
    (lock_dir("side") / "updates.lock").touch()
    assert post("/v1/reboot", {"force": True}).status_code == 202
    assert wait_for_logind(host_bus)[0] == "Reboot"


def test_a_host_os_update_in_progress_refuses_unless_forced(two_services: str, host_bus: HostBus) -> None:
    breadcrumb = Path(settings.SUPERVISOR_HOST_ROOT) / HUP_BREADCRUMB
    breadcrumb.parent.mkdir(parents=True, exist_ok=True)
    breadcrumb.touch()
    try:
        response = post("/v1/shutdown")
        assert response.status_code == 423
        assert response.json() == {"Data": "", "Error": "Waiting for Host OS update to finish"}
        assert all(c.status == "running" for c in supervised_containers().values())
        assert post("/v1/shutdown", {"force": "true"}).status_code == 202
        assert wait_for_logind(host_bus)[0] == "PowerOff"
    finally:
        breadcrumb.unlink()


def test_the_apps_run_again_when_the_worker_starts_after_a_reboot(
    two_services: str, host_bus: HostBus, shipped_agent: Agent
) -> None:
    assert post("/v1/reboot").status_code == 202
    wait_for_logind(host_bus)
    # The host did not really go down: the agent process starting again stands for the boot.
    shipped_agent.kill_agent(signum=signal.SIGTERM)

    def all_running() -> bool:
        return all(c.status == "running" for c in supervised_containers().values())

    assert wait_until(all_running, 30), {n: c.status for n, c in supervised_containers().items()}


def test_a_user_lock_refuses_even_when_the_host_bus_is_down(
    two_services: str, settings: SettingsWrapper, tmp_path: Path
) -> None:
    # The worker's power action, in this process, with the bus address pointing at nothing.
    user_lock = lock_dir("side") / "updates.lock"
    user_lock.touch()
    settings.SUPERVISOR_DBUS_ADDRESS = f"unix:path={tmp_path / 'no-bus.sock'}"
    try:
        with pytest.raises(UpdatesLocked, match="Lockfile exists"):
            run_power_action("reboot", force=False, accepted=lambda: pytest.fail("accepted"))
        assert all(c.status == "running" for c in supervised_containers().values())
    finally:
        user_lock.unlink()
