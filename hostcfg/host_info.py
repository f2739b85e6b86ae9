"""Facts about the host read from its files and interfaces: addresses, OS version, VPN."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

from django.conf import settings

from hostcfg.identity import DeviceConfigError, read_config_json

# Interfaces whose addresses are not the device's on its network, as the original leaves them
# out: the engine's and the supervisor's bridges, the VPN and its DNS, the proxy, loopback.
NOT_THE_DEVICES_INTERFACES = re.compile(
    r"^(balena|docker|rce|tun|resin-vpn|lo$|resin-dns|supervisor0|br-[0-9a-f]{12}|veth)|-redsocks$"
)


class InterfaceAddress(Protocol):
    family: int
    address: str


def host_addresses(interfaces: Mapping[str, Iterable[InterfaceAddress]] | None = None) -> tuple[str, str]:
    """(IP addresses, MAC addresses) of the host's interfaces (`interfaces`: psutil's
    net_if_addrs() by default), space-separated: IPv4 and global IPv6 addresses, as the
    original reports them; loopback, bridges, the VPN and its DNS left out."""
    if interfaces is None:
        import psutil  # kept lazy: only the device answers and the state report need it

        interfaces = psutil.net_if_addrs()
    ips, macs = [], []
    for name, addresses in sorted(interfaces.items()):
        if NOT_THE_DEVICES_INTERFACES.search(name):
            continue
        for address in addresses:
            if address.family == socket.AF_INET:
                ips.append(address.address)
            elif address.family == socket.AF_INET6 and _global_ipv6(address.address):
                ips.append(address.address.split("%", 1)[0])
            elif address.family == socket.AF_PACKET and address.address not in ("", "00:00:00:00:00:00"):
                macs.append(address.address.upper())
    return " ".join(ips), " ".join(dict.fromkeys(macs))


def _global_ipv6(text: str) -> bool:
    try:
        address = ipaddress.IPv6Address(text.split("%", 1)[0])
    except ValueError:
        return False
    return not (
        address.is_link_local or address.is_loopback or address.is_multicast or address.is_unspecified
    )


def os_release_field(name: str) -> str:
    """A field of the host's os-release (`PRETTY_NAME`, `BALENA_BOARD_REV`); "" if absent."""
    try:
        for line in (Path(settings.SUPERVISOR_HOST_ROOT) / "etc" / "os-release").read_text().splitlines():
            if line.startswith(f"{name}="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return ""


def os_version() -> str:
    return os_release_field("PRETTY_NAME")


def os_variant() -> str:
    """`dev` or `prod`, as the original derives it: the host os-release's VARIANT_ID, else
    config.json's `developmentMode`."""
    if variant := os_release_field("VARIANT_ID"):
        return variant
    try:
        development = read_config_json(Path(settings.SUPERVISOR_CONFIG_JSON)).get("developmentMode") is True
    except DeviceConfigError:
        development = False
    return "dev" if development else "prod"


def kernel_release() -> str:
    """`uname -r` of the host, as its procfs says."""
    try:
        return (Path(settings.SUPERVISOR_HOST_ROOT) / "proc/sys/kernel/osrelease").read_text().strip()
    except OSError:
        return ""


VPN_CONNECTED_FLAG = Path("run/openvpn/vpn_status/active")


def vpn_connected() -> bool:
    """Whether the VPN tunnel is up: the flag file openvpn writes on the host."""
    return (Path(settings.SUPERVISOR_HOST_ROOT) / VPN_CONNECTED_FLAG).exists()


BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    """The kernel's id of this boot (a new one at every boot); "" where it cannot be read."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""
