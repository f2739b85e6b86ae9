"""GET /v2/local/logs and /v2/local/logs/ws, end to end: an agent as it ships (its web
server and its log collector, threads of one process), test containers printing, clients
reading."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker
import pytest
import requests

from apps_api.engine import docker as engine
from supervisor_site.system_services import wait_until
from tests.integration.conftest import PROJECT_DIR, StartWeb, WebProcess, manage
from tests.integration.log_stream_clients import NdjsonClient, WebSocketClient

FIRST_LINE = '{"message":"Streaming logs","isSystem":true}'


def service_labels(name: str, service_id: int) -> dict[str, str]:
    return {
        "io.balena.supervised": "true",
        "io.balena.app-id": "1",
        "io.balena.service-id": str(service_id),
        "io.balena.service-name": name,
    }


class AgentCollector:
    """The log collector as it runs in production: a thread of the agent process. Stopping
    it ends that process (the parent starts it again after 1 s, as on a device)."""

    def __init__(self, web: WebProcess) -> None:
        self.web = web

    def stop(self, signum: int = signal.SIGTERM) -> None:
        self.web.kill_agent(signum=signum, wait=False)

    def start(self) -> None:
        self.web.wait_ready()


@pytest.fixture
def web(start_web: StartWeb, busybox_image: str) -> WebProcess:
    return start_web()


@pytest.fixture
def collector(web: WebProcess) -> AgentCollector:
    return AgentCollector(web)


@pytest.fixture
def containers(docker_engine: None) -> Iterator[Callable[..., Any]]:
    started: list[Any] = []

    def run(command: str, *, service: str, service_id: int = 1, **options: Any) -> Any:
        container = docker.from_env().containers.run(
            "local/busybox:latest",
            ["sh", "-c", command],
            labels=service_labels(service, service_id),
            detach=True,
            **options,
        )
        started.append(container)
        return container

    yield run
    for container in started:
        with contextlib.suppress(docker.errors.NotFound):  # a test may remove it itself
            container.remove(force=True)


@pytest.fixture
def streams() -> Iterator[list[NdjsonClient | WebSocketClient]]:
    """Clients to close after the test."""
    opened: list[NdjsonClient | WebSocketClient] = []
    yield opened
    for client in opened:
        client.close()


def open_ndjson(web: WebProcess, streams: list[Any], path: str = "/v2/local/logs") -> NdjsonClient:
    client = NdjsonClient(web.base_url, path)
    streams.append(client)
    return client


def open_websocket(web: WebProcess, streams: list[Any]) -> WebSocketClient:
    client = WebSocketClient(web.base_url.replace("http://", "ws://") + "/v2/local/logs/ws")
    streams.append(client)
    return client


def wait_until_followed(
    collector: AgentCollector, client: NdjsonClient, containers: Callable[..., Any]
) -> None:
    """Until the collector answers: a probe container's line reaches the stream (it runs
    on, so that a collector still starting finds it running)."""
    containers("echo probe; sleep 600", service="probe")
    client.wait_for(lambda records: any(r.get("serviceName") == "probe" for r in records), 60)


TEXTS = ["plain words", 'a "quoted" {json-like} line', "tab\there and a backslash \\", "ünïcödé ✓"]
PRINT_TEXTS = "; ".join(f"printf '%s\\n' '{text}'" for text in TEXTS)


def test_ndjson_stream_starts_at_once_then_carries_each_container_line(
    web: WebProcess, collector: AgentCollector, containers: Callable[..., Any], streams: list[Any]
) -> None:
    client = open_ndjson(web, streams)
    assert client.status == 200
    assert client.response.getheader("Content-Encoding") is None
    client.wait_for(lambda records: len(records) >= 1)  # before any container printed
    assert client.lines[0] == FIRST_LINE
    wait_until_followed(collector, client, containers)

    containers(f"{PRINT_TEXTS}; echo oops >&2", service="talker", service_id=7)
    containers("seq 1 200", service="counter", service_id=8)
    records = client.wait_for(
        lambda rs: len([r for r in rs if r.get("serviceName") in ("talker", "counter")]) >= 205
    )

    talker = [r for r in records if r.get("serviceName") == "talker"]
    assert [r["message"] for r in talker if not r["isStdErr"]] == TEXTS
    assert [r["message"] for r in talker if r["isStdErr"]] == ["oops"]
    assert client.messages("counter") == [str(n) for n in range(1, 201)]
    for record in talker:
        assert record["serviceId"] == 7
        assert isinstance(record["timestamp"], int)
        assert abs(record["timestamp"] - time.time() * 1000) < 600_000  # epoch milliseconds


def test_websocket_stream_carries_the_same_records(
    web: WebProcess, collector: AgentCollector, containers: Callable[..., Any], streams: list[Any]
) -> None:
    ndjson = open_ndjson(web, streams)
    wait_until_followed(collector, ndjson, containers)
    socket = open_websocket(web, streams)
    socket.wait_for(lambda records: len(records) >= 1)
    assert socket.lines[0] == FIRST_LINE

    containers(f"{PRINT_TEXTS}; seq 1 300", service="talker", service_id=7)
    expected = [*TEXTS, *(str(n) for n in range(1, 301))]
    socket.wait_for(lambda records: len([r for r in records if r.get("serviceName") == "talker"]) >= 304)
    ndjson.wait_for(lambda records: len([r for r in records if r.get("serviceName") == "talker"]) >= 304)

    assert socket.messages("talker") == expected
    ws_talker = [r for r in socket.records if r.get("serviceName") == "talker"]
    http_talker = [r for r in ndjson.records if r.get("serviceName") == "talker"]
    assert ws_talker == http_talker


def test_a_counting_container_is_streamed_exactly_once_across_a_collector_restart(
    web: WebProcess,
    collector: AgentCollector,
    containers: Callable[..., Any],
    streams: list[Any],
    tmp_path: Path,
) -> None:
    store_target_config(web, {"SUPERVISOR_PERSISTENT_LOGGING": "true"})
    gate = tmp_path / "gate"
    gate.mkdir()
    client = open_ndjson(web, streams)
    wait_until_followed(collector, client, containers)
    since = int(time.time() * 1000)
    counter = containers(
        "seq 0 4999; while [ ! -e /gate/open ]; do sleep 0.05; done; seq 5000 9999",
        service="counter",
        volumes={str(gate): {"bind": "/gate", "mode": "ro"}},
    )
    client.wait_for(lambda records: "4999" in [r["message"] for r in records[-50:]])

    collector.stop()
    (gate / "open").touch()  # the second half is printed while no collector runs
    counter.wait(timeout=60)
    collector.start()
    # The stream of before the restart ended with the process; the kept records say it all.
    replay = open_ndjson(web, streams, f"/v2/local/logs?since={since}")
    replay.wait_for(lambda records: "9999" in [r["message"] for r in records[-50:]], 60)

    assert replay.messages("counter") == [str(n) for n in range(10_000)]


def test_a_counting_container_is_streamed_exactly_once_across_a_collector_crash(
    web: WebProcess, collector: AgentCollector, containers: Callable[..., Any], streams: list[Any]
) -> None:
    store_target_config(web, {"SUPERVISOR_PERSISTENT_LOGGING": "true"})
    client = open_ndjson(web, streams)
    wait_until_followed(collector, client, containers)
    since = int(time.time() * 1000)
    containers(
        "i=0; while [ $i -lt 60 ]; do seq $((i * 100)) $((i * 100 + 99)); sleep 0.05; i=$((i + 1)); done",
        service="counter",
    )
    client.wait_for(lambda records: sum(r.get("serviceName") == "counter" for r in records) >= 1000)

    collector.stop(signal.SIGKILL)  # no last save of its positions: some lines are read again
    collector.start()
    replay = open_ndjson(web, streams, f"/v2/local/logs?since={since}")
    replay.wait_for(lambda records: "5999" in [r["message"] for r in records[-50:]], 60)

    assert replay.messages("counter") == [str(n) for n in range(6000)]


def system_messages(records: list[dict[str, Any]], prefix: str | tuple[str, ...]) -> list[str]:
    return [r["message"] for r in records if r.get("isSystem") and r["message"].startswith(prefix)]


def test_a_service_that_exits_on_its_own_is_announced_and_so_is_its_restart(
    web: WebProcess, collector: AgentCollector, containers: Callable[..., Any], streams: list[Any]
) -> None:
    client = open_ndjson(web, streams)
    wait_until_followed(collector, client, containers)
    crasher = containers(
        "exit 3",
        service="crasher",
        restart_policy={"Name": "on-failure", "MaximumRetryCount": 1},
    )
    about_crasher = "Service exited 'crasher", "Restarting service 'crasher"
    records = client.wait_for(lambda rs: len(system_messages(rs, about_crasher)) >= 3, 60)

    image = docker.from_env().containers.get(crasher.id).image.id
    assert system_messages(records, about_crasher) == [
        f"Service exited 'crasher {image}'",
        f"Restarting service 'crasher {image}'",
        f"Service exited 'crasher {image}'",
    ]
    assert image.startswith("sha256:")


def test_a_service_the_supervisor_stops_or_kills_is_not_announced_as_exited(
    web: WebProcess, collector: AgentCollector, containers: Callable[..., Any], streams: list[Any]
) -> None:
    client = open_ndjson(web, streams)
    wait_until_followed(collector, client, containers)
    # A shell as PID 1 ignores SIGTERM unless it traps it: the stop would wait out its 10 s.
    service = "trap 'exit 0' TERM; echo up; sleep 600 & wait"
    stopped = containers(service, service="stopped", restart_policy={"Name": "always"})
    killed = containers(service, service="killed", restart_policy={"Name": "always"})
    client.wait_for(lambda rs: len([r for r in rs if r.get("serviceName") in ("stopped", "killed")]) >= 2)

    # The gateway calls behind the kill and stop steps, stop-service and reboot.
    engine.stop_container(stopped.id)
    engine.kill_container(killed.id)
    # The engine's events come in order: once a later exit is announced, any for these was.
    containers("exit 0", service="marker")
    records = client.wait_for(lambda rs: bool(system_messages(rs, "Service exited 'marker")), 60)

    assert system_messages(records, "Service exited") == system_messages(records, "Service exited 'marker")
    assert system_messages(records, "Restarting service") == []


def test_host_unit_journal_lines_reach_the_streams_and_journalctl_exiting_is_survived(
    start_web: StartWeb, containers: Callable[..., Any], streams: list[Any], tmp_path: Path
) -> None:
    # journalctl is tests/fake_journalctl.py: no systemd-journald runs in CI. Its first run
    # prints two entries and exits as journalctl does when it loses the journal; the second
    # prints one more and follows.
    journal = tmp_path / "journal"
    journal.mkdir()
    now_us = int(time.time() * 1_000_000)

    def entry(message: str, priority: int, cursor: str) -> dict[str, str]:
        return {"MESSAGE": message, "PRIORITY": str(priority), "__REALTIME_TIMESTAMP": str(now_us),
                "__CURSOR": cursor, "_SYSTEMD_UNIT": "os-power-mode.service"}  # fmt: skip

    runs = [
        {
            "entries": [entry("power mode set to high", 6, "s=1"), entry("fan profile failed", 3, "s=2")],
            "exit": 1,
            "after_go": True,  # once the stream below is open
        },
        {"entries": [entry("update applied", 5, "s=3")], "exit": None},
    ]
    (journal / "plan.json").write_text(json.dumps(runs))
    web = start_web(SUPERVISOR_JOURNALCTL=str(PROJECT_DIR / "tests" / "fake_journalctl.py"),
                    FAKE_JOURNAL_DIR=str(journal))  # fmt: skip
    collector = AgentCollector(web)
    client = open_ndjson(web, streams)
    (journal / "go").touch()
    records = client.wait_for(lambda rs: any(r["message"] == "update applied" for r in rs), 60)
    wait_until_followed(collector, client, containers)

    host = [
        r
        for r in records
        if r["message"] in ("power mode set to high", "fan profile failed", "update applied")
    ]
    assert host == [
        {
            "message": "power mode set to high",
            "timestamp": now_us // 1000,
            "isSystem": True,
            "isStdErr": False,
        },
        {"message": "fan profile failed", "timestamp": now_us // 1000, "isSystem": True, "isStdErr": True},
        {"message": "update applied", "timestamp": now_us // 1000, "isSystem": True, "isStdErr": False},
    ]
    calls = [json.loads(line) for line in (journal / "argv").read_text().splitlines()]
    assert len(calls) == 2
    assert "--after-cursor=s=2" in calls[1]


def store_target_config(web: WebProcess, config: dict[str, str]) -> None:
    code = (
        "from apps_api.target.documents import parse_target; from apps_api.target.store import store_target; "
        "from hostcfg.identity import load_device_identity; "
        f"doc = {{'local': {{'name': 'd', 'config': {config!r}, 'apps': {{}}}}}}; "
        "store_target(parse_target(doc, device_uuid=load_device_identity().uuid))"
    )
    stored = manage(web.env, "shell", "-c", code)
    assert stored.returncode == 0, stored.stderr


def test_persistent_logs_are_replayed_since_the_asked_time(
    web: WebProcess, containers: Callable[..., Any], streams: list[Any], tmp_path: Path
) -> None:
    store_target_config(web, {"SUPERVISOR_PERSISTENT_LOGGING": "true"})
    collector = AgentCollector(web)
    live = open_ndjson(web, streams)
    wait_until_followed(collector, live, containers)
    before = int(time.time() * 1000)
    containers("seq 1 300", service="kept")
    live.wait_for(lambda records: "300" in [r["message"] for r in records[-10:]])

    def output_of_kept(records: list[dict[str, Any]]) -> list[str]:
        # System lines ("Service exited" of the probe container) may come in between.
        return [r["message"] for r in records if r.get("serviceName") == "kept" and not r.get("isSystem")]

    replay = open_ndjson(web, streams, f"/v2/local/logs?since={before}")
    replay.wait_for(lambda records: len(output_of_kept(records)) >= 300)
    assert replay.lines[0] == FIRST_LINE
    assert output_of_kept(replay.records)[:300] == [str(n) for n in range(1, 301)]

    later = open_ndjson(web, streams, f"/v2/local/logs?since={int(time.time() * 1000) + 60_000}")
    marker = later.wait_for(lambda records: len(records) >= 1)
    assert [r["message"] for r in marker] == ["Streaming logs"]


def test_a_managed_device_asks_a_key_for_the_log_streams(start_web: StartWeb, tmp_path: Path) -> None:
    config_json = tmp_path / "data" / "boot" / "config.json"
    config_json.parent.mkdir(parents=True)
    config_json.write_text(json.dumps({"apiEndpoint": "http://127.0.0.1:9"}))
    web = start_web()
    key = manage(web.env, "apikey").stdout.strip()

    refused = web.get("/v2/local/logs")
    assert (refused.status_code, refused.text) == (401, "Unauthorized")
    handshake = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                 "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}  # fmt: skip
    assert web.get("/v2/local/logs/ws", headers=handshake).status_code == 403

    with requests.get(
        f"{web.base_url}/v2/local/logs", params={"apikey": key}, stream=True, timeout=10
    ) as allowed:
        assert allowed.status_code == 200
        assert next(allowed.iter_lines()) == FIRST_LINE.encode()
    socket = WebSocketClient(f"{web.base_url.replace('http://', 'ws://')}/v2/local/logs/ws?apikey={key}")
    try:
        assert socket.wait_for(lambda records: len(records) >= 1)[0]["message"] == "Streaming logs"
    finally:
        socket.close()


def test_a_stream_that_falls_behind_is_told_how_many_records_it_missed(redis_server: str) -> None:
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from apps_api.logs.publisher import LogPublisher
    from apps_api.logs.records import system_record
    from localmode.log_follow import LogFollower

    group = f"test-slow-{time.monotonic_ns()}"
    publisher = LogPublisher(group=group, persist=lambda: False)
    layer = get_channel_layer()
    capacity = layer.capacity  # messages a channel holds before the layer drops new ones

    async def follow() -> LogFollower:
        follower = LogFollower(layer, await layer.new_channel(), group=group)
        await follower.start()
        return follower

    async def receive_all(follower: LogFollower, until: str) -> list[str]:
        lines: list[str] = []
        while not any(until in line for line in lines):
            message = await asyncio.wait_for(layer.receive(follower.channel), 20)
            lines.extend((await follower.text_of(message)).splitlines())
        return lines

    follower = async_to_sync(follow)()
    for number in range(capacity + 50):  # one batch each, none read meanwhile
        publisher.publish(system_record(f"record {number}"))
        assert publisher.flush(20)
    publisher.publish(system_record("last"))

    lines = async_to_sync(receive_all)(follower, '"last"')
    messages = [json.loads(line)["message"] for line in lines]

    assert messages[:capacity] == [f"record {n}" for n in range(capacity)]
    assert messages[capacity:] == ["Warning: Suppressed 50 message(s) due to high load", "last"]


def test_supervisor_system_messages_reach_the_streams(redis_server: str) -> None:
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from apps_api.logs.publisher import system_log
    from localmode.log_follow import LogFollower

    layer = get_channel_layer()
    text = f"Installing service 'main local/busybox:latest' ({time.monotonic_ns()})"

    async def follow_until_seen() -> dict[str, Any]:
        follower = LogFollower(layer, await layer.new_channel())
        await follower.start()
        system_log(text)
        try:
            while True:
                message = await asyncio.wait_for(layer.receive(follower.channel), 20)
                for line in (await follower.text_of(message)).splitlines():
                    if json.loads(line)["message"] == text:
                        return dict(json.loads(line))
        finally:
            await follower.stop()

    record = async_to_sync(follow_until_seen)()

    assert record["isSystem"] is True
    assert "serviceName" not in record
    assert isinstance(record["timestamp"], int)


FLOOD_LINES = 100_000
SUPPRESSED = re.compile(r"^Warning: Suppressed (\d+) message")


def flood_published(records: list[dict[str, Any]]) -> bool:
    """Every flood line reached this stream, or was reported to it as missed."""
    seen = sum(1 for record in records if record.get("serviceName") == "flood")
    missed = sum(int(match.group(1)) for record in records if (match := SUPPRESSED.match(record["message"])))
    return seen + missed >= FLOOD_LINES


def test_a_reader_that_stops_reading_costs_bounded_memory_and_is_told_what_it_missed(
    web: WebProcess, collector: AgentCollector, containers: Callable[..., Any], streams: list[Any]
) -> None:
    probe = open_ndjson(web, streams)
    wait_until_followed(collector, probe, containers)
    address = urlsplit(web.base_url)
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # small: the server holds the rest
    stalled.connect((address.hostname, address.port))
    try:
        stalled.sendall(b"GET /v2/local/logs HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert b"\r\n\r\n" in stalled.recv(4096)
        # About 15 MB of records while the reader does not read: more than the kernel's and the
        # server's buffers together.
        flood = containers(f"seq 1 {FLOOD_LINES}", service="flood")
        flood.wait(timeout=120)
        # The whole flood is published before the stalled reader reads again: every flood line
        # reached the probe or was counted as missed by it (on a loaded machine the probe may
        # be a slow reader too). Another container's line is no proof: each container's lines
        # are published by a follower of its own. A slow reader is told with the next line
        # it gets: one more is published for it, again until the count is complete.
        for attempt in range(12):
            containers(f"echo probe-end-{attempt}", service=f"probe-end-{attempt}")
            if wait_until(lambda: flood_published(probe.records), 10):
                break
        else:
            pytest.fail("the flood was not all published to the probe")
        received = b""
        stalled.settimeout(2)
        with contextlib.suppress(TimeoutError):  # what the server kept, until it has no more
            while data := stalled.recv(1 << 20):
                received += data
        # The next record comes with a line that says how many were dropped.
        containers("echo after", service="after")
        stalled.settimeout(30)
        with contextlib.suppress(TimeoutError):
            while b"after" not in received and (data := stalled.recv(1 << 20)):
                received += data
    finally:
        stalled.close()
    assert b"Warning: Suppressed " in received
    lines = [line for line in received.split(b"\n") if line.startswith(b"{")]
    assert len(lines) < FLOOD_LINES
    assert web.get("/ping").status_code == 200
