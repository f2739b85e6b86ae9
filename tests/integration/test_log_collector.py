"""The log collector follows supervised containers' output into the channel layer."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from apps_api.logs.collector import LogCollector
from supervisor_site.system_services import wait_until

LABELS = {
    "io.balena.supervised": "true",
    "io.balena.app-id": "1",
    "io.balena.service-id": "7",
    "io.balena.service-name": "talker",
}


class GroupListener:
    """The records published to one channel layer group, as a log stream receives them."""

    def __init__(self, group: str) -> None:
        self.records: list[dict[str, Any]] = []
        self._layer = get_channel_layer()
        self._channel = async_to_sync(self._subscribe)(group)

    async def _subscribe(self, group: str) -> str:
        channel = await self._layer.new_channel()
        await self._layer.group_add(group, channel)
        return str(channel)

    def wait_for(self, condition: Callable[[list[dict[str, Any]]], bool], timeout: float = 20) -> None:
        async def receive_until() -> None:
            while not condition(self.records):
                batch = await asyncio.wait_for(self._layer.receive(self._channel), timeout)
                self.records.extend(json.loads(line) for line in batch["lines"])

        try:
            async_to_sync(receive_until)()
        except TimeoutError:
            pytest.fail(f"not received within {timeout} s; got {self.records}")

    def messages(self, service: str = "talker") -> list[str]:
        return [r["message"] for r in self.records if r.get("serviceName") == service]


class RunningCollector:
    def __init__(self, group: str, positions_path: Path | None = None) -> None:
        self.collector = LogCollector(group=group, positions_path=positions_path)
        self.thread = threading.Thread(target=self.collector.run, daemon=True)
        self.thread.start()
        assert self.collector.ready.wait(30), "the collector did not reach the engine"

    def stop(self) -> None:
        self.collector.stop()
        self.thread.join(20)
        assert not self.thread.is_alive()


@pytest.fixture
def group(redis_server: str) -> str:
    """A group of this test's own: streams of other tests and processes do not mix in."""
    return f"test-logs-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def collector(busybox_image: str, group: str) -> Iterator[LogCollector]:
    running = RunningCollector(group)
    yield running.collector
    running.stop()


@pytest.fixture
def containers(docker_engine: None) -> Iterator[Callable[..., Any]]:
    """Runs test containers (detached, labelled as a supervised service unless told
    otherwise) and removes them afterwards."""
    started: list[Any] = []

    def run(command: str, *, labels: dict[str, str] = LABELS, **options: Any) -> Any:
        container = docker.from_env().containers.run(
            "local/busybox:latest", ["sh", "-c", command], labels=labels, detach=True, **options
        )
        started.append(container)
        return container

    yield run
    for container in started:
        container.remove(force=True)


def test_output_of_a_starting_container_is_published_with_its_service(
    collector: LogCollector, group: str, containers: Callable[..., Any]
) -> None:
    listener = GroupListener(group)
    containers("echo out-1; echo err-1 >&2; echo out-2")

    listener.wait_for(lambda records: len(records) >= 3)

    by_message = {record["message"]: record for record in listener.records}
    assert set(by_message) == {"out-1", "err-1", "out-2"}
    assert by_message["err-1"]["isStdErr"] is True
    assert by_message["out-1"]["isStdErr"] is False
    for record in listener.records:
        assert record["serviceName"] == "talker"
        assert record["serviceId"] == 7
        assert record["timestamp"] > 1_700_000_000_000
    stdout = [record["message"] for record in listener.records if not record["isStdErr"]]
    assert stdout == ["out-1", "out-2"]


def test_a_restarted_container_is_followed_again_without_repeating_old_lines(
    collector: LogCollector, group: str, containers: Callable[..., Any]
) -> None:
    listener = GroupListener(group)
    container = containers("echo run-at-$(cat /proc/uptime)")
    listener.wait_for(lambda records: len(records) >= 1)
    container.wait(timeout=20)
    container.start()
    listener.wait_for(lambda records: len(records) >= 2)
    container.wait(timeout=20)
    container.start()
    listener.wait_for(lambda records: len(records) >= 3)

    messages = listener.messages()
    assert all(message.startswith("run-at-") for message in messages)
    assert len(set(messages)) == 3, "each run's line is published once"
    stamps = [record["timestamp"] for record in listener.records]
    assert stamps == sorted(stamps)


def test_logs_level_err_publishes_only_stderr(
    collector: LogCollector, group: str, containers: Callable[..., Any]
) -> None:
    listener = GroupListener(group)
    containers(
        "echo out-1; echo err-1 >&2; echo out-2; echo err-2 >&2", environment={"BALENA_LOGS_LEVEL": "err"}
    )

    listener.wait_for(lambda records: "err-2" in [r["message"] for r in records])

    assert listener.messages() == ["err-1", "err-2"]


def test_logs_level_none_publishes_nothing(
    collector: LogCollector, group: str, containers: Callable[..., Any]
) -> None:
    listener = GroupListener(group)
    quiet = containers("echo hidden", environment={"BALENA_LOGS_LEVEL": "none"})
    quiet.wait(timeout=20)
    containers("echo visible", labels={**LABELS, "io.balena.service-name": "marker"})

    listener.wait_for(lambda records: len(records) >= 1)

    assert [r["message"] for r in listener.records] == ["visible"]


def test_a_tty_container_and_legacy_labels_are_followed(
    collector: LogCollector, group: str, containers: Callable[..., Any]
) -> None:
    listener = GroupListener(group)
    legacy = {"io.resin.supervised": "true", "io.resin.service-id": "3", "io.resin.service-name": "old-style"}
    containers("echo line-1; echo line-2", labels=legacy, tty=True)

    listener.wait_for(lambda records: len(records) >= 2)

    assert listener.messages("old-style") == ["line-1", "line-2"]
    assert all(record["serviceId"] == 3 for record in listener.records)


def test_a_new_collector_resumes_where_the_last_one_stopped(
    busybox_image: str, group: str, containers: Callable[..., Any], tmp_path: Path
) -> None:
    signal_dir = tmp_path / "signal"
    signal_dir.mkdir()
    positions = tmp_path / "positions.json"
    listener = GroupListener(group)
    first = RunningCollector(group, positions)
    counter = containers(
        "seq 0 499; while [ ! -e /signal/go ]; do sleep 0.05; done; seq 500 999",
        volumes={str(signal_dir): {"bind": "/signal", "mode": "ro"}},
    )
    listener.wait_for(lambda records: len(records) >= 500)
    first.stop()

    (signal_dir / "go").touch()  # printed while no collector runs
    counter.wait(timeout=20)
    second = RunningCollector(group, positions)
    try:
        listener.wait_for(lambda records: len(records) >= 1000)
    finally:
        second.stop()

    assert listener.messages() == [str(number) for number in range(1000)]
    assert wait_until(lambda: positions.exists(), 5)
