"""HOST_FIREWALL_MODE applied by the real worker with the real iptables, inside a network
namespace of the test's own (the test settings point SUPERVISOR_FIREWALL_NETNS at it),
checked with `iptables -S` there and with real connections from a second, "LAN",
namespace. The host's own firewall is never touched.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from tests.integration.conftest import WorkerLog
from tests.integration.engine_helpers import apply, local_target

pytestmark = pytest.mark.django_db(transaction=True)

DEVICE_NETNS = settings.SUPERVISOR_FIREWALL_NETNS
LAN_NETNS = f"{DEVICE_NETNS}-lan"
VIA_DOCKER0 = "10.99.1.1"
"""The device's address on docker0 (a trusted interface), as the LAN namespace reaches it."""
VIA_ETH0 = "10.99.2.1"
"""The device's address on eth0 (not trusted)."""
API_PORT = int(settings.SUPERVISOR_PORT)
SERVICE_PORT = 8080
"""Where a host-networked service of the device would listen."""

LISTENER = """
import socket, sys
servers = []
for port in sys.argv[1:]:
    server = socket.create_server(("0.0.0.0", int(port)), reuse_port=True)
    servers.append(server)
print("listening", flush=True)
while True:
    for server in servers:
        server.settimeout(0.05)
        try:
            server.accept()[0].close()
        except TimeoutError:
            pass
"""
CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20).close()
    print("open")
except ConnectionRefusedError:
    print("refused")
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def device_netns() -> Iterator[str]:
    """The device's network namespace, listening on the API port and a service port, and a
    LAN namespace linked to it twice: one link arrives on the device's docker0, one on its
    eth0. Both namespaces (and their links) are deleted afterwards."""
    for name in (DEVICE_NETNS, LAN_NETNS):
        subprocess.run(["ip", "netns", "del", name], capture_output=True)  # left by a killed run
        ip("netns", "add", name)
    listener: subprocess.Popen[bytes] | None = None
    try:
        for device_end, lan_end, address, lan_address in (
            ("docker0", "to-docker0", VIA_DOCKER0, "10.99.1.2"),
            ("eth0", "to-eth0", VIA_ETH0, "10.99.2.2"),
        ):
            ip("-n", DEVICE_NETNS, "link", "add", device_end, "type", "veth", "peer", "name", lan_end,
               "netns", LAN_NETNS)  # fmt: skip
            ip("-n", DEVICE_NETNS, "addr", "add", f"{address}/24", "dev", device_end)
            ip("-n", LAN_NETNS, "addr", "add", f"{lan_address}/24", "dev", lan_end)
            ip("-n", DEVICE_NETNS, "link", "set", device_end, "up")
            ip("-n", LAN_NETNS, "link", "set", lan_end, "up")
        for name in (DEVICE_NETNS, LAN_NETNS):
            ip("-n", name, "link", "set", "lo", "up")
        listener = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                DEVICE_NETNS,
                sys.executable,
                "-c",
                LISTENER,
                str(API_PORT),
                str(SERVICE_PORT),
            ],
            stdout=subprocess.PIPE,
        )
        assert listener.stdout is not None
        assert listener.stdout.readline() == b"listening\n"
        # A fresh namespace has no firewall yet: nothing counts as applied.
        (Path(settings.SUPERVISOR_DATA_DIR) / "applied-device-config.json").unlink(missing_ok=True)
        yield DEVICE_NETNS
    finally:
        if listener is not None:
            listener.kill()
            listener.wait()
        for name in (DEVICE_NETNS, LAN_NETNS):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def reaches(address: str, port: int) -> bool:
    """Whether a TCP connection from the LAN namespace to the device is accepted."""
    done = subprocess.run(
        ["ip", "netns", "exec", LAN_NETNS, sys.executable, "-c", CONNECT, address, str(port)],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip() == "open"


def device_rules(tool: str = "iptables") -> list[str]:
    listing = subprocess.run(
        ["ip", "netns", "exec", DEVICE_NETNS, tool, "-S"], capture_output=True, text=True, check=True
    )
    return listing.stdout.splitlines()


def chain_of(rules: list[str]) -> list[str]:
    return [rule for rule in rules if rule.startswith("-A BALENA-FIREWALL ")]


def test_firewall_on_lets_in_only_the_trusted_interfaces_and_off_removes_it(
    engine: str, device_netns: str, managed_device: None, worker_log: WorkerLog
) -> None:
    apply(local_target({"main": {}}, image=engine, config={"HOST_FIREWALL_MODE": "on"}))
    rules = device_rules()
    assert rules.count("-A INPUT -j BALENA-FIREWALL") == 1
    assert "-A BALENA-FIREWALL -i docker0 -j ACCEPT" in rules
    assert chain_of(rules)[-1] == "-A BALENA-FIREWALL -j REJECT --reject-with icmp-port-unreachable"
    ipv6 = device_rules("ip6tables")
    assert ipv6.count("-A INPUT -j BALENA-FIREWALL") == 1
    assert "-A BALENA-FIREWALL -p ipv6-icmp -j ACCEPT" in ipv6
    assert chain_of(ipv6)[-1] == "-A BALENA-FIREWALL -j REJECT --reject-with icmp6-port-unreachable"
    assert worker_log.lines_with("Firewall mode on applied: only balena's host services and traffic from lo")
    # Real traffic: everything from the trusted interface, nothing else from eth0.
    assert reaches(VIA_DOCKER0, SERVICE_PORT)
    assert reaches(VIA_DOCKER0, API_PORT)
    assert not reaches(VIA_ETH0, SERVICE_PORT)
    assert not reaches(VIA_ETH0, API_PORT)

    apply(local_target({"main": {}}, image=engine, config={"HOST_FIREWALL_MODE": "off"}))
    assert not any("BALENA-FIREWALL" in rule for rule in device_rules() + device_rules("ip6tables"))
    assert worker_log.lines_with("Firewall mode off applied: the balena firewall is removed")
    assert reaches(VIA_ETH0, SERVICE_PORT)
    assert reaches(VIA_ETH0, API_PORT)

    # Back on: the chain is rebuilt as it was, one jump from INPUT.
    apply(local_target({"main": {}}, image=engine, config={"HOST_FIREWALL_MODE": "on"}))
    assert device_rules() == rules


def test_auto_rejects_only_while_a_service_uses_host_networking(
    engine: str, device_netns: str, managed_device: None
) -> None:
    config = {"HOST_FIREWALL_MODE": "auto"}
    apply(local_target({"main": {}}, image=engine, config=config))
    assert reaches(VIA_ETH0, SERVICE_PORT)

    apply(local_target({"main": {}, "web": {"network_mode": "host"}}, image=engine, config=config))
    assert not reaches(VIA_ETH0, SERVICE_PORT)
    assert reaches(VIA_DOCKER0, SERVICE_PORT)

    apply(local_target({"main": {}}, image=engine, config=config))
    assert reaches(VIA_ETH0, SERVICE_PORT)


def test_local_mode_opens_the_supervisor_api_to_the_lan(engine: str, device_netns: str) -> None:
    """An unmanaged device is in local mode: the balena CLI reaches the API over the LAN."""
    apply(local_target({"main": {}}, image=engine, config={"HOST_FIREWALL_MODE": "on"}))
    assert reaches(VIA_ETH0, API_PORT)
    assert not reaches(VIA_ETH0, SERVICE_PORT)
