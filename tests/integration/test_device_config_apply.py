"""Device configuration variables in the target's `config`, applied by the real worker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from hostcfg.identity import read_config_json, write_config_json
from supervisor_site.system_services import wait_until
from tests.agent_client import Client
from tests.host_bus import HostBus
from tests.integration.conftest import WorkerLog, lock_dir
from tests.integration.engine_helpers import apply, local_target, supervised_containers

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG_TXT = Path(settings.SUPERVISOR_BOOT_ROOT) / "config.txt"
DEVICE_TYPE_JSON = Path(settings.SUPERVISOR_BOOT_ROOT) / "device-type.json"
CONFIG_JSON = Path(settings.SUPERVISOR_CONFIG_JSON)
USER_CONFIG_TXT = (
    "# written by hand\ndtoverlay=vc4-kms-v3d\ndtoverlay=i2c-rtc,ds3231\n\ngpu_mem=64\nhdmi_safe=1\n"
)


@pytest.fixture
def device(engine: str, host_bus: HostBus) -> Iterator[str]:
    """A fresh Raspberry Pi 4: nothing applied yet, the user's own config.txt on the boot partition."""
    (Path(settings.SUPERVISOR_DATA_DIR) / "applied-device-config.json").unlink(missing_ok=True)
    CONFIG_TXT.parent.mkdir(parents=True, exist_ok=True)
    CONFIG_TXT.write_text(USER_CONFIG_TXT)
    DEVICE_TYPE_JSON.write_text(json.dumps({"slug": "raspberrypi4-64", "arch": "aarch64"}))
    yield engine
    DEVICE_TYPE_JSON.unlink(missing_ok=True)
    # What a test applied must not become a change (and a reboot) for the tests after it.
    (Path(settings.SUPERVISOR_DATA_DIR) / "applied-device-config.json").unlink(missing_ok=True)


def test_host_config_variable_lands_in_config_txt_and_the_device_reboots(
    device: str, host_bus: HostBus
) -> None:
    apply(local_target({"main": {}}, image=device, config={"RESIN_HOST_CONFIG_gpu_mem": "16"}))
    assert CONFIG_TXT.read_text() == USER_CONFIG_TXT.replace("gpu_mem=64", "gpu_mem=16")
    # The change takes effect at boot: the worker asks logind once the apps are applied.
    assert wait_until(lambda: "Reboot" in host_bus.services.members(), 30), host_bus.services.members()
    assert host_bus.services.members().count("Reboot") == 1
    breadcrumb = Path(settings.SUPERVISOR_HOST_ROOT) / "tmp" / "balena-supervisor" / "reboot-after-apply"
    assert not breadcrumb.exists()


def test_a_variable_that_leaves_the_target_leaves_config_txt(device: str, host_bus: HostBus) -> None:
    apply(local_target({"main": {}}, image=device, config={"HOST_CONFIG_enable_uart": "1"}))
    assert CONFIG_TXT.read_text() == USER_CONFIG_TXT + "enable_uart=1\n"
    apply(local_target({"main": {}}, image=device, config={}))
    assert CONFIG_TXT.read_text() == USER_CONFIG_TXT


def test_vpn_control_stops_and_starts_openvpn(device: str, host_bus: HostBus) -> None:
    apply(local_target({"main": {}}, image=device, config={"BALENA_SUPERVISOR_VPN_CONTROL": "false"}))
    apply(local_target({"main": {}}, image=device, config={"BALENA_SUPERVISOR_VPN_CONTROL": "true"}))
    jobs = [(c.member, c.args[0]) for c in host_bus.services.calls if c.member in ("StartUnit", "StopUnit")]
    assert jobs == [("StopUnit", "openvpn.service"), ("StartUnit", "openvpn.service")]


def test_lock_override_variable_lets_actions_through_user_locks(device: str) -> None:
    apply(local_target({"main": {}}, image=device, config={"RESIN_SUPERVISOR_OVERRIDE_LOCK": "1"}))
    (lock_dir("main") / "updates.lock").touch()
    response = Client().post(
        "/v2/applications/1/stop-service",
        json.dumps({"serviceName": "main"}),
        content_type="application/json",
    )
    assert response.status_code == 200
    supervised_containers()["main"].reload()
    assert supervised_containers()["main"].status == "exited"
    assert not (lock_dir("main") / "updates.lock").exists()


def test_instant_updates_off_makes_update_202(device: str) -> None:
    apply(local_target({"main": {}}, image=device, config={"SUPERVISOR_INSTANT_UPDATE_TRIGGER": "false"}))
    assert Client().post("/v1/update", "{}", content_type="application/json").status_code == 202
    assert Client().post("/v1/update", '{"force": true}', content_type="application/json").status_code == 204


def test_config_txt_is_left_alone_on_a_device_that_is_not_a_raspberry_pi(
    device: str, host_bus: HostBus, worker_log: WorkerLog
) -> None:
    DEVICE_TYPE_JSON.write_text(json.dumps({"slug": "genericx86-64-ext", "arch": "amd64"}))
    config = {
        "HOST_CONFIG_gpu_mem": "16",
        "HOST_CONFIG_enable_uart": "1",
        "SUPERVISOR_POLL_INTERVAL": "600000",
    }
    apply(local_target({"main": {}}, image=device, config=config))
    assert CONFIG_TXT.read_text() == USER_CONFIG_TXT
    assert worker_log.lines_with(
        "Not applying HOST_CONFIG_enable_uart, HOST_CONFIG_gpu_mem: config.txt is only written on "
        "Raspberry Pi device types, and this device is genericx86-64-ext"
    )
    # Only what is applied is announced as applied.
    assert worker_log.lines_with('Applying configuration change {"SUPERVISOR_POLL_INTERVAL":"600000"}')
    assert wait_until(
        lambda: worker_log.lines_with('Applied configuration change {"SUPERVISOR_POLL_INTERVAL":"600000"}'),
        10,
    )
    assert not worker_log.lines_with('Applying configuration change {"HOST_CONFIG')
    assert "Reboot" not in host_bus.services.members()


def test_keys_that_choose_what_boots_never_reach_config_txt(device: str, worker_log: WorkerLog) -> None:
    config = {"HOST_CONFIG_kernel": "evil.img", "HOST_CONFIG_cmdline": "x.txt", "HOST_CONFIG_gpu_mem": "16"}
    apply(local_target({"main": {}}, image=device, config=config))
    assert CONFIG_TXT.read_text() == USER_CONFIG_TXT.replace("gpu_mem=64", "gpu_mem=16")
    assert worker_log.lines_with(
        "Not applying HOST_CONFIG_cmdline, HOST_CONFIG_kernel: these config.txt keys choose what boots"
    )
    assert worker_log.lines_with('Applying configuration change {"HOST_CONFIG_gpu_mem":"16"}')


def test_boot_keys_of_other_device_families_are_refused_and_never_announced_as_applied(
    device: str, host_bus: HostBus, worker_log: WorkerLog
) -> None:
    config = {"HOST_EXTLINUX_isolcpus": "1", "HOST_SPLASH_IMAGE": "data:image/png;base64,AAAA"}
    apply(local_target({"main": {}}, image=device, config=config))
    assert worker_log.lines_with(
        "Not applying HOST_EXTLINUX_isolcpus, HOST_SPLASH_IMAGE: not supported on this device"
    )
    assert not worker_log.lines_with("Applying configuration change")
    assert CONFIG_TXT.read_text() == USER_CONFIG_TXT
    assert "Reboot" not in host_bus.services.members()


@pytest.fixture
def config_json_kept() -> Iterator[dict[str, object]]:
    """config.json with an `os` object of the user's; restored afterwards."""
    original = read_config_json(CONFIG_JSON)
    write_config_json(CONFIG_JSON, {**original, "os": {"sshKeys": ["ssh-ed25519 AAAA user"]}})
    yield original
    write_config_json(CONFIG_JSON, original)


def test_power_and_fan_profiles_land_in_config_json_and_never_in_config_txt(
    device: str, config_json_kept: dict[str, object]
) -> None:
    profiles = {"BALENA_HOST_CONFIG_power_mode": "low", "HOST_CONFIG_fan_profile": "quiet"}
    apply(local_target({"main": {}}, image=device, config=profiles))
    config_json = read_config_json(CONFIG_JSON)
    assert config_json["os"] == {
        "sshKeys": ["ssh-ed25519 AAAA user"],
        "power": {"mode": "low"},
        "fan": {"profile": "quiet"},
    }
    assert config_json["uuid"] == config_json_kept["uuid"]
    assert CONFIG_TXT.read_text() == USER_CONFIG_TXT
    # The power mode leaves the target: it leaves config.json, the rest stays.
    apply(local_target({"main": {}}, image=device, config={"HOST_CONFIG_fan_profile": "quiet"}))
    assert read_config_json(CONFIG_JSON)["os"] == {
        "sshKeys": ["ssh-ed25519 AAAA user"],
        "fan": {"profile": "quiet"},
    }


AVAHI = ["avahi-daemon.socket", "avahi-daemon.service"]


def systemd_jobs(host_bus: HostBus) -> list[tuple[str, object]]:
    members = ("StartUnit", "StopUnit", "MaskUnitFiles", "UnmaskUnitFiles", "Reload")
    return [(c.member, c.args[0] if c.args else None) for c in host_bus.services.calls if c.member in members]


def test_discoverability_off_stops_and_masks_avahi_and_on_brings_it_back(
    device: str, host_bus: HostBus
) -> None:
    host_bus.services.unit_states.update(dict.fromkeys(AVAHI, "active"))
    apply(local_target({"main": {}}, image=device, config={"HOST_DISCOVERABILITY": "false"}))
    # Applied once, on the change: a later target with another change does not repeat it.
    apply(
        local_target(
            {"main": {}},
            image=device,
            config={"HOST_DISCOVERABILITY": "0", "SUPERVISOR_POLL_INTERVAL": "600000"},
        )
    )
    assert systemd_jobs(host_bus) == [
        ("StopUnit", "avahi-daemon.socket"),
        ("StopUnit", "avahi-daemon.service"),
        ("MaskUnitFiles", AVAHI),
        ("Reload", None),
    ]
    assert host_bus.services.masked_units == set(AVAHI)
    assert [host_bus.services.unit_states[unit] for unit in AVAHI] == ["inactive", "inactive"]

    host_bus.services.calls.clear()
    apply(local_target({"main": {}}, image=device, config={}))  # the default: discoverable
    assert systemd_jobs(host_bus) == [
        ("UnmaskUnitFiles", AVAHI),
        ("Reload", None),
        ("StartUnit", "avahi-daemon.socket"),
        ("StartUnit", "avahi-daemon.service"),
    ]
    assert host_bus.services.masked_units == set()
    assert [host_bus.services.unit_states[unit] for unit in AVAHI] == ["active", "active"]


def test_persistent_logging_is_written_to_config_json_for_the_host_journal(
    device: str, config_json_kept: dict[str, object]
) -> None:
    apply(local_target({"main": {}}, image=device, config={"SUPERVISOR_PERSISTENT_LOGGING": "true"}))
    assert read_config_json(CONFIG_JSON)["persistentLogging"] is True
    assert read_config_json(CONFIG_JSON)["os"] == {"sshKeys": ["ssh-ed25519 AAAA user"]}
