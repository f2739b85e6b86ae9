"""Facts about the host read from its files and interfaces: addresses, OS version, VPN."""

from __future__ import annotations

import socket
from pathlib import Path

from django.conf import settings


def host_addresses() -> tuple[str, str]:
    """(IPv4 addresses, MAC addresses) of the host's interfaces, space-separated; loopback
    and the engine's own bridges left out."""
    import psutil  # kept lazy: only the device answers and the state report need it

    ips, macs = [], []
    for name, addresses in sorted(psutil.net_if_addrs().items()):
        if name == "lo" or name.startswith(("docker", "br-", "veth", "supervisor0", "balena")):
            continue
        for address in addresses:
            if address.family == socket.AF_INET:
                ips.append(address.address)
            elif address.family == psutil.AF_LINK and address.address not in ("", "00:00:00:00:00:00"):
                macs.append(address.address.upper())
    return " ".join(ips), " ".join(dict.fromkeys(macs))


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
