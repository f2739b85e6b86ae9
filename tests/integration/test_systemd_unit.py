"""The systemd units a device installs (supervisor_site/deploy): checked by systemd itself,
then run the way systemd runs them (tests/systemd_units.py): Redis and the agent process
as two units, with no supervising parent."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import redis

from supervisor_site.system_services import wait_until
from tests.agent_process import PROJECT_DIR, process_alive, process_title
from tests.integration.engine_helpers import local_target, started_on_a_clean_engine, supervised_containers
from tests.systemd_units import AGENT_UNIT, INSTALL_DIR, REDIS_UNIT, UnitsAgent, unit_setting, unit_settings

UNITS = (AGENT_UNIT, REDIS_UNIT)


def verify(units: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    paths = []
    for name, text in units.items():
        (tmp_path / name).write_text(text)
        paths.append(str(tmp_path / name))
    return subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True, text=True)


def installed_here(text: str) -> str:
    """The unit as installed with the project in this checkout instead of /opt."""
    return text.replace(INSTALL_DIR, str(PROJECT_DIR))


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    result = verify({unit.name: installed_here(unit.read_text()) for unit in UNITS}, tmp_path)
    assert result.returncode == 0, result.stderr


def test_systemd_would_refuse_a_unit_whose_agent_is_missing(tmp_path: Path) -> None:
    units = {unit.name: unit.read_text().replace(INSTALL_DIR, str(tmp_path / "nowhere")) for unit in UNITS}
    assert verify(units, tmp_path).returncode != 0


def test_the_units_restart_the_agent_and_its_redis_and_leave_the_apps_alone() -> None:
    agent = dict(unit_settings(AGENT_UNIT))
    assert agent["ExecStart"].endswith("/.venv/bin/python -m supervisor_site.agent_main")
    assert agent["Restart"] == "always"
    assert agent["StartLimitIntervalSec"] == "0"  # never given up on
    assert agent["KillMode"] == "mixed"  # SIGTERM to the agent process only: it ends its threads
    assert agent["EnvironmentFile"] == "-/etc/default/balena-supervisor-python"
    assert "balena-supervisor-python-redis.service" in agent["Wants"].split()
    assert "balena-supervisor-python-redis.service" in agent["After"].split()  # so stopped after it
    redis_unit = dict(unit_settings(REDIS_UNIT))
    assert redis_unit["Restart"] == "always"
    # An agent process restarted by systemd finds its queue where it was, and a restarted
    # Redis does not restart the agent: no restart of either unit propagates to the other.
    propagating = {"PartOf", "BindsTo", "Requires", "PropagatesStopTo", "StopPropagatedFrom"}
    assert not propagating & set(redis_unit)
    assert not propagating & set(agent)
    for unit in UNITS:
        assert unit_setting(unit, "UMask") == "0077"


@pytest.fixture
def units_agent(tmp_path: Path, busybox_image: str, docker_engine: None) -> Iterator[UnitsAgent]:
    with started_on_a_clean_engine(UnitsAgent(tmp_path / "data")) as running:
        yield running


def applied_with(agent: UnitsAgent, services: set[str]) -> bool:
    status, body = agent.request("GET", "/v2/state/status")
    return status == 200 and body["appState"] == "applied" and set(supervised_containers()) == services


def test_the_units_run_the_agent_and_its_redis_which_systemd_restarts_and_stop_it_in_time(
    units_agent: UnitsAgent, busybox_image: str
) -> None:
    agent = units_agent
    assert agent.process is not None
    assert agent.redis is not None
    assert process_title(agent.process.pid).startswith("supervisor: agent")
    # Redis as its unit's command line configures it: the socket only, nothing on disk.
    socket_path = agent.data_dir / "redis.sock"
    assert stat.S_IMODE(socket_path.stat().st_mode) & 0o077 == 0
    queue = redis.Redis(unix_socket_path=str(socket_path))
    assert queue.config_get("port") == {"port": "0"}
    assert queue.config_get("save") == {"save": ""}
    assert queue.config_get("appendonly") == {"appendonly": "no"}
    queue.close()
    for name in ("supervisor.sqlite3", "secret_key"):
        assert stat.S_IMODE((agent.data_dir / name).stat().st_mode) == 0o600, name
    one = local_target({"main": {}}, image=busybox_image)
    status, body = agent.request("POST", "/v2/local/target-state", one)
    assert status == 200, body
    assert wait_until(lambda: applied_with(agent, {"main"}), 60)

    killed = agent.redis.pid
    os.kill(killed, signal.SIGKILL)
    assert wait_until(lambda: agent.child("redis") not in (None, killed), 10)  # Restart=always
    two = local_target({"main": {}, "other": {}}, image=busybox_image)
    assert wait_until(lambda: agent.request("POST", "/v2/local/target-state", two)[0] == 200, 30)
    assert wait_until(lambda: applied_with(agent, {"main", "other"}), 60)

    before = supervised_containers()
    pid = agent.process.pid
    # Ended by its SIGTERM, not by the SIGKILL that follows TimeoutStopSec.
    assert agent.stop() == 0
    assert not process_alive(pid)
    assert {name: docker.from_env().containers.get(c.id).status for name, c in before.items()} == {
        "main": "running",
        "other": "running",
    }


def test_a_config_json_it_cannot_use_ends_the_agent_with_the_status_its_unit_does_not_restart(
    tmp_path: Path, docker_engine: None
) -> None:
    config_json = tmp_path / "data" / "boot" / "config.json"
    config_json.parent.mkdir(parents=True)
    config_json.write_bytes(b'{"uuid": "abc')
    agent = UnitsAgent(tmp_path / "data")
    agent.start(wait=False)
    try:
        assert agent.process is not None
        status = agent.process.wait(60)
        assert str(status) in unit_setting(AGENT_UNIT, "RestartPreventExitStatus").split()
        assert f"cannot start: {config_json}: not valid JSON" in agent.log_text()
    finally:
        agent.stop()
