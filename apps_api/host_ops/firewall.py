"""HOST_FIREWALL_MODE on the host: the BALENA-FIREWALL chain follows the device config
and the target's services (spec: target-state.md; balena's docs/firewall.md).

The chain is rebuilt when what it should hold changes (mode, local mode, discoverability,
in `auto` whether a service uses host networking) and once per boot, since iptables rules
do not survive a reboot. Each rebuild is announced in one system log line, applied or not.
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
    wanted = {"boot_id": boot_id(), "rules": restore_input(rules, 4) + restore_input(rules, 6)}
    if applied == wanted:
        return wanted
    mode = config.firewall_mode
    try:
        apply_firewall(rules, netns=settings.SUPERVISOR_FIREWALL_NETNS)
    except FirewallError as exc:
        system_log(f"Firewall mode {mode} not applied due to '{exc}'", is_stderr=True)
        return wanted
    system_log(f"Firewall mode {mode} applied: {_effect(policy, mode)}")
    return wanted


def _effect(policy: FirewallPolicy, mode: str) -> str:
    trusted = ", ".join(TRUSTED_INTERFACES)
    if policy.enforcing:
        reason = "a service uses host networking: " if mode == "auto" else ""
        effect = f"{reason}only balena's host services and traffic from {trusted} are let in"
    else:
        reason = "no service uses host networking: " if mode == "auto" else ""
        effect = f"{reason}all traffic is let in"
    if policy.local_mode:
        return effect
    return f"{effect}, but the supervisor API only from {trusted}"
