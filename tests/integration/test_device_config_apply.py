"""Device configuration variables in the target's `config`, applied by the real worker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from supervisor_site.system_services import wait_until
from tests.host_bus import HostBus
from tests.integration.conftest import lock_dir
from tests.integration.engine_helpers import apply, local_target, supervised_containers

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG_TXT = Path(settings.SUPERVISOR_BOOT_ROOT) / "config.txt"
USER_CONFIG_TXT = (
    "# written by hand\ndtoverlay=vc4-kms-v3d\ndtoverlay=i2c-rtc,ds3231\n\ngpu_mem=64\nhdmi_safe=1\n"
)


@pytest.fixture
def device(engine: str, host_bus: HostBus) -> str:
    """A fresh device: nothing applied yet, the user's own config.txt on the boot partition."""
    (Path(settings.SUPERVISOR_DATA_DIR) / "applied-device-config.json").unlink(missing_ok=True)
    CONFIG_TXT.parent.mkdir(parents=True, exist_ok=True)
    CONFIG_TXT.write_text(USER_CONFIG_TXT)
    return engine


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
