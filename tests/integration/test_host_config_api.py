"""/v1/device/host-config and /v2/device/vpn through the real worker, files and D-Bus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.conf import settings

from hostcfg.identity import load_device_identity, read_config_json
from tests.agent_client import Client
from tests.host_bus import HostBus
from tests.integration.conftest import lock_dir
from tests.integration.engine_helpers import apply, local_target

pytestmark = pytest.mark.django_db(transaction=True)

INVALID = "Could not parse host config input to a valid format: "
HOST_ROOT = Path(settings.SUPERVISOR_HOST_ROOT)
BOOT_ROOT = Path(settings.SUPERVISOR_BOOT_ROOT)
REDSOCKS_CONF = BOOT_ROOT / "system-proxy" / "redsocks.conf"
NO_PROXY = BOOT_ROOT / "system-proxy" / "no_proxy"


@pytest.fixture
def host(host_bus: HostBus, shipped_agent: object, docker_engine: None) -> HostBus:
    """A host with no proxy configured and the hostname it had at first."""
    REDSOCKS_CONF.unlink(missing_ok=True)
    NO_PROXY.unlink(missing_ok=True)
    (HOST_ROOT / "etc" / "hostname").unlink(missing_ok=True)
    return host_bus


def patch(body: object, raw: str | None = None):  # type: ignore[no-untyped-def]
    data = raw if raw is not None else json.dumps(body)
    return Client().patch("/v1/device/host-config", data, content_type="application/json")


def restarted(host_bus: HostBus) -> list[str]:
    return [str(call.args[0]) for call in host_bus.services.calls if call.member == "RestartUnit"]


def test_hostname_lands_in_config_json_and_etc_hostname_and_its_unit_restarts(host: HostBus) -> None:
    response = patch({"network": {"hostname": "kiosk-7"}})
    assert (response.status_code, response.content) == (200, b"OK")
    assert response["Content-Type"].startswith("text/plain")
    assert read_config_json(Path(settings.SUPERVISOR_CONFIG_JSON))["hostname"] == "kiosk-7"
    assert (HOST_ROOT / "etc" / "hostname").read_text() == "kiosk-7\n"
    assert Client().get("/v1/device/host-config").json() == {"network": {"hostname": "kiosk-7"}}
    assert restarted(host) == ["balena-hostname.service"]


def test_an_empty_hostname_means_the_uuid_prefix(host: HostBus) -> None:
    assert patch({"network": {"hostname": ""}}).status_code == 200
    assert (HOST_ROOT / "etc" / "hostname").read_text() == load_device_identity().uuid[:7] + "\n"


def test_legacy_unit_names_and_part_of_targets(host: HostBus) -> None:
    host.services.missing_units.add("balena-hostname.service")
    host.services.unit_part_of["redsocks.service"] = ["redsocks-conf.target"]
    body = {"network": {"hostname": "legacy-1", "proxy": {"type": "socks5", "ip": "10.0.0.1", "port": 1080}}}
    assert patch(body).status_code == 200
    # balena-hostname is missing: resin-hostname; redsocks follows its target by itself.
    expected = ["balena-hostname.service", "resin-hostname.service", "balena-proxy-config.service"]
    assert restarted(host) == expected


def test_proxy_is_written_read_back_and_its_units_restart(host: HostBus) -> None:
    proxy = {"type": "http-connect", "ip": "192.168.0.5", "port": 8123, "login": "user", "password": "pw",
             "noProxy": ["152.10.30.4", "253.1.1.0/16"]}  # fmt: skip
    assert patch({"network": {"proxy": proxy}}).status_code == 200
    assert REDSOCKS_CONF.read_text() == (
        "base {\n\tlog_debug = off;\n\tlog_info = on;\n\tlog = stderr;\n\tdaemon = off;\n"
        "\tredirector = iptables;\n}\n\n"
        "redsocks {\n\ttype = http-connect;\n\tip = 192.168.0.5;\n\tport = 8123;\n"
        '\tlogin = "user";\n\tpassword = "pw";\n\tlocal_ip = 127.0.0.1;\n\tlocal_port = 12345;\n}\n\n'
    )
    assert NO_PROXY.read_text() == "152.10.30.4\n253.1.1.0/16\n"
    got = Client().get("/v1/device/host-config").json()["network"]["proxy"]
    assert got == {**proxy, "port": "8123"}
    assert restarted(host) == ["balena-proxy-config.service", "redsocks.service"]
    host.reset()
    assert patch({"network": {"proxy": {}}}).status_code == 200
    assert not REDSOCKS_CONF.exists()
    assert "proxy" not in Client().get("/v1/device/host-config").json()["network"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "network"),
        ({"network": {"hostname": 5}}, "network.hostname"),
        ({"network": {"hostname": "a" * 64}}, "network.hostname"),
        ({"network": {"hostname": "evil\nname"}}, "network.hostname"),
        ({"network": {"proxy": {"type": "ftp"}}}, "network.proxy.type"),
        ({"network": {"proxy": {"type": "socks5", "ip": "10.0.0.1", "port": 70000}}}, "network.proxy.port"),
        ({"network": {"proxy": {"login": 'a";\n\tip = 6.6.6.6'}}}, "network.proxy.login"),
        ({"network": {"proxy": {"noProxy": ["10.0.0.1", 5]}}}, "network.proxy.noProxy"),
        ({"network": {"proxy": {"dns": "not a server"}}}, "network.proxy.dns"),
    ],
)
def test_bad_input_is_400_text_and_nothing_is_written(host: HostBus, body: object, field: str) -> None:
    response = patch(body)
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")
    assert response.content.decode().startswith(INVALID + field)
    assert not REDSOCKS_CONF.exists()
    assert not NO_PROXY.exists()
    assert not (HOST_ROOT / "etc" / "hostname").exists()
    assert host.services.calls == []


def test_malformed_json_is_the_same_400(host: HostBus) -> None:
    response = patch(None, raw="{nope")
    assert response.status_code == 400
    assert response.content.decode().startswith(INVALID)


def test_a_user_lock_makes_it_423_text_and_force_goes_through(engine: str, host: HostBus) -> None:
    apply(local_target({"main": {}}, image=engine))
    (lock_dir("main") / "updates.lock").touch()
    response = patch({"network": {"hostname": "locked-1"}})
    assert response.status_code == 423
    assert response.content.decode() == "Lockfile exists for { appId: 1, service: main }"
    assert not (HOST_ROOT / "etc" / "hostname").exists()
    assert patch({"network": {"hostname": "locked-1"}, "force": True}).status_code == 200
    assert (HOST_ROOT / "etc" / "hostname").read_text() == "locked-1\n"
    assert not list(lock_dir("main").glob("*updates.lock"))


def test_vpn_state_comes_from_systemd_and_the_flag_file(host: HostBus) -> None:
    def vpn() -> dict[str, bool]:
        response = Client().get("/v2/device/vpn")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "success"
        return dict(body["vpn"])

    assert vpn() == {"enabled": False, "connected": False}
    host.services.unit_states["openvpn.service"] = "active"
    flag = HOST_ROOT / "run" / "openvpn" / "vpn_status" / "active"
    flag.parent.mkdir(parents=True, exist_ok=True)
    flag.touch()
    try:
        assert vpn() == {"enabled": True, "connected": True}
    finally:
        flag.unlink()
