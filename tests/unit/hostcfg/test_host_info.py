"""Facts the state report gives about the host, read as the original reads them."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import NamedTuple

import pytest
from pytest_django.fixtures import SettingsWrapper

from hostcfg.host_info import host_addresses, os_variant


@pytest.fixture
def device(tmp_path: Path, settings: SettingsWrapper) -> Path:
    settings.SUPERVISOR_HOST_ROOT = str(tmp_path / "host")
    settings.SUPERVISOR_CONFIG_JSON = str(tmp_path / "config.json")
    (tmp_path / "host" / "etc").mkdir(parents=True)
    return tmp_path


@pytest.mark.parametrize(
    ("os_release", "config", "variant"),
    [
        ('ID="balena-os"\nVARIANT_ID="dev"\n', {}, "dev"),
        ('ID="balena-os"\nVARIANT_ID=prod\n', {"developmentMode": True}, "prod"),  # the OS says
        ('ID="balena-os"\n', {"developmentMode": True}, "dev"),  # no variant: development mode
        ('ID="balena-os"\n', {"developmentMode": "true"}, "prod"),  # only a JSON true counts
        (None, {}, "prod"),  # no os-release at all
    ],
)
def test_the_os_variant_comes_from_the_os_then_development_mode(
    device: Path, os_release: str | None, config: dict[str, object], variant: str
) -> None:
    if os_release is not None:
        (device / "host" / "etc" / "os-release").write_text(os_release)
    (device / "config.json").write_text(json.dumps(config))
    assert os_variant() == variant


def test_an_unreadable_config_json_is_prod(device: Path) -> None:
    (device / "config.json").write_bytes(b"\xff\xfe not json")
    assert os_variant() == "prod"


class Address(NamedTuple):
    family: int
    address: str


def test_the_addresses_are_the_devices_own_ipv4_and_global_ipv6_as_the_original_reports_them() -> None:
    mac = socket.AF_PACKET
    interfaces = {
        "eth0": [Address(socket.AF_INET, "192.168.1.20"), Address(socket.AF_INET6, "2001:db8::20"),
                 Address(socket.AF_INET6, "fe80::1%eth0"), Address(mac, "aa:bb:cc:dd:ee:01")],
        "wlan0": [Address(socket.AF_INET, "10.0.0.5"), Address(socket.AF_INET6, "fd12:3456::5"),
                  Address(mac, "aa:bb:cc:dd:ee:02")],
        "lo": [Address(socket.AF_INET, "127.0.0.1"), Address(socket.AF_INET6, "::1")],
        "resin-vpn": [Address(socket.AF_INET, "10.240.1.2")],
        "tun0": [Address(socket.AF_INET, "10.8.0.2")],
        "resin-dns": [Address(socket.AF_INET, "10.114.102.1"), Address(mac, "aa:bb:cc:dd:ee:03")],
        "balena0": [Address(socket.AF_INET, "10.114.101.1")],
        "docker0": [Address(socket.AF_INET, "172.17.0.1")],
        "supervisor0": [Address(socket.AF_INET, "10.114.104.1")],
        "br-0123456789ab": [Address(socket.AF_INET, "172.18.0.1")],
        "eth0-redsocks": [Address(socket.AF_INET, "10.1.1.1")],
        "vethd3adb33f": [Address(mac, "aa:bb:cc:dd:ee:04")],
    }  # fmt: skip

    ips, macs = host_addresses(interfaces)

    assert ips == "192.168.1.20 2001:db8::20 10.0.0.5 fd12:3456::5"
    assert macs == "AA:BB:CC:DD:EE:01 AA:BB:CC:DD:EE:02"
