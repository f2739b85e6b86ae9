"""The only module that runs iptables: the host firewall of HOST_FIREWALL_MODE.

The rules live in a chain of our own, BALENA-FIREWALL in the `filter` table (IPv4 and
IPv6), jumped to once from the top of INPUT; nothing else of the host's firewall is
changed. `firewall_rules` is the rule table as plain data; `apply_firewall` replaces the
chain with it in one `iptables-restore --noflush` per family, so re-applying is
idempotent and the chain is never seen half-built. When the firewall is off the chain
and its jump are removed, and a host that never had them is only read, never written.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

CHAIN = "BALENA-FIREWALL"
TRUSTED_INTERFACES = ("lo", "docker0", "supervisor0", "resin-vpn", "tun0")
"""Traffic from these is always accepted: loopback, the engine's default bridge, the
supervisor0 bridge of supervisor-API services (10.114.104.0/25), and balena's VPN."""
SSH_PORT = 22222
ENGINE_PORT = 2375
MDNS_PORT = 5353
COMMAND_TIMEOUT_SECONDS = 30.0

Family = Literal[4, 6]
_TOOLS: tuple[tuple[Family, str], ...] = ((4, "iptables"), (6, "ip6tables"))


class FirewallError(Exception):
    """iptables is missing, or refused the rules; the message says which family and why."""


@dataclass(frozen=True)
class FirewallPolicy:
    """What the firewall depends on."""

    enforcing: bool
    """Mode `on`, or `auto` with a host-networked service: reject what is not allowed."""
    local_mode: bool
    """The supervisor API is open on every interface (the CLI on the LAN), else only on
    the trusted interfaces."""
    discoverable: bool
    """HOST_DISCOVERABILITY: mDNS is let in."""
    api_port: int


@dataclass(frozen=True)
class Rule:
    """One `-A BALENA-FIREWALL <args>` line; `family` None means both IPv4 and IPv6."""

    args: tuple[str, ...]
    why: str
    family: Family | None = None


def is_enforcing(mode: str, *, host_networking: bool) -> bool:
    """`on` always rejects what is not allowed; `auto` only while some service uses host
    networking (its ports are then the host's); `off` never."""
    return mode == "on" or (mode == "auto" and host_networking)


def firewall_rules(policy: FirewallPolicy) -> list[Rule]:
    """The BALENA-FIREWALL chain, first match wins; empty (no chain) when not enforcing.

    Replies and the device's own traffic, the trusted interfaces, and the supervisor API
    port only from those (from anywhere in local mode); then balena's own services: SSH,
    the engine, ICMP, the DHCP client, DNS for containers on balena0, mDNS while
    discoverable; everything else is rejected.
    """
    if not policy.enforcing:
        return []
    port = str(policy.api_port)
    rules = [
        Rule(("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"), "replies"),
        Rule(("-m", "addrtype", "--src-type", "LOCAL", "-j", "ACCEPT"), "the device itself"),
    ]
    rules += [Rule(("-i", name, "-j", "ACCEPT"), "trusted interface") for name in TRUSTED_INTERFACES]
    if policy.local_mode:
        rules.append(Rule(("-p", "tcp", "--dport", port, "-j", "ACCEPT"), "supervisor API (local mode)"))
    else:
        rules.append(Rule(("-p", "tcp", "--dport", port, "-j", "REJECT"), "supervisor API elsewhere"))
    rules += [
        Rule(("-p", "tcp", "--dport", str(SSH_PORT), "-j", "ACCEPT"), "host SSH"),
        Rule(("-p", "tcp", "--dport", str(ENGINE_PORT), "-j", "ACCEPT"), "balenaEngine"),
        Rule(("-p", "icmp", "-j", "ACCEPT"), "ICMP", family=4),
        Rule(("-p", "ipv6-icmp", "-j", "ACCEPT"), "ICMPv6 (neighbour discovery)", family=6),
        Rule(("-p", "udp", "--sport", "67", "--dport", "68", "-j", "ACCEPT"), "DHCP client", family=4),
        Rule(("-p", "udp", "--sport", "547", "--dport", "546", "-j", "ACCEPT"), "DHCPv6 client", family=6),
        Rule(("-i", "balena0", "-p", "udp", "--dport", "53", "-j", "ACCEPT"), "DNS for containers"),
    ]
    if policy.discoverable:
        mdns = ("-p", "udp", "--dport", str(MDNS_PORT), "-m", "addrtype", "--dst-type", "MULTICAST")
        rules.append(Rule((*mdns, "-j", "ACCEPT"), "mDNS"))
    rules.append(Rule(("-j", "REJECT"), "everything else"))
    return rules


def restore_input(rules: Sequence[Rule], family: Family) -> str:
    """The `iptables-restore --noflush` input that replaces the chain with `rules`: the
    chain is created if missing and emptied; other chains are left alone."""
    lines = ["*filter", f":{CHAIN} - [0:0]", f"-F {CHAIN}"]
    lines += [f"-A {CHAIN} {' '.join(rule.args)}" for rule in rules if rule.family in (None, family)]
    return "\n".join([*lines, "COMMIT", ""])


def apply_firewall(rules: Sequence[Rule], *, netns: str = "") -> bool:
    """Replace BALENA-FIREWALL with `rules`, for IPv4 and IPv6, and make INPUT jump to it
    exactly once, first; with no rules, remove the chain and its jumps where they exist.
    Returns whether iptables was changed. `netns` names a network namespace to do it in
    (`ip netns exec`; the tests' own), "" the supervisor's. Raises FirewallError."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    changed = False
    for family, tool in _TOOLS:
        iptables = [*prefix, tool, "-w"]
        if not rules:
            changed |= _remove_chain(iptables, family)
            continue
        _run([*prefix, f"{tool}-restore", "-w", "--noflush"], family, stdin=restore_input(rules, family))
        jumps = _run([*iptables, "-S", "INPUT"], family).splitlines().count(f"-A INPUT -j {CHAIN}")
        for _ in range(jumps - 1):
            _run([*iptables, "-D", "INPUT", "-j", CHAIN], family)
        if jumps == 0:
            _run([*iptables, "-I", "INPUT", "1", "-j", CHAIN], family)
        changed = True
    return changed


def _remove_chain(iptables: list[str], family: Family) -> bool:
    try:
        listing = _run([*iptables, "-S"], family).splitlines()
    except FirewallError as exc:
        if isinstance(exc.__cause__, FileNotFoundError):
            return False  # no iptables: no chain of ours either
        raise
    for _ in range(listing.count(f"-A INPUT -j {CHAIN}")):
        _run([*iptables, "-D", "INPUT", "-j", CHAIN], family)
    if f"-N {CHAIN}" not in listing:
        return False
    _run([*iptables, "-F", CHAIN], family)
    _run([*iptables, "-X", CHAIN], family)
    return True


def _run(argv: list[str], family: Family, *, stdin: str = "") -> str:
    try:
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS, check=False
        )
    except FileNotFoundError as exc:
        raise FirewallError(f"IPv{family}: {exc.filename} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise FirewallError(f"IPv{family}: {' '.join(argv)} did not finish") from exc
    if done.returncode != 0:
        raise FirewallError(f"IPv{family}: {' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout
