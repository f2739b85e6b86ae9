"""HOST_FIREWALL_MODE on the host: the BALENA-FIREWALL chain follows the device config
and the target's services (docs/host.md "Firewall").

The chain is rebuilt when what it should hold changes (mode, local mode, discoverability,
in `auto` whether a service uses host networking) and once per boot, since iptables rules
do not survive a reboot; with the firewall off it is removed. Each change of the host's
firewall is announced in one system log line, and so is a failure.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from apps_api.engine.state import TargetState
from apps_api.logs.publisher import system_log
from hostcfg.device_config import DeviceConfig
from hostcfg.firewall import (
    TRUSTED_INTERFACES,
    FirewallError,
    FirewallPolicy,
    apply_firewall,
    firewall_rules,
    is_enforcing,
    restore_input,
)
from hostcfg.host_info import boot_id


def uses_host_networking(target: TargetState) -> bool:
    """Whether any service of the target shares the host's network (its ports are the host's)."""
    return any(
        service.composition.get("network_mode") == "host" for app in target.apps for service in app.services
    )


def follow_firewall_mode(
    target: TargetState, config: DeviceConfig, applied: Any, *, managed: bool
) -> dict[str, str]:
    """Rebuild the firewall if `applied` (what this returned last time) is out of date;
    returns what to keep for next time. A failure is logged and not retried until
    something changes or the device reboots. An unmanaged device is always in local mode."""
    host_networking = uses_host_networking(target)
    policy = FirewallPolicy(
        enforcing=is_enforcing(config.firewall_mode, host_networking=host_networking),
        local_mode=config.local_mode or not managed,
        discoverable=config.discoverability,
        api_port=int(settings.SUPERVISOR_PORT),
    )
    rules = firewall_rules(policy)
    text = restore_input(rules, 4) + restore_input(rules, 6) if rules else ""
    wanted = {"boot_id": boot_id(), "rules": text}
    if applied == wanted:
        return wanted
    mode = config.firewall_mode
    try:
        changed = apply_firewall(rules, netns=settings.SUPERVISOR_FIREWALL_NETNS)
    except FirewallError as exc:
        system_log(f"Firewall mode {mode} not applied due to '{exc}'", is_stderr=True)
        return wanted
    if changed:
        system_log(f"Firewall mode {mode} applied: {_effect(policy, mode)}")
    return wanted


def _effect(policy: FirewallPolicy, mode: str) -> str:
    if not policy.enforcing:
        reason = "no service uses host networking: " if mode == "auto" else ""
        return f"{reason}the balena firewall is removed, all traffic is let in"
    reason = "a service uses host networking: " if mode == "auto" else ""
    api = " and the supervisor API from anywhere (local mode)" if policy.local_mode else ""
    trusted = ", ".join(TRUSTED_INTERFACES)
    return f"{reason}only balena's host services{api} and traffic from {trusted} are let in"
