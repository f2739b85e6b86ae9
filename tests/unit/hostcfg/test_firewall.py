"""The BALENA-FIREWALL rule table, as data and as iptables-restore input."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from hostcfg.firewall import FirewallPolicy, firewall_rules, is_enforcing, restore_input

ON = FirewallPolicy(enforcing=True, local_mode=False, discoverable=True, api_port=48484)


def policy(**changes: Any) -> FirewallPolicy:
    return replace(ON, **changes)


def chain(p: FirewallPolicy, family: int = 4) -> list[str]:
    return [" ".join(rule.args) for rule in firewall_rules(p) if rule.family in (None, family)]


@pytest.mark.parametrize(
    ("mode", "host_networking", "expected"),
    [
        ("on", False, True),
        ("on", True, True),
        ("off", True, False),
        ("off", False, False),
        ("auto", True, True),
        ("auto", False, False),
    ],
)
def test_auto_rejects_only_while_a_service_uses_host_networking(
    mode: str, host_networking: bool, expected: bool
) -> None:
    assert is_enforcing(mode, host_networking=host_networking) is expected


def test_firewall_on_lets_in_balena_services_and_trusted_interfaces_then_rejects() -> None:
    assert chain(policy()) == [
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-m addrtype --src-type LOCAL -j ACCEPT",
        "-i lo -j ACCEPT",
        "-i docker0 -j ACCEPT",
        "-i supervisor0 -j ACCEPT",
        "-i resin-vpn -j ACCEPT",
        "-i tun0 -j ACCEPT",
        "-p tcp --dport 48484 -j REJECT",
        "-p tcp --dport 22222 -j ACCEPT",
        "-p tcp --dport 2375 -j ACCEPT",
        "-p icmp -j ACCEPT",
        "-p udp --sport 67 --dport 68 -j ACCEPT",
        "-i balena0 -p udp --dport 53 -j ACCEPT",
        "-p udp --dport 5353 -m addrtype --dst-type MULTICAST -j ACCEPT",
        "-j REJECT",
    ]


def test_ipv6_gets_icmpv6_and_the_dhcpv6_client_instead() -> None:
    rules = chain(policy(), family=6)

    assert "-p ipv6-icmp -j ACCEPT" in rules
    assert "-p udp --sport 547 --dport 546 -j ACCEPT" in rules
    assert "-p icmp -j ACCEPT" not in rules
    assert rules[-1] == "-j REJECT"


def test_firewall_off_is_no_chain_at_all() -> None:
    assert firewall_rules(policy(enforcing=False)) == []


def test_local_mode_opens_the_api_on_every_interface() -> None:
    rules = chain(policy(local_mode=True, api_port=1234))

    assert "-p tcp --dport 1234 -j ACCEPT" in rules
    assert not any("--dport 1234 -j REJECT" in rule for rule in rules)


def test_mdns_is_let_in_only_while_discoverable() -> None:
    assert not any("5353" in rule for rule in chain(policy(discoverable=False)))


def test_restore_input_empties_and_refills_only_our_chain() -> None:
    text = restore_input(firewall_rules(policy()), 4)

    lines = text.splitlines()
    assert lines[:3] == ["*filter", ":BALENA-FIREWALL - [0:0]", "-F BALENA-FIREWALL"]
    assert lines[-1] == "COMMIT"
    assert all(line.startswith("-A BALENA-FIREWALL ") for line in lines[3:-1])
    assert "INPUT" not in text
