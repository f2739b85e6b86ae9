"""Logs uploaded to the fake cloud (tests/fake_cloud.py) over a real long-lived HTTP stream."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.conf import settings

from apps_api.cloud import client as cloud
from apps_api.cloud import log_upload as cloud_logs
from apps_api.cloud.log_upload import CloudLogUploader
from apps_api.logs.publisher import LogPublisher
from apps_api.logs.records import LogRecord, system_record
from apps_api.target.documents import parse_cloud_target
from apps_api.target.store import store_target
from hostcfg.identity import load_device_identity
from supervisor_site.system_services import wait_until
from tests.fake_cloud import FakeCloud, Scripted, make_certificate
from tests.integration.test_log_collector import LABELS, RunningCollector, containers  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)

LOG_STREAM = "POST /device/v2/*/log-stream"


@pytest.fixture
def provisioned(fake_cloud: FakeCloud) -> FakeCloud:
    assert cloud.provision()
    return fake_cloud


@pytest.fixture
def group(redis_server: str) -> str:
    return f"test-cloud-logs-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def publisher(group: str) -> LogPublisher:
    return LogPublisher(group=group, persist=lambda: False)


@pytest.fixture
def start_uploader(group: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., CloudLogUploader]]:
    """Uploaders on this test's group, quick to start sending and to notice config changes."""
    monkeypatch.setattr(cloud_logs, "ENABLED_CHECK_SECONDS", 0.2)
    started: list[CloudLogUploader] = []

    def start(**options: Any) -> CloudLogUploader:
        uploader = CloudLogUploader(group=group, **{"start_delay": 0.2, "reconnect_base": 0.3, **options})
        uploader.start()
        started.append(uploader)
        return uploader

    yield start
    for uploader in started:
        uploader.stop()


def uploaded_messages(fake: FakeCloud) -> list[str]:
    return [record["message"] for record in fake.log_lines]


def publish_until_uploaded(publisher: LogPublisher, fake: FakeCloud, message: str) -> None:
    """Publish `message` until the cloud got it: the uploader turns on a moment after it starts."""
    for _ in range(100):
        publisher.publish(system_record(message))
        if wait_until(lambda: message in uploaded_messages(fake), timeout=0.5):
            return
    pytest.fail(f"{message!r} never reached the cloud; it got {uploaded_messages(fake)}")


def test_container_output_and_system_messages_reach_the_cloud(
    provisioned: FakeCloud,
    group: str,
    publisher: LogPublisher,
    start_uploader: Callable[..., CloudLogUploader],
    containers: Callable[..., Any],  # noqa: F811
    busybox_image: str,
) -> None:
    start_uploader()
    publish_until_uploaded(publisher, provisioned, "ready")
    collector = RunningCollector(group)
    try:
        containers("echo hello; echo oops >&2; head -c 12000 /dev/zero | tr '\\0' x; echo")
        assert wait_until(lambda: sum("serviceId" in r for r in provisioned.log_lines) >= 3, timeout=20)
    finally:
        collector.stop()
    publisher.publish(system_record("Killing service 'talker'"))
    assert wait_until(lambda: "Killing service 'talker'" in uploaded_messages(provisioned), timeout=10)

    by_message = {record["message"]: record for record in provisioned.log_lines}
    hello, oops = by_message["hello"], by_message["oops"]
    assert set(hello) == {"message", "timestamp", "isStdErr", "serviceId"}
    assert (hello["isStdErr"], hello["serviceId"], oops["isStdErr"], oops["serviceId"]) == (False, 7, True, 7)
    assert abs(hello["timestamp"] - time.time() * 1000) < 60_000
    # Lines over 10 000 characters are cut there and marked.
    assert "x" * 9_995 + "[...]" in by_message  # 10 000 characters, the mark included
    system = by_message["Killing service 'talker'"]
    assert (system["isSystem"], system["isStdErr"], "serviceId" in system) == (True, False, False)

    (stream, *_) = provisioned.requests_to("POST", "/device/v2/*/log-stream")
    device = load_device_identity()
    assert stream.path == f"/device/v2/{device.uuid}/log-stream"
    assert stream.headers["Authorization"] == f"Bearer {device.device_api_key}"
    assert stream.headers["Content-Type"] == "application/x-ndjson"
    assert stream.headers["Content-Encoding"] == "gzip"
    assert stream.headers["Transfer-Encoding"] == "chunked"
    # One long-lived stream carried it all.
    assert len(provisioned.requests_to("POST", "/device/v2/*/log-stream")) == 1


def test_a_cloud_signed_by_a_private_root_ca_is_trusted_through_config_json(
    fake_cloud: FakeCloud,
    publisher: LogPublisher,
    start_uploader: Callable[..., CloudLogUploader],
    tmp_path: Path,
) -> None:
    """An openBalena install: its certificate is signed by a root CA of its own, which
    config.json carries as balenaRootCA (base64 PEM), for provisioning and the log stream
    alike. Over TLS 1.3 the server speaks first after the handshake (session tickets): that
    is not the cloud answering the stream."""
    certificate, key = make_certificate(tmp_path)  # self-signed: its own root CA
    secure = FakeCloud()
    secure.start(tls=(certificate, key))
    try:
        config_json = Path(settings.SUPERVISOR_CONFIG_JSON)
        config = {**json.loads(config_json.read_text()), "apiEndpoint": secure.url}
        config_json.write_text(json.dumps(config))
        with pytest.raises(cloud.CloudError, match="CERTIFICATE_VERIFY_FAILED"):
            cloud.provision()  # without it, the system's CAs do not know this one

        config["balenaRootCA"] = base64.b64encode(certificate.read_bytes()).decode()
        config_json.write_text(json.dumps(config))
        assert cloud.provision()
        start_uploader()
        publish_until_uploaded(publisher, secure, "over TLS")
        assert len(secure.requests_to("POST", "/device/v2/*/log-stream")) == 1
    finally:
        secure.stop()


def test_a_refused_stream_is_retried_with_growing_delays_and_drops_are_reported(
    provisioned: FakeCloud, publisher: LogPublisher, start_uploader: Callable[..., CloudLogUploader]
) -> None:
    uploader = start_uploader()
    assert uploader.joined.wait(10)
    provisioned.script(LOG_STREAM, *[Scripted(500, b"no")] * 3)
    publisher.publish(system_record("first"))
    assert wait_until(lambda: bool(provisioned.requests_to("POST", "/device/v2/*/log-stream")), timeout=10)
    # 400 records of 1 000 characters: more than the 256 KB the uploader keeps meanwhile.
    for index in range(400):
        publisher.publish(
            LogRecord(message=f"{index:04d}" + "y" * 996, timestamp=1_000 + index, service_id=7)
        )
    assert publisher.flush(10)

    assert wait_until(lambda: any("Suppressed" in m for m in uploaded_messages(provisioned)), timeout=20)
    messages = uploaded_messages(provisioned)
    kept = [m[:4] for m in messages[1:-1]]
    assert messages[0] == "first"
    assert 0 < len(kept) < 400
    assert kept == [f"{i:04d}" for i in range(len(kept))]
    assert messages[-1] == f"Warning: Suppressed {400 - len(kept)} message(s) due to high load"

    # Three refusals, then the stream that carried the logs; 0.3 s, 0.6 s, 1.2 s between them.
    started = [r for r in provisioned.received if r.path.endswith("/log-stream")]
    assert len(started) == 4
    stamps = [r.at for r in started]
    gaps = [later - earlier for earlier, later in itertools.pairwise(stamps)]
    assert [gap >= least for gap, least in zip(gaps, (0.3, 0.6, 1.2), strict=True)] == [True] * 3, gaps


def test_an_idle_stream_is_ended_and_a_new_one_opened_for_new_logs(
    provisioned: FakeCloud, publisher: LogPublisher, start_uploader: Callable[..., CloudLogUploader]
) -> None:
    start_uploader(idle_seconds=0.5)
    publish_until_uploaded(publisher, provisioned, "before")
    assert wait_until(lambda: provisioned.log_streams_ended == 1, timeout=10)
    publisher.publish(system_record("after"))
    assert wait_until(lambda: "after" in uploaded_messages(provisioned), timeout=10)
    assert uploaded_messages(provisioned).count("after") == 1
    assert len(provisioned.requests_to("POST", "/device/v2/*/log-stream")) == 2


def test_a_log_stream_of_the_api_receives_while_the_uploader_does(
    provisioned: FakeCloud,
    group: str,
    publisher: LogPublisher,
    start_uploader: Callable[..., CloudLogUploader],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In the agent the uploader's thread and the web server's (the log streams) each run
    an event loop; channels_redis lets one loop at a time receive on a layer instance, and
    the second to try fails (the stream, or the uploader, which then waits and retries)."""
    caplog.set_level(logging.WARNING, logger=cloud_logs.__name__)
    start_uploader()
    publish_until_uploaded(publisher, provisioned, "uploading")

    async def stream_receives() -> list[dict[str, Any]]:
        layer = get_channel_layer()
        assert layer is not None
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        received = []
        try:
            # Several times: the uploader is between two receives now and then.
            for number in range(5):
                publisher.publish(system_record(f"for the stream {number}"))
                received.append(await asyncio.wait_for(layer.receive(channel), 10))
            return received
        finally:
            await layer.group_discard(group, channel)

    received = json.dumps(asyncio.run(stream_receives()))
    assert all(f"for the stream {number}" in received for number in range(5))
    assert wait_until(lambda: "for the stream 4" in uploaded_messages(provisioned), timeout=10)
    assert not [r.getMessage() for r in caplog.records if "could not read the log group" in r.getMessage()]


def test_nothing_is_uploaded_while_log_control_is_off(
    provisioned: FakeCloud, publisher: LogPublisher, start_uploader: Callable[..., CloudLogUploader]
) -> None:
    device_uuid = load_device_identity().uuid

    def target(config: dict[str, str]) -> None:
        store_target(parse_cloud_target({device_uuid: {"name": "d", "config": config, "apps": {}}},
                                        device_uuid=device_uuid))  # fmt: skip

    target({"SUPERVISOR_LOG_CONTROL": "false"})
    uploader = start_uploader()
    time.sleep(1)  # several of the uploader's checks (0.2 s here): it stays off
    assert not uploader.joined.is_set()
    publisher.publish(system_record("while off"))
    assert publisher.flush(10)
    target({"SUPERVISOR_LOG_CONTROL": "true"})
    assert uploader.joined.wait(10)
    publish_until_uploaded(publisher, provisioned, "when on")
    assert "while off" not in uploaded_messages(provisioned)
    # Off again: it leaves the log group at the next record it reads.
    target({"SUPERVISOR_LOG_CONTROL": "false"})

    def left() -> bool:
        publisher.publish(system_record("after off"))
        return not uploader.joined.is_set()

    assert wait_until(left, timeout=10)


def test_a_fresh_device_sends_its_first_releases_logs_from_the_first_line(
    agent_fake_cloud: FakeCloud, engine: str
) -> None:
    """The agent as it ships, with its real timings: what its first release logs before and
    while the device provisions (the install, the container's first line) reaches the cloud,
    through its collector and uploader threads."""
    from tests.integration.engine_helpers import supervised_containers
    from tests.integration.test_cloud import fleet_document

    uuid = load_device_identity().uuid
    document = fleet_document(uuid, engine)
    release = document[uuid]["apps"]["fleetuuid"]["releases"]["c0ffee"]
    release["services"]["main"]["composition"]["command"] = ["sh", "-c", "echo first line; sleep 100000"]
    agent_fake_cloud.set_target(uuid, document)  # waiting for the device before it registers

    assert wait_until(lambda: "main" in supervised_containers(), 60), "the agent did not apply the release"
    wanted = {f"Installing service 'main {engine}'", f"Started service 'main {engine}'", "first line"}
    assert wait_until(lambda: wanted <= set(uploaded_messages(agent_fake_cloud)), timeout=60), (
        uploaded_messages(agent_fake_cloud)
    )
    first = next(r for r in agent_fake_cloud.log_lines if r["message"] == "first line")
    assert first["serviceId"] == 7
