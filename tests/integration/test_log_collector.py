"""The log collector follows supervised containers' output into the channel layer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import docker
import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from apps_api.log_collector import LogCollector
from apps_api.logs import LOGS_GROUP

LABELS = {
    "io.balena.supervised": "true",
    "io.balena.app-id": "1",
    "io.balena.service-id": "7",
    "io.balena.service-name": "talker",
}


@pytest.fixture
def collector(busybox_image: str, redis_server: str) -> Iterator[LogCollector]:
    collector = LogCollector()
    runner = threading.Thread(target=collector.run, daemon=True)
    runner.start()
    assert collector.ready.wait(30), "the collector did not reach the engine"
    yield collector
    collector.stop()
    runner.join(10)


def receive_records(count: int) -> Iterator[dict]:
    layer = get_channel_layer()

    async def subscribe() -> str:
        channel = await layer.new_channel()
        await layer.group_add(LOGS_GROUP, channel)
        return channel

    channel = async_to_sync(subscribe)()
    yield {}
    for _ in range(count):
        message = async_to_sync(asyncio.wait_for)(layer.receive(channel), 20)
        yield message["record"]


def test_output_of_a_starting_container_is_published_with_its_service(
    collector: LogCollector, busybox_image: str
) -> None:
    records = receive_records(3)
    next(records)  # subscribed before the container starts
    container = docker.from_env().containers.run(
        busybox_image,
        ["sh", "-c", "echo out-1; echo err-1 >&2; echo out-2"],
        labels=LABELS,
        detach=True,
    )
    try:
        received = [next(records) for _ in range(3)]
    finally:
        container.remove(force=True)

    by_message = {record["message"]: record for record in received}
    assert set(by_message) == {"out-1", "err-1", "out-2"}
    assert by_message["err-1"]["isStdErr"] is True
    assert "isStdErr" not in by_message["out-1"]
    for record in received:
        assert record["serviceName"] == "talker"
        assert record["serviceId"] == 7
        assert record["timestamp"] > 1_700_000_000_000
    assert by_message["out-1"]["timestamp"] <= by_message["out-2"]["timestamp"]


def test_a_restarted_container_is_followed_again_without_repeating_old_lines(
    collector: LogCollector, busybox_image: str
) -> None:
    records = receive_records(3)
    next(records)
    container = docker.from_env().containers.run(
        busybox_image, ["sh", "-c", "echo run-at-$(cat /proc/uptime)"], labels=LABELS, detach=True
    )
    try:
        first = next(records)
        container.wait(timeout=20)
        container.start()
        second = next(records)
        container.wait(timeout=20)
        container.start()
        third = next(records)
    finally:
        container.remove(force=True)

    messages = [first["message"], second["message"], third["message"]]
    assert all(message.startswith("run-at-") for message in messages)
    assert len(set(messages)) == 3, "each run's line is published once"
    assert first["timestamp"] <= second["timestamp"] <= third["timestamp"]
