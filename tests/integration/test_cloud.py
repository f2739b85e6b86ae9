"""The cloud client against a fake balena API over real HTTP (tests/fake_cloud.py)."""

from __future__ import annotations

import json
import os
import signal
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings

from apps_api import actions, redis_store
from apps_api.apikeys import get_or_create_global_key, regenerate_api_key
from apps_api.cloud import client as cloud
from apps_api.cloud import poll as cloud_poll
from apps_api.cloud import report as cloud_report
from apps_api.device_settings import api_request_timeout_seconds
from apps_api.engine.state import TargetState
from apps_api.errors import InternalFailure
from apps_api.health import failed_health_checks
from apps_api.models import TargetRecord
from apps_api.redis_store import redis_client
from apps_api.target.store import store_target
from hostcfg.blink import no_connectivity_shown
from hostcfg.identity import load_device_identity, read_config_json
from hostcfg.report_cache import report_cache_path
from supervisor_site.system_services import wait_until
from tests.agent_client import Client
from tests.agent_process import Agent
from tests.fake_cloud import FakeCloud, Scripted
from tests.integration.engine_helpers import supervised_containers, wait_applied

pytestmark = pytest.mark.django_db(transaction=True)


def config_json() -> Path:
    """The config.json this process's cloud code reads (the `fake_cloud` fixture's own)."""
    return Path(settings.SUPERVISOR_CONFIG_JSON)


HOST_ROOT = Path(settings.SUPERVISOR_HOST_ROOT)
REPORT_CACHE = report_cache_path(HOST_ROOT)


def fleet_document(uuid: str, image: str, *, commit: str = "c0ffee", release: int = 5) -> dict[str, Any]:
    composition = {"command": ["sleep", "100000"], "stop_signal": "SIGKILL"}
    environment = {"RELEASE": str(release)}
    service = {"id": 7, "image_id": 70, "image": image, "environment": environment, "labels": {},
               "composition": composition}  # fmt: skip
    app = {"id": 3, "name": "fleetapp", "releases": {commit: {"id": release, "services": {"main": service}}}}
    return {uuid: {"name": "fleet-device", "config": {}, "apps": {"fleetuuid": app}}}


def tick_until_polled() -> None:
    cloud_poll.request_poll_now(force=False)
    cloud_poll.cloud_tick()


def test_provisioning_registers_and_drops_the_provisioning_key(fake_cloud: FakeCloud) -> None:
    uuid = load_device_identity().uuid
    assert cloud.provision()
    (register,) = fake_cloud.requests_to("POST", "/device/register")
    assert register.headers["Authorization"] == f"Bearer {fake_cloud.provisioning_key}"
    assert register.body["uuid"] == uuid
    assert register.body["application"] == "1"
    assert register.body["api_key"] == load_device_identity().device_api_key
    stored = read_config_json(config_json())
    assert stored["deviceId"] == fake_cloud.devices[uuid].device_id
    assert stored["registered_at"]
    assert "apiKey" not in stored
    assert cloud.cloud_device().provisioned  # type: ignore[union-attr]


def test_a_registered_device_that_lost_its_id_and_provisioning_key_finds_itself_with_its_key(
    fake_cloud: FakeCloud,
) -> None:
    assert cloud.provision()
    device_id = read_config_json(config_json())["deviceId"]
    config = read_config_json(config_json())
    del config["deviceId"]  # what an older OS image or a hand edit leaves: no id, no apiKey
    assert "apiKey" not in config
    assert config["registered_at"]
    config_json().write_text(json.dumps(config))

    assert cloud.provision()

    assert read_config_json(config_json())["deviceId"] == device_id
    assert len(fake_cloud.requests_to("POST", "/device/register")) == 1, "registered once, found after"


def test_an_existing_uuid_that_the_device_key_opens_is_taken_over_without_a_new_record(
    fake_cloud: FakeCloud,
) -> None:
    identity = load_device_identity()
    fake_cloud.add_device(identity.uuid, identity.device_api_key)  # a register whose 201 was lost
    assert cloud.provision()
    assert read_config_json(config_json())["deviceId"] == fake_cloud.devices[identity.uuid].device_id
    assert not fake_cloud.requests_to("POST", "/api-key/device/*/device-key")
    assert list(fake_cloud.devices) == [identity.uuid]


def test_a_uuid_held_under_another_key_is_given_up_for_a_new_one(fake_cloud: FakeCloud) -> None:
    """As on openBalena, where the provisioning key may neither read that device nor make it
    a key (src/lib/auth.ts): the device registers again under a new identity."""
    taken = load_device_identity()
    fake_cloud.add_device(taken.uuid, "another-fleets-device-key", application=99)
    with pytest.raises(cloud.CloudError, match="registering under a new uuid"):
        cloud.provision()
    fresh = load_device_identity()
    assert fresh.uuid != taken.uuid
    assert fresh.device_api_key != taken.device_api_key
    assert cloud.provision()
    assert fake_cloud.devices[fresh.uuid].api_key == fresh.device_api_key
    assert fake_cloud.devices[taken.uuid].api_key == "another-fleets-device-key"


def test_a_cloud_failing_during_the_lookup_keeps_the_uuid(fake_cloud: FakeCloud) -> None:
    known = load_device_identity()
    fake_cloud.add_device(known.uuid, known.device_api_key)
    fake_cloud.script("GET /v7/device", Scripted(503, b"busy"))
    with pytest.raises(cloud.CloudError):
        cloud.provision()
    assert load_device_identity().uuid == known.uuid
    assert cloud.provision()  # the cloud answers again: the device key finds the record
    assert load_device_identity().uuid == known.uuid
    assert fake_cloud.devices[known.uuid].api_key == known.device_api_key


def test_the_target_is_polled_with_its_etag_and_applied(fake_cloud: FakeCloud, engine: str) -> None:
    uuid = load_device_identity().uuid
    cloud.provision()
    etag = fake_cloud.set_target(uuid, fleet_document(uuid, engine))
    tick_until_polled()
    wait_applied()
    assert sorted(supervised_containers()) == ["main"]
    stored = TargetRecord.objects.count()
    tick_until_polled()
    last = fake_cloud.requests_to("GET", "/device/v3/*/state")[-1]
    assert last.headers["If-None-Match"] == etag
    assert last.headers["Authorization"] == f"Bearer {load_device_identity().device_api_key}"
    assert TargetRecord.objects.count() == stored  # 304: nothing stored again
    # A new release replaces the container.
    fake_cloud.set_target(uuid, fleet_document(uuid, engine, commit="beef01", release=6))
    tick_until_polled()
    wait_applied()
    assert "RELEASE=6" in supervised_containers()["main"].attrs["Config"]["Env"]


def test_a_new_device_keeps_its_config_in_the_cloud_and_takes_its_initial_name(
    fake_cloud: FakeCloud, engine: str
) -> None:
    """Provisioning step 4: current values the cloud's target would reset become config
    variables of the device (once per cloud, retried when refused), and
    initialDeviceName names it."""
    from apps_api.host_ops.device_config import applied_device_config, apply_device_config
    from apps_api.target.documents import parse_local_target

    uuid = load_device_identity().uuid
    ran_locally = {
        "SUPERVISOR_POLL_INTERVAL": "600000",  # the cloud always sets it: never sent
        "SUPERVISOR_DELTA": "true",
        "SUPERVISOR_VPN_CONTROL": "false",
        "SUPERVISOR_HARDWARE_METRICS": "false",
    }
    apply_device_config(parse_local_target({"local": {"name": "d", "config": ran_locally, "apps": {}}}))
    assert applied_device_config() == ran_locally
    config = read_config_json(config_json())
    config_json().write_text(json.dumps({**config, "initialDeviceName": "kitchen-sensor"}))
    cloud.provision()
    cloud_config = {"RESIN_SUPERVISOR_DELTA": "false"}
    fake_cloud.set_target(uuid, {uuid: {"name": "kitchen-sensor", "config": cloud_config, "apps": {}}})
    fake_cloud.script("POST /v7/device_config_variable", Scripted(500, b"busy"))
    tick_until_polled()
    assert cloud_poll.read_poll_state().etag is not None  # the target was taken all the same
    assert fake_cloud.devices[uuid].config_variables == {}
    tick_until_polled()  # 304, and the variable is sent again

    device = fake_cloud.devices[uuid]
    assert device.config_variables == {"RESIN_SUPERVISOR_HARDWARE_METRICS": "false"}
    assert device.name == "kitchen-sensor"
    sent = fake_cloud.requests_to("POST", "/v7/device_config_variable")[-1]
    assert sent.body == {
        "device": device.device_id,
        "name": "RESIN_SUPERVISOR_HARDWARE_METRICS",
        "value": "false",
    }
    tick_until_polled()
    assert len(fake_cloud.requests_to("POST", "/v7/device_config_variable")) == 2
    assert len(fake_cloud.requests_to("PATCH", f"/v7/device({device.device_id})")) == 1


@pytest.mark.parametrize(
    "answer",
    [
        Scripted(200, b"this is not json", {"ETag": '"x1"'}),
        Scripted(200, b'{"truncated": ', {"ETag": '"x2"'}),
        Scripted(200, b"[1, 2, 3]", {"ETag": '"x3"'}),
        Scripted(200, b"{" + b" " * (11 * 1024 * 1024) + b"}", {"ETag": '"x4"'}),
        Scripted(500, b"oops"),
        Scripted(304, b""),  # "not modified" when no ETag was sent: nothing to keep
    ],
    ids=["not-json", "truncated", "not-an-object", "huge", "500", "304-without-etag"],
)
def test_a_bad_answer_is_not_applied_and_polling_backs_off(fake_cloud: FakeCloud, answer: Scripted) -> None:
    cloud.provision()
    stored = TargetRecord.objects.count()
    fake_cloud.script("GET /device/v3/*/state", answer)
    tick_until_polled()
    state = cloud_poll.read_poll_state()
    assert state.failures == 1
    assert state.next_poll_at > cloud_poll.time.time() + 10  # 15 s after a first error
    assert TargetRecord.objects.count() == stored
    tick_until_polled()  # the cloud answers again: recovery
    assert cloud_poll.read_poll_state().failures == 0


@pytest.mark.parametrize("gone", ["deleted", "frozen"])
def test_a_device_deleted_or_frozen_in_the_cloud_polls_as_failed_not_as_unchanged(
    fake_cloud: FakeCloud, gone: str
) -> None:
    """The real server answers such a device's target GET with a 304, ETag or not: the
    device must not count it as a healthy, unchanged target."""
    cloud.provision()
    uuid = load_device_identity().uuid
    if gone == "deleted":
        del fake_cloud.devices[uuid]
    else:
        fake_cloud.devices[uuid].frozen = True
    tick_until_polled()
    state = cloud_poll.read_poll_state()
    assert state.failures == 1
    assert state.etag is None


def test_without_instant_updates_the_first_poll_waits_one_interval(
    fake_cloud: FakeCloud, engine: str
) -> None:
    uuid = load_device_identity().uuid
    cloud.provision()
    fake_cloud.set_target(uuid, {uuid: {"name": "d", "config": {"SUPERVISOR_INSTANT_UPDATE_TRIGGER": "false"},
                                        "apps": {}}})  # fmt: skip
    tick_until_polled()
    wait_applied()
    polls = len(fake_cloud.requests_to("GET", "/device/v3/*/state"))
    cloud_poll.reset_at_start()  # the worker starts again
    booted_at = cloud_poll.time.time()
    cloud_poll.cloud_tick()
    assert len(fake_cloud.requests_to("GET", "/device/v3/*/state")) == polls
    assert cloud_poll.read_poll_state().next_poll_at >= booted_at + cloud_poll.poll_interval_seconds()


def test_a_cloud_failing_for_a_while_is_polled_ever_less_often_then_recovers(
    fake_cloud: FakeCloud, engine: str
) -> None:
    cloud.provision()
    fake_cloud.script("GET /device/v3/*/state", *[Scripted(500, b"down")] * 4)
    waits = []
    for _ in range(4):
        asked_at = cloud_poll.time.time()
        tick_until_polled()
        waits.append(cloud_poll.read_poll_state().next_poll_at - asked_at)
    # 15 s doubling per failure; the poll interval (the default 15 min) is far off.
    assert [15 * 2**n <= wait < 15 * 2**n + 5 for n, wait in enumerate(waits)] == [True] * 4, waits
    assert cloud_poll.read_poll_state().failures == 4
    tick_until_polled()
    state = cloud_poll.read_poll_state()
    assert state.failures == 0
    assert state.next_poll_at - state.last_success_at >= cloud_poll.poll_interval_seconds()  # type: ignore[operator]


def test_v1_update_polls_at_once_through_the_worker(agent_fake_cloud: FakeCloud, engine: str) -> None:
    fake_cloud = agent_fake_cloud  # the session agent provisions and polls by itself
    assert wait_until(lambda: fake_cloud.requests_to("GET", "/device/v3/*/state"), 60)
    assert wait_until(lambda: cloud_poll.read_poll_state().next_poll_at > cloud_poll.time.time() + 60, 10)
    polls = len(fake_cloud.requests_to("GET", "/device/v3/*/state"))
    key = get_or_create_global_key().key
    response = Client().post(
        "/v1/update", "{}", content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    assert response.status_code == 204
    assert wait_until(lambda: len(fake_cloud.requests_to("GET", "/device/v3/*/state")) > polls, 30)


def test_the_health_check_answers_while_every_reader_waits_on_the_cloud(
    agent_fake_cloud: FakeCloud, engine: str
) -> None:
    """Reads that wait on the cloud may fill the readers' threads; the health check, which
    the host's watchdog acts on, has its own (security review, L12)."""
    fake_cloud = agent_fake_cloud
    assert wait_until(lambda: fake_cloud.requests_to("GET", "/device/v3/*/state"), 60)
    stall = threading.Event()
    readers = 40
    fake_cloud.script("GET /v7/device_tag", *[Scripted(503, b"down", stall=stall) for _ in range(readers)])
    key = get_or_create_global_key().key
    answers: list[int] = []

    def read_tags() -> None:
        answers.append(api("get", "/v2/device/tags").status_code)

    threads = [threading.Thread(target=read_tags) for _ in range(readers)]
    for thread in threads:
        thread.start()
    try:
        assert wait_until(lambda: len(fake_cloud.requests_to("GET", "/v7/device_tag")) >= 32, 60)
        healthy = requests.get(f"{Client().base_url}/v1/healthy", headers={"Authorization": f"Bearer {key}"},
                               timeout=30)  # fmt: skip
        assert healthy.status_code in (200, 500), healthy.text
    finally:
        stall.set()
        for thread in threads:
            thread.join(60)
    assert len(answers) == readers


# --- state report ---------------------------------------------------------------------------

FIRST_REPORT_FIELDS = {"api_port", "api_secret", "ip_address", "mac_address", "os_version", "os_variant",
                       "supervisor_version", "provisioning_progress", "provisioning_state", "status",
                       "logs_channel", "apps"}  # fmt: skip


def reports(fake_cloud: FakeCloud) -> list[dict[str, Any]]:
    uuid = load_device_identity().uuid
    return [r.body[uuid] for r in fake_cloud.requests_to("PATCH", "/device/v3/state")]


@pytest.fixture
def reporting(fake_cloud: FakeCloud, docker_engine: None) -> Iterator[FakeCloud]:
    """A provisioned device that reported nothing yet (the report reads the engine's state)."""
    cloud.provision()
    redis_client().delete(redis_store.CLOUD_REPORT_KEY)
    REPORT_CACHE.unlink(missing_ok=True)
    yield fake_cloud
    redis_client().delete(redis_store.CLOUD_REPORT_KEY)
    REPORT_CACHE.unlink(missing_ok=True)


def test_the_first_report_says_everything_and_never_the_update_flags(reporting: FakeCloud) -> None:
    assert cloud_report.report_state_if_due()
    (first,) = reports(reporting)
    assert set(first) >= FIRST_REPORT_FIELDS
    assert first["api_secret"] == get_or_create_global_key().key
    assert first["status"] == "Idle"
    assert first["provisioning_progress"] is None
    assert first["provisioning_state"] == ""
    assert first["logs_channel"] is None
    assert not {key for key in first if key.startswith("update_")}


def test_then_only_what_changed_at_most_every_10_s(reporting: FakeCloud) -> None:
    now = cloud_poll.time.time()
    assert cloud_report.report_state_if_due(now=now)
    assert not cloud_report.report_state_if_due(now=now + 1)  # throttled
    assert not cloud_report.report_state_if_due(now=now + 20)  # at most the metrics changed: not yet
    old_key = get_or_create_global_key().key
    new_key = regenerate_api_key(old_key)
    assert cloud_report.report_state_if_due(now=now + 40)
    second = reports(reporting)[-1]
    assert second["api_secret"] == new_key
    assert "supervisor_version" not in second
    assert "os_version" not in second


def test_a_change_of_metrics_alone_waits_5_minutes(
    reporting: FakeCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics = {"cpu_usage": 10, "memory_usage": 100}
    monkeypatch.setattr(cloud_report, "_metrics", lambda: dict(metrics))
    now = cloud_poll.time.time()
    assert cloud_report.report_state_if_due(now=now)
    metrics["cpu_usage"] = 55
    assert not cloud_report.report_state_if_due(now=now + 20)
    assert not cloud_report.report_state_if_due(now=now + 299)
    assert cloud_report.report_state_if_due(now=now + 301)
    assert reports(reporting)[-1] == {"cpu_usage": 55}


def test_a_refused_report_waits_for_retry_after(reporting: FakeCloud) -> None:
    reporting.script("PATCH /device/v3/state", Scripted(503, b"busy", {"Retry-After": "120"}))
    now = cloud_poll.time.time()
    with pytest.raises(cloud.CloudError):
        cloud_report.report_state_if_due(now=now)
    assert cloud_report.read_report_state().next_report_at >= now + 120
    assert not cloud_report.report_state_if_due(now=now + 60)
    assert cloud_report.report_state_if_due(now=now + 121)
    assert set(reports(reporting)[-1]) >= FIRST_REPORT_FIELDS  # nothing was accepted before


METRICS_NULLED_BY_OPT_OUT = {"cpu_usage", "cpu_temp", "cpu_id", "memory_usage", "memory_total",
                             "storage_usage", "storage_total", "storage_block_device"}  # fmt: skip


def store_device_config(**config: str) -> None:
    """A stored target of no apps with these device configuration variables."""
    store_target(TargetState(name="fleet-device", config=config, apps=()))


@pytest.fixture
def board() -> Iterator[Path]:
    """Kernel and sysfs files under the host root, as a Raspberry Pi exposes them, the
    data dir on its SD card's data partition."""
    files = {
        HOST_ROOT / "proc/device-tree/serial-number": b"10000000e3c2d5f1\0",
        HOST_ROOT
        / "dev/kmsg": b"6,1,1,-;Booting Linux\n4,2,58611126,-;Under-voltage detected! (0x00050005)\n",
    }
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    data_device = os.stat(settings.SUPERVISOR_DATA_DIR).st_dev
    block = HOST_ROOT / "sys/dev/block" / f"{os.major(data_device)}:{os.minor(data_device)}"
    block.parent.mkdir(parents=True, exist_ok=True)
    block.symlink_to("../../devices/platform/emmc2bus/mmc_host/mmc0/mmc0:0001/block/mmcblk0/mmcblk0p6")
    yield HOST_ROOT
    for path in (*files, block):
        path.unlink()


def test_the_report_names_the_cpu_the_data_partition_and_an_undervoltage(
    reporting: FakeCloud, board: Path
) -> None:
    assert cloud_report.report_state_if_due()
    (first,) = reports(reporting)
    assert first["cpu_id"] == "10000000e3c2d5f1"
    assert first["is_undervolted"] is True
    assert first["storage_block_device"] == "/dev/mmcblk0p6"  # where the data dir is
    assert {"cpu_usage", "memory_usage", "memory_total", "storage_usage", "storage_total"} <= set(first)


def test_without_undervoltage_in_the_kernel_log_none_is_reported(reporting: FakeCloud) -> None:
    assert cloud_report.report_state_if_due()
    assert reports(reporting)[0]["is_undervolted"] is False


def test_opting_out_of_hardware_metrics_sends_them_as_null(reporting: FakeCloud, board: Path) -> None:
    now = cloud_poll.time.time()
    assert cloud_report.report_state_if_due(now=now)
    store_device_config(SUPERVISOR_HARDWARE_METRICS="false")
    assert not cloud_report.report_state_if_due(now=now + 20)  # metrics only: they wait their turn
    assert cloud_report.report_state_if_due(now=now + 301)
    assert reports(reporting)[-1] == dict.fromkeys(METRICS_NULLED_BY_OPT_OUT)  # is_undervolted unchanged
    assert not cloud_report.report_state_if_due(now=now + 602)  # null stays null


def test_a_device_that_opted_out_reports_null_metrics_but_its_undervoltage(
    reporting: FakeCloud, board: Path
) -> None:
    store_device_config(RESIN_SUPERVISOR_HARDWARE_METRICS="0")
    assert cloud_report.report_state_if_due()
    (first,) = reports(reporting)
    assert {key: first[key] for key in METRICS_NULLED_BY_OPT_OUT} == dict.fromkeys(METRICS_NULLED_BY_OPT_OUT)
    assert first["is_undervolted"] is True


def test_a_restart_with_redis_flushed_sends_only_what_changed_since_the_cached_report(
    reporting: FakeCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cloud_report, "_metrics", lambda: {"cpu_usage": 10, "memory_usage": 100})
    assert cloud_report.report_state_if_due()
    assert set(reports(reporting)[0]) >= FIRST_REPORT_FIELDS
    assert stat.S_IMODE(REPORT_CACHE.stat().st_mode) == 0o600  # it holds the API secret
    new_key = regenerate_api_key(get_or_create_global_key().key)
    redis_client().flushdb()  # the agent restarts, and Redis lost its data
    assert cloud_report.report_state_if_due()
    assert reports(reporting)[-1] == {"api_secret": new_key}


ROTTEN_CACHES = [b'{"truncated', b"\xff\xfe", b'{"another-device-uuid": {"status": "Idle"}}']


@pytest.mark.parametrize("cache", ROTTEN_CACHES, ids=["truncated", "not-utf8", "another-device"])
def test_a_rotten_report_cache_is_ignored_and_everything_is_sent(reporting: FakeCloud, cache: bytes) -> None:
    REPORT_CACHE.parent.mkdir(parents=True, exist_ok=True)
    REPORT_CACHE.write_bytes(cache)
    assert cloud_report.report_state_if_due()
    assert set(reports(reporting)[0]) >= FIRST_REPORT_FIELDS
    assert json.loads(REPORT_CACHE.read_text())[load_device_identity().uuid]["api_secret"]


def test_the_api_request_timeout_setting_bounds_cloud_requests(reporting: FakeCloud) -> None:
    store_device_config(SUPERVISOR_API_REQUEST_TIMEOUT="300")  # milliseconds
    stall = threading.Event()
    reporting.script("PATCH /device/v3/state", Scripted(200, b"OK", stall=stall))
    outcome: list[BaseException | None] = []

    def report() -> None:
        try:
            cloud_report.report_state_if_due()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=report, daemon=True)
    try:
        thread.start()
        # Well before the default 59 s would give up: the setting is what bounds the wait.
        assert wait_until(lambda: bool(outcome), 30), "the report waited for the stalled cloud"
    finally:
        stall.set()
    assert isinstance(outcome[0], cloud.CloudError)
    assert "timed out" in str(outcome[0])


@pytest.mark.parametrize(("value", "seconds"), [("300", 0.3), ("120000", 120.0), ("0", 59.0), ("soon", 59.0)])
def test_the_api_request_timeout_is_in_milliseconds_with_59_s_by_default(value: str, seconds: float) -> None:
    assert api_request_timeout_seconds() == 59.0  # no target yet
    store_device_config(SUPERVISOR_API_REQUEST_TIMEOUT=value)
    assert api_request_timeout_seconds() == seconds


def test_health_fails_when_no_target_was_fetched_for_two_intervals(fake_cloud: FakeCloud) -> None:
    cloud.provision()
    tick_until_polled()
    polled_at = cloud_poll.read_poll_state().last_success_at
    assert polled_at is not None
    interval = cloud_poll.poll_interval_seconds()
    assert cloud_poll.cloud_health_problem(now=polled_at + 1.5 * interval) is None
    problem = cloud_poll.cloud_health_problem(now=polled_at + 2 * interval + 60)
    assert problem is not None
    assert problem.startswith("no target state fetched for")
    fake_cloud.script("GET /device/v3/*/state", Scripted(500, b"down"))
    tick_until_polled()  # a failed poll does not count as a fetch
    assert cloud_poll.read_poll_state().last_success_at == polled_at


def test_health_follows_the_connectivity_check_which_the_vpn_pauses(
    fake_cloud: FakeCloud, engine: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(cloud_poll, "CONNECTIVITY_CHECK_SECONDS", 0.0)
    led = Path(settings.SUPERVISOR_LED_FILE)
    led.write_text("0")
    cloud.provision()
    tick_until_polled()
    assert cloud_poll.read_poll_state().reachable is True
    assert failed_health_checks() == {}

    fake_cloud.stop()  # nothing listens on its port any more
    cloud_poll.cloud_tick()
    assert cloud_poll.read_poll_state().reachable is False
    assert "the cloud API is not reachable" in failed_health_checks()["cloud"]
    assert no_connectivity_shown()
    assert wait_until(lambda: led.read_text() == "1", timeout=5)

    vpn_flag = Path(settings.SUPERVISOR_HOST_ROOT) / "run/openvpn/vpn_status/active"
    vpn_flag.parent.mkdir(parents=True, exist_ok=True)
    vpn_flag.touch()
    try:
        cloud_poll.cloud_tick()
        assert cloud_poll.read_poll_state().reachable is True
        assert cloud_poll.cloud_health_problem() is None
        assert wait_until(lambda: not no_connectivity_shown(), timeout=5)
        assert led.read_text() == "0"
    finally:
        vpn_flag.unlink()


# --- device tags ----------------------------------------------------------------------------


def api(method: str, path: str, body: object = None):  # type: ignore[no-untyped-def]
    key = get_or_create_global_key().key
    data = json.dumps(body) if body is not None else ""
    return getattr(Client(), method)(
        path, data, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}"
    )


def test_tags_are_reported_once_each_and_read_back_from_the_cloud(fake_cloud: FakeCloud) -> None:
    from hostcfg.models import DeviceTag

    DeviceTag.objects.all().delete()
    redis_client().delete(redis_store.CLOUD_TAGS_REPORT_KEY)
    cloud.provision()
    uuid = load_device_identity().uuid
    assert api("patch", "/v2/device/tags", {"room": "kitchen", "floor": "1"}).status_code == 202
    now = cloud_poll.time.time()
    assert cloud_report.report_tags_if_due(now=now)
    assert not cloud_report.report_tags_if_due(now=now + 60)  # nothing new
    assert api("patch", "/v2/device/tags", {"floor": "2"}).status_code == 202
    assert not cloud_report.report_tags_if_due(now=now + 1)  # at most once per 10 s
    assert cloud_report.report_tags_if_due(now=now + 61)
    sent = [r.body[uuid] for r in fake_cloud.requests_to("PATCH", "/device/v3/tags")]
    assert sent == [{"floor": "1", "room": "kitchen"}, {"floor": "2"}]
    # Read back as GET /v2/device/tags does on a managed device (this process's config.json
    # is the managed one; the session agent's is not).
    fake_cloud.devices[uuid].tags = {"room": "kitchen", "floor": "2"}
    assert actions.device_tags() == [{"id": 1, "name": "room", "value": "kitchen"},
                                     {"id": 2, "name": "floor", "value": "2"}]  # fmt: skip
    fake_cloud.script("GET /v7/device_tag", Scripted(503, b"down"))
    with pytest.raises(InternalFailure):
        actions.device_tags()


@pytest.fixture
def tagged_device(fake_cloud: FakeCloud) -> FakeCloud:
    from hostcfg.models import DeviceTag

    DeviceTag.objects.all().delete()
    redis_client().delete(redis_store.CLOUD_TAGS_REPORT_KEY)
    cloud.provision()
    return fake_cloud


def test_a_tag_the_cloud_refuses_holds_back_only_itself(tagged_device: FakeCloud) -> None:
    from hostcfg.tags import set_tags, unreported_tags

    uuid = load_device_identity().uuid
    # Kept by an agent that took any tag: the cloud refuses a whole report for one of these.
    set_tags({"room": "kitchen", "io.balena.owner": "me", "floor": "2"})
    now = cloud_poll.time.time()
    assert cloud_report.report_tags_if_due(now=now)
    assert tagged_device.devices[uuid].tags == {"room": "kitchen", "floor": "2"}
    assert unreported_tags() == {}  # the refused one is not retried for ever

    set_tags({"floor": "3"})
    assert cloud_report.report_tags_if_due(now=now + 61)
    assert tagged_device.requests_to("PATCH", "/device/v3/tags")[-1].body == {uuid: {"floor": "3"}}
    assert tagged_device.devices[uuid].tags == {"room": "kitchen", "floor": "3"}


def test_a_refused_tags_report_waits_for_retry_after(tagged_device: FakeCloud) -> None:
    from hostcfg.tags import set_tags

    set_tags({"room": "kitchen"})
    tagged_device.script("PATCH /device/v3/tags", Scripted(503, b"busy", {"Retry-After": "120"}))
    now = cloud_poll.time.time()
    with pytest.raises(cloud.CloudError):
        cloud_report.report_tags_if_due(now=now)
    assert cloud_report.read_report_state(redis_store.CLOUD_TAGS_REPORT_KEY).next_report_at >= now + 120
    assert not cloud_report.report_tags_if_due(now=now + 60)
    assert cloud_report.report_tags_if_due(now=now + 121)


def test_health_fails_when_an_apply_runs_too_long_downloads_aside(fake_cloud: FakeCloud) -> None:
    from apps_api.health import Unhealthy, check_engine_progress
    from apps_api.redis_store import APPLY_DOWNLOAD_SECONDS_KEY, APPLY_STARTED_KEY

    interval = cloud_poll.poll_interval_seconds()
    now = cloud_poll.time.time()
    redis_client().set(APPLY_STARTED_KEY, now - 3 * interval)
    try:
        with pytest.raises(Unhealthy, match="the apply has been running for"):
            check_engine_progress(now=now)
        redis_client().set(APPLY_DOWNLOAD_SECONDS_KEY, 2 * interval)  # most of it was downloading
        check_engine_progress(now=now)
    finally:
        redis_client().delete(APPLY_STARTED_KEY, APPLY_DOWNLOAD_SECONDS_KEY)
    check_engine_progress(now=now)  # no apply running


def test_with_the_cloud_down_at_boot_the_stored_target_runs(
    agent_fake_cloud: FakeCloud, engine: str, shipped_agent: Agent
) -> None:
    # The session agent provisions with the cloud, polls and applies by itself.
    uuid = load_device_identity().uuid
    agent_fake_cloud.set_target(uuid, fleet_document(uuid, engine))
    assert wait_until(lambda: "main" in supervised_containers(), 60), (
        "the agent did not apply the cloud's target"
    )
    wait_applied()
    agent_fake_cloud.stop()
    # The power goes: the containers are gone, and the device boots without a cloud.
    for container in supervised_containers().values():
        container.remove(force=True)
    shipped_agent.kill_agent(signum=signal.SIGTERM)
    assert wait_until(lambda: "main" in supervised_containers(), 60), "the stored target was not applied"
    wait_applied()
    # The cloud is unreachable: the polls fail and back off, and nothing else changes.
    assert wait_until(lambda: cloud_poll.read_poll_state().failures >= 1, 60)
    assert "main" in supervised_containers()
