"""The agent as a device runs it: few named processes, children brought back when they
die, a graceful stop that leaves the apps running, an API its apps reach, secrets kept
from other users. Real processes, real dockerd, the agent's own redis-server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import pytest

from supervisor_site.system_services import ensure_redis, wait_until
from tests.agent_process import STARTED, Agent, free_port, process_alive
from tests.fake_cloud import FakeCloud
from tests.integration.engine_helpers import (
    SUPERVISED,
    local_target,
    remove_supervised_objects,
    started_on_a_clean_engine,
    supervised_containers,
)
from tests.refusing_engine import RefusingEngine
from tests.systemd_units import UnitsAgent

pytestmark = pytest.mark.services


@pytest.fixture(autouse=True)
def no_agent_left_running() -> Iterator[None]:
    """Stops what a failed test left running (not the session's agent, started before)."""
    before = list(STARTED)
    yield
    for agent in [a for a in STARTED if a not in before]:
        STARTED.remove(agent)
        with contextlib.suppress(Exception):
            agent.stop()


@pytest.fixture
def agent(tmp_path: Path, busybox_image: str, docker_engine: None) -> Iterator[Agent]:
    with started_on_a_clean_engine(Agent(tmp_path / "data")) as running:
        yield running


def services_in_docker() -> list[str]:
    """The service of each supervised container, from one listing (safe while some go)."""
    listed = docker.from_env().api.containers(all=True, filters=SUPERVISED)
    return sorted(c["Labels"]["io.balena.service-name"] for c in listed)


WATCHED_THREADS = {"engine-events", "publish-system", "publish-apps", "log-collector", "host-unit-logs",
                   "cloud-logs-in", "cloud-logs-out"}  # fmt: skip


def container_ids() -> dict[str, str]:
    """Service → id of each supervised container, from one listing."""
    listed = docker.from_env().api.containers(all=True, filters=SUPERVISED)
    return {c["Labels"]["io.balena.service-name"]: c["Id"] for c in listed}


def post_target(agent: Agent, document: dict[str, object]) -> None:
    status, body = agent.request("POST", "/v2/local/target-state", document)
    assert status == 200, body


def applied(agent: Agent) -> bool:
    status, body = agent.request("GET", "/v2/state/status")
    return status == 200 and body["appState"] == "applied"


def test_the_agent_is_a_parent_and_one_named_child_plus_its_redis(agent: Agent) -> None:
    titles = sorted(" ".join(title.split(" ")[:2]) for title in agent.children().values())
    assert titles == ["redis-server unixsocket:" + str(agent.data_dir / "redis.sock"), "supervisor: agent"]
    assert agent.process is not None
    assert Path(f"/proc/{agent.process.pid}/cmdline").read_bytes().startswith(b"supervisor: parent")
    # Every long-lived thread runs from the start, before any request (docs/architecture.md
    # "Threads"), under the name the OS shows.
    tasks = Path(f"/proc/{agent.child('agent')}/task")
    names = {(task / "comm").read_text().strip() for task in tasks.iterdir()}
    assert names >= WATCHED_THREADS, names
    assert agent.request("GET", "/v1/healthy")[0] == 200  # the worker's scheduler ticks, among others


@pytest.mark.parametrize("role", ["agent", "redis"])
def test_a_killed_child_is_started_again_and_the_api_serves(agent: Agent, role: str) -> None:
    killed = agent.child(role)
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    assert wait_until(lambda: agent.child(role) not in (None, killed), 30), agent.log_text()[-2000:]
    assert f"{role} killed by SIGKILL" in agent.log_text()
    assert wait_until(agent.answers, 30)
    # A read that needs Redis, the database and the engine answers again.
    assert wait_until(lambda: agent.request("GET", "/v2/applications/state")[0] == 200, 30)


def test_sigterm_stops_the_agent_and_the_apps_keep_running_then_are_adopted(
    agent: Agent, busybox_image: str
) -> None:
    post_target(agent, local_target({"main": {}}, image=busybox_image))
    assert wait_until(lambda: "main" in services_in_docker() and applied(agent), 60)
    before = supervised_containers()["main"]
    children = [agent.child("agent"), agent.child("redis")]
    stopped_in = time.monotonic()
    assert agent.stop(timeout=30) == 0
    assert time.monotonic() - stopped_in < 10, "docs/operations.md promises a stop within 10 s"
    assert all(pid is not None and not process_alive(pid) for pid in children), children
    running = docker.from_env().containers.get(before.id)
    assert running.status == "running"
    agent.start()
    assert wait_until(lambda: applied(agent), 60)
    assert {name: c.id for name, c in supervised_containers().items()} == {"main": before.id}


# Debian's static busybox crashes in `wget` (glibc's resolver cannot load in a bare image);
# `nc` speaks the same HTTP request.
CALL_THE_API = (
    "address=${BALENA_SUPERVISOR_ADDRESS#http://}; "
    '(printf "GET /v1/device?apikey=$BALENA_SUPERVISOR_API_KEY HTTP/1.0\\r\\n\\r\\n"; sleep 2) '
    '| busybox nc "${address%:*}" "${address#*:}"; echo; sleep 1000'
)


def test_an_app_reaches_the_api_at_the_address_it_is_given(agent: Agent, busybox_image: str) -> None:
    service = {"labels": {"io.balena.features.supervisor-api": "1"}, "command": ["sh", "-c", CALL_THE_API]}
    post_target(agent, local_target({"caller": service}, image=busybox_image))

    def answered() -> bool:
        container = supervised_containers().get("caller")
        return container is not None and b'"api_port":' in container.logs()

    assert wait_until(answered, 60), supervised_containers()["caller"].logs()[-500:]
    answer = supervised_containers()["caller"].logs()
    assert answer.startswith(b"HTTP/1.0 200 OK")
    assert f'"api_port":{agent.port}'.encode() in answer
    env = supervised_containers()["caller"].attrs["Config"]["Env"]
    assert f"BALENA_SUPERVISOR_ADDRESS=http://10.114.104.1:{agent.port}" in env


def test_secrets_are_kept_from_other_users(agent: Agent) -> None:
    data_dir = agent.data_dir
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for name in ("supervisor.sqlite3", "secret_key"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
    redis_socket = data_dir / "redis.sock"
    assert stat.S_ISSOCK(redis_socket.stat().st_mode)
    assert stat.S_IMODE(redis_socket.stat().st_mode) & 0o077 == 0
    assert agent.child("redis") is not None
    assert "unixsocket" in Path(f"/proc/{agent.child('redis')}/cmdline").read_text()


@pytest.mark.parametrize("layout", [Agent, UnitsAgent], ids=["make run", "systemd units"])
def test_an_install_made_readable_by_others_is_tightened_at_start(
    tmp_path: Path, docker_engine: None, layout: type[Agent]
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    kept = data_dir / "apps.json.preloaded"
    kept.write_text("{}")
    kept.chmod(0o644)
    agent = layout(data_dir)
    agent.start()
    try:
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    finally:
        agent.stop()


def test_a_target_posted_while_redis_is_down_is_refused_and_not_stored(
    agent: Agent, busybox_image: str
) -> None:
    redis = agent.child("redis")
    assert redis is not None
    before = agent.request("GET", "/v2/local/target-state")[1]
    os.kill(redis, signal.SIGSTOP)  # down, but not dead: the parent does not replace it
    try:
        with ThreadPoolExecutor(8) as pool:
            # More state reads than their threads, all waiting on Redis: the event loop
            # still answers the liveness probe.
            reads = [pool.submit(agent.request, "GET", "/v1/device") for _ in range(8)]
            assert agent.request("GET", "/ping") == (200, "OK")
            assert not all(read.done() for read in reads)
            status, _ = agent.request(
                "POST", "/v2/local/target-state", local_target({"main": {}}, image=busybox_image)
            )
    finally:
        os.kill(redis, signal.SIGCONT)
    assert status == 503
    assert {read.result()[0] for read in reads} == {503}
    assert agent.request("GET", "/v1/device")[0] == 200
    assert agent.request("GET", "/v2/local/target-state")[1] == before
    post_target(agent, local_target({"main": {}}, image=busybox_image))
    assert wait_until(lambda: "main" in services_in_docker() and applied(agent), 60)


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b'{"uuid": "abc', "not valid JSON"), (bytes(range(128, 256)), "not text")],
    ids=["truncated", "random bytes"],
)
def test_a_config_json_it_cannot_use_stops_the_agent_naming_it(
    tmp_path: Path, docker_engine: None, content: bytes, problem: str
) -> None:
    config_json = tmp_path / "data" / "boot" / "config.json"
    config_json.parent.mkdir(parents=True)
    config_json.write_bytes(content)
    agent = Agent(tmp_path / "data")
    agent.start(wait=False)
    assert agent.process is not None
    assert agent.process.wait(60) == 78  # EX_CONFIG: the systemd unit does not restart on it
    assert f"cannot start: {config_json}: {problem}" in agent.log_text()
    assert "Traceback" not in agent.log_text()
    assert config_json.read_bytes() == content


@pytest.mark.parametrize("damage", ["truncated", "random bytes"])
def test_a_malformed_database_stops_the_agent_naming_it(
    tmp_path: Path, docker_engine: None, damage: str
) -> None:
    data_dir = tmp_path / "data"
    agent = Agent(data_dir)
    agent.start()
    assert agent.stop() == 0
    database = data_dir / "supervisor.sqlite3"
    good = database.read_bytes()
    rotten = good[: len(good) // 2] if damage == "truncated" else os.urandom(len(good))
    database.write_bytes(rotten)
    agent.start(wait=False)
    assert agent.process is not None
    assert agent.process.wait(60) == 78
    assert f"cannot start: {database}: " in agent.log_text()
    assert database.read_bytes() == rotten  # kept for whoever repairs or replaces it


def test_a_corrupt_secret_key_is_replaced_and_the_agent_serves(tmp_path: Path, docker_engine: None) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "secret_key").write_bytes(bytes(range(256)))
    agent = Agent(data_dir)
    agent.start()
    try:
        assert agent.answers()
        assert "secret_key is unreadable or corrupt" in agent.log_text()
        assert (data_dir / "secret_key").read_text().isprintable()
    finally:
        agent.stop()


KEEPER = {"volumes": ["data:/data"], "command": ["sh", "-c", "echo kept > /data/marker; sleep 100000"]}


# `sleep` as PID 1 ignores SIGTERM: replacing this service takes its whole grace period, so
# an apply that replaces it is still running for 8 s, whatever the engine's speed.
SLOW_TO_STOP = {"stop_signal": "SIGTERM", "stop_grace_period": "8s"}


def test_a_worker_killed_in_the_middle_of_an_apply_converges_and_tells_the_truth(
    agent: Agent, busybox_image: str
) -> None:
    keeper_v1 = {**KEEPER, **SLOW_TO_STOP}
    post_target(agent, local_target({"keeper": keeper_v1}, image=busybox_image, volumes={"data": {}}))
    assert wait_until(lambda: applied(agent) and "keeper" in services_in_docker(), 60)
    keeper = supervised_containers()["keeper"]
    assert wait_until(lambda: keeper.exec_run(["cat", "/data/marker"]).output == b"kept\n", 30)
    keeper_v2 = {**keeper_v1, "environment": {"RELEASE": "2"}}
    services = {"keeper": keeper_v2, **{f"s{n}": {} for n in range(1, 10)}}
    post_target(agent, local_target(services, image=busybox_image, volumes={"data": {}}, commit="c2"))
    assert wait_until(lambda: len(services_in_docker()) > 2, 60)
    worker = agent.child("agent")
    assert worker is not None
    os.kill(worker, signal.SIGKILL)
    assert keeper.id in container_ids().values(), "the apply ended before the kill: nothing was interrupted"
    assert wait_until(lambda: agent.child("agent") not in (None, worker) and agent.ready(), 60)
    assert wait_until(lambda: applied(agent), 120)
    # One container a service: none left half-made, none twice.
    assert services_in_docker() == sorted(services)
    assert supervised_containers()["keeper"].exec_run(["cat", "/data/marker"]).output == b"kept\n"
    assert "RELEASE=2" in supervised_containers()["keeper"].attrs["Config"]["Env"]
    state = agent.request("GET", "/v2/applications/state")[1]["testapp"]["services"]
    assert {name: service["status"] for name, service in state.items()} == dict.fromkeys(services, "Running")


STATE_FILES = (
    "temporarily-stopped-containers.json",
    "log-collector-positions.json",
    "applied-device-config.json",
    "local-mode-snapshot.json",
    "cloud-initial-config.json",
    "preloaded-release-pin.json",
    "logs/current.ndjson",
    "boot/device-type.json",
    "secret_key",
)


@pytest.mark.parametrize("damage", ["truncated", "random bytes"])
def test_the_agent_comes_back_over_every_state_file_rotten(
    tmp_path: Path, docker_engine: None, busybox_image: str, damage: str
) -> None:
    data_dir = tmp_path / "data"
    agent = Agent(data_dir)
    agent.start()
    post_target(agent, local_target({"main": {}}, image=busybox_image))
    assert wait_until(lambda: applied(agent), 60)
    assert agent.stop() == 0
    for name in STATE_FILES:
        path = data_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        good = path.read_bytes() if path.exists() else b'{"a": [1, 2, 3]}'
        path.write_bytes(good[: len(good) // 2] if damage == "truncated" else os.urandom(len(good) or 64))
    agent.start()
    try:
        assert agent.request("GET", "/v2/applications/state")[0] == 200
        assert wait_until(lambda: applied(agent), 60)
        second_run = agent.log_text().split("Supervisor API:")[-1]
        assert "Traceback" not in second_run, second_run[-3000:]
    finally:
        agent.stop()
        remove_supervised_objects()


def _restart_dockerd_after(outage: Callable[[], None]) -> None:
    """Stop the running dockerd, run `outage`, start dockerd again with its command line."""
    client = docker.from_env()
    # A dockerd stopped by an earlier test may linger as a zombie (no command line): skip it.
    pid = next(int(p.name) for p in Path("/proc").iterdir()
               if p.name.isdigit() and _comm(p) == "dockerd" and not _ended(int(p.name)))  # fmt: skip
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    os.kill(pid, signal.SIGTERM)
    assert wait_until(lambda: _ended(pid), 60)
    try:
        outage()
    finally:
        with open("/var/log/dockerd-restarted.log", "ab") as log:
            subprocess.Popen([a.decode() for a in argv], stdout=log, stderr=log, start_new_session=True)
        assert wait_until(lambda: _engine_answers(client), 60)


def _ended(pid: int) -> bool:
    """The process is gone or a zombie (a dockerd that the test session started is our child)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        zombie = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
    if zombie:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # ours: reaped, so that no later test finds it
    return zombie


def _comm(process: Path) -> str:
    try:
        return (process / "comm").read_text().strip()
    except OSError:
        return ""


def _engine_answers(client: docker.DockerClient) -> bool:
    try:
        return bool(client.ping())
    except (docker.errors.DockerException, OSError):  # requests' errors are OSErrors
        return False


def test_the_agent_lives_through_a_dockerd_restart_and_does_what_was_asked_meanwhile(
    agent: Agent, busybox_image: str
) -> None:
    post_target(agent, local_target({"main": {}}, image=busybox_image))
    assert wait_until(lambda: applied(agent) and "main" in supervised_containers(), 60)
    answers_during_outage: list[int] = []

    def outage() -> None:
        assert agent.answers()
        answers_during_outage.append(agent.request("GET", "/v2/applications/state")[0])
        post_target(agent, local_target({"main": {}, "second": {}}, image=busybox_image))

    _restart_dockerd_after(outage)
    assert answers_during_outage[0] in (200, 503)
    assert wait_until(lambda: services_in_docker() == ["main", "second"] and applied(agent), 120)
    assert all(c.status == "running" for c in supervised_containers().values())
    assert agent.child("agent") is not None


def test_installations_that_share_a_redis_one_after_the_other_each_talk_to_their_own_cloud(
    tmp_path: Path, docker_engine: None
) -> None:
    shared = f"redis://127.0.0.1:{free_port()}/0"  # a Redis that outlives the agents that used it
    redis_of_both = ensure_redis(shared, tmp_path)
    assert redis_of_both is not None
    for name in ("first", "second"):
        cloud = FakeCloud()
        cloud.start()
        boot = tmp_path / name / "boot"
        boot.mkdir(parents=True)
        config = {"apiEndpoint": cloud.url, "apiKey": cloud.provisioning_key, "applicationId": "1",
                  "deviceType": "genericx86-64-ext"}  # fmt: skip
        (boot / "config.json").write_text(json.dumps(config))
        agent = Agent(tmp_path / name, extra_env={"REDIS_URL": shared})
        agent.start()
        try:
            assert wait_until(lambda: cloud.requests_to("PATCH", "/device/v3/state"), 60), name  # noqa: B023
            assert cloud.requests_to("POST", "/device/register"), name
            assert cloud.requests_to("GET", "/device/v3/*/state"), name
        finally:
            agent.stop()
            cloud.stop()
    redis_of_both.stop()


def test_sigterm_in_the_middle_of_an_apply_stops_the_agent_and_the_next_one_finishes_it(
    tmp_path: Path, busybox_image: str, docker_engine: None
) -> None:
    """As a device's systemd units run it."""
    with started_on_a_clean_engine(UnitsAgent(tmp_path / "data")) as agent:
        # Longer than the agent's whole stop (10 s): the stop cannot wait the replacement out.
        slow = {"stop_signal": "SIGTERM", "stop_grace_period": "12s"}
        post_target(agent, local_target({"s0": slow}, image=busybox_image))
        assert wait_until(lambda: applied(agent) and "s0" in services_in_docker(), 60)
        old_s0 = container_ids()["s0"]
        services = {
            "s0": {**SLOW_TO_STOP, "environment": {"RELEASE": "2"}},
            **{f"s{n}": {} for n in range(1, 10)},
        }
        post_target(agent, local_target(services, image=busybox_image, commit="c2"))
        assert wait_until(lambda: len(services_in_docker()) >= 3, 60)
        children = [agent.child("agent"), agent.child("redis")]
        # Ended by itself, abandoning the round: not by the SIGKILL that systemd sends after
        # TimeoutStopSec (10 s, docs/operations.md "Processes").
        assert agent.stop() == 0
        assert all(pid is not None and not process_alive(pid) for pid in children), children
        left_running = container_ids()
        assert left_running.get("s0") == old_s0, "the apply ended before the stop: nothing was interrupted"
        agent.start()
        assert wait_until(lambda: applied(agent) and services_in_docker() == sorted(services), 120)
        # Those of the new release left running were adopted, not made again.
        new_ones = {name: cid for name, cid in left_running.items() if name != "s0"}
        assert new_ones.items() <= container_ids().items()


def test_an_agent_started_without_its_engine_listens_for_the_apps_once_the_engine_is_back(
    tmp_path: Path, docker_engine: None
) -> None:
    remove_supervised_objects()
    for network in docker.from_env().networks.list(names=["supervisor0"]):
        network.remove()
    agent = Agent(tmp_path / "data")

    def outage() -> None:
        agent.start(wait=False)
        assert wait_until(agent.answers, 60)  # on loopback, meanwhile

    try:
        _restart_dockerd_after(outage)
        assert wait_until(lambda: _answers_at("10.114.104.1", agent.port), 60), agent.log_text()[-2000:]
    finally:
        agent.stop()


def _answers_at(address: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/ping", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_an_agent_whose_port_is_taken_ends_and_is_started_again_until_it_is_free(
    tmp_path: Path, docker_engine: None
) -> None:
    agent = Agent(tmp_path / "data")
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", agent.port))
    squatter.listen()
    try:
        agent.start(wait=False)
        assert wait_until(lambda: "web: the server stopped; stopping the agent" in agent.log_text(), 60)
        assert wait_until(lambda: "agent exited with 70" in agent.log_text(), 30), agent.log_text()[-2000:]
    finally:
        squatter.close()
    try:
        assert wait_until(agent.ready, 90), agent.log_text()[-2000:]
    finally:
        assert agent.stop() == 0


@contextlib.contextmanager
def agent_behind(proxy: RefusingEngine) -> Iterator[tuple[Agent, RefusingEngine]]:
    """An agent whose engine is `proxy`: the real one, with the answers it injects."""
    proxy.start()
    remove_supervised_objects()
    running = Agent(proxy.path.parent / "data", extra_env={"DOCKER_HOST": proxy.url})
    running.start()
    try:
        yield running, proxy
    finally:
        running.stop()
        proxy.stop()
        remove_supervised_objects()


def test_a_network_the_engine_will_not_remove_is_left_held_back_and_the_apply_goes_on(
    tmp_path: Path, busybox_image: str, docker_engine: None
) -> None:
    """The engine's refusal is injected (tests/refusing_engine.py) in front of the real one:
    a network that "has active endpoints" while listing none could not be made on demand."""
    refusal = "error while removing network: network 1_back id 0f3e has active endpoints"
    refusing = {"on": True}

    def refuse(method: str, path: str) -> tuple[int, str] | None:
        return (403, refusal) if refusing["on"] and (method, path) == ("DELETE", "/networks/1_back") else None

    with agent_behind(RefusingEngine(tmp_path / "docker.sock", refuse)) as (running, proxy):
        post_target(running, local_target({"main": {}}, image=busybox_image, networks={"back": {}}))
        assert wait_until(lambda: applied(running), 60)
        size = running.log_path.stat().st_size
        post_target(running, local_target({"main": {}}, image=busybox_image, commit="c2"))

        # A few refusals, then the rest of the apply goes on without that removal.
        assert wait_until(lambda: applied(running) and "Could not remove" in running.log_text()[size:], 60)
        assert len(proxy.refused) >= 3
        lines = [
            line for line in running.log_text()[size:].splitlines() if "Could not remove network" in line
        ]
        assert len(lines) == 1, lines
        assert refusal in lines[0]
        status, plan = running.request("GET", "/v2/plan")
        assert status == 200
        assert plan["steps"] == []
        held = {"action": "removeNetwork", "appId": 1, "serviceName": None, "cause": "refused",
                "heldBy": "network back", "detail": refusal}  # fmt: skip
        assert plan["heldBack"] == [held]
        assert running.request("GET", "/v1/healthy")[0] == 500
        assert "the engine refuses to remove network 1_back" in running.log_text()[size:]
        assert supervised_containers()["main"].status == "running"

        # A new target tries again; the engine lets it go this time.
        refusing["on"] = False
        post_target(running, local_target({"main": {}}, image=busybox_image, commit="c3"))
        assert wait_until(lambda: applied(running) and running.request("GET", "/v1/healthy")[0] == 200, 60)
        assert "1_back" not in {n.name for n in docker.from_env().networks.list()}


def test_a_container_that_cannot_start_for_a_missing_network_is_made_again(
    tmp_path: Path, busybox_image: str, docker_engine: None
) -> None:
    """The engine's answer to starting a container whose network it no longer has is
    injected once (tests/refusing_engine.py): the new container is removed and made again
    in the next round, rather than started in vain at every round."""
    armed, doomed = threading.Event(), set[str]()

    def refuse(method: str, path: str) -> tuple[int, str] | None:
        # The first container started once armed never starts, as on the real engine.
        if armed.is_set() and method == "POST" and path.endswith("/start"):
            if not doomed:
                doomed.add(path)
            if path in doomed:
                return 404, "network 1_back not found"
        return None

    with agent_behind(RefusingEngine(tmp_path / "docker.sock", refuse)) as (running, proxy):
        document = local_target({"main": {"networks": ["back"]}}, image=busybox_image, networks={"back": {}})
        post_target(running, document)
        assert wait_until(lambda: applied(running), 60)
        first = supervised_containers()["main"]
        armed.set()
        changed = {"main": {"networks": ["back"], "environment": {"MODE": "2"}}}
        post_target(running, local_target(changed, image=busybox_image, commit="c2", networks={"back": {}}))
        made_again = wait_until(lambda: len(proxy.refused) == 1 and applied(running), 60)
        assert made_again, running.log_text()[-3000:]
        again = supervised_containers()["main"]
        assert again.id != first.id
        assert again.status == "running"
        assert "MODE=2" in again.attrs["Config"]["Env"]
        assert "removed container" in running.log_text()
