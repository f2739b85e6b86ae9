"""Release contracts: `contract.requires` of each service, judged against this device.

A requirement names a capability of the device (`sw.supervisor`, `sw.os`, `sw.l4t`,
`sw.kernel` with an npm-style version range; `hw.device-type`, `arch.sw` with a slug) or
`{"or": [...]}` of requirements. An app with a service whose contract is not met is
rejected whole (kept in the target, given no steps), unless that service is labelled
`io.balena.features.optional`, which drops only the service (docs/target-state.md
"Contracts"). Pure: the caller reads the device's facts.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from apps_api.engine.state import AppSpec, ServiceSpec, TargetState
from hostcfg.device_config import is_truthy

VERSIONED_CAPABILITIES = ("sw.supervisor", "sw.os", "sw.l4t", "sw.kernel")
SLUG_CAPABILITIES = ("hw.device-type", "arch.sw")
OPTIONAL_LABEL = "io.balena.features.optional"


@dataclass(frozen=True)
class DeviceFacts:
    """What contracts are judged against: versions as the device reports them."""

    supervisor_version: str
    os_version: str
    """As os-release's PRETTY_NAME has it (`balenaOS 2.80.3+rev1`); "" when unknown."""
    kernel_release: str
    """`uname -r` (`5.10.0-21-amd64`, `4.9.140-l4t-r32.2`)."""
    device_type: str
    arch: str

    def capability(self, kind: str) -> str | None:
        """The version or slug the device has for `kind`; None when it has none."""
        values = {
            "sw.supervisor": semver_of(self.supervisor_version),
            "sw.os": semver_of(self.os_version),
            "sw.kernel": semver_of(self.kernel_release),
            "sw.l4t": l4t_version(self.kernel_release),
            "hw.device-type": self.device_type or None,
            "arch.sw": self.arch or None,
        }
        return values.get(kind)


def semver_of(text: str) -> str | None:
    """The first `x.y[.z]` in `text`, as a full `x.y.z`; None if there is none."""
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        return None
    major, minor, patch = match.groups()
    return f"{int(major)}.{int(minor)}.{int(patch or 0)}"


def l4t_version(kernel_release: str) -> str | None:
    """Jetson kernels carry their L4T release in `uname -r` (`…-l4t-r32.2.1`)."""
    match = re.search(r"-l4t-r(\d+)(?:\.(\d+))?(?:\.(\d+))?", kernel_release)
    if match is None:
        return None
    return ".".join(str(int(part or 0)) for part in match.groups())


def unmet_requirement(contract: Mapping[str, Any] | None, facts: DeviceFacts) -> str | None:
    """Why `contract` is not met on this device (`sw.os >=2.80 (device has 2.50.1)`), or
    None when it is, or when the service has no contract."""
    if not contract:
        return None
    requires = contract.get("requires", [])
    if not isinstance(requires, list):
        return "contract.requires is not a list"
    for requirement in requires:
        problem = _unmet(requirement, facts)
        if problem is not None:
            return problem
    return None


def _unmet(requirement: object, facts: DeviceFacts) -> str | None:
    if not isinstance(requirement, dict):
        return f"unreadable requirement {requirement!r}"
    if "or" in requirement:
        choices = requirement["or"]
        if not isinstance(choices, list) or not choices:
            return f"unreadable requirement {requirement!r}"
        problems = [_unmet(choice, facts) for choice in choices]
        return None if None in problems else " or ".join(str(p) for p in problems)
    kind = requirement.get("type")
    if kind in VERSIONED_CAPABILITIES:
        wanted = requirement.get("version")
        if not isinstance(wanted, str):
            return f"{kind} without a version range"
        have = facts.capability(kind)
        if have is None or not _satisfies(have, wanted):
            return f"{kind} {wanted} (device has {have or 'none'})"
        return None
    if kind in SLUG_CAPABILITIES:
        wanted = requirement.get("slug")
        have = facts.capability(kind)
        if wanted != have:
            return f"{kind} {wanted} (device has {have or 'none'})"
        return None
    return f"unknown requirement type {kind!r}"


def _satisfies(version: str, wanted: str) -> bool:
    import nodesemver  # kept lazy: only a target with contracts needs it

    try:
        return bool(nodesemver.satisfies(version, wanted, loose=True))
    except ValueError:
        return False


@dataclass(frozen=True)
class ContractVerdict:
    target: TargetState
    rejected: dict[str, str]
    """App name → the requirement that rejected it."""
    dropped: dict[str, str]
    """`app/service` → the requirement that dropped the optional service."""


def judge_contracts(target: TargetState, facts: DeviceFacts) -> ContractVerdict:
    """`target` with each app whose contracts fail marked rejected, and each optional
    service whose contract fails left out."""
    apps: list[AppSpec] = []
    rejected: dict[str, str] = {}
    dropped: dict[str, str] = {}
    for app in target.apps:
        kept: list[ServiceSpec] = []
        reason = None
        for service in app.services:
            problem = unmet_requirement(service.contract, facts)
            if problem is None:
                kept.append(service)
            elif is_truthy(service.labels.get(OPTIONAL_LABEL, "")):
                dropped[f"{app.name}/{service.service_name}"] = problem
            elif reason is None:
                reason = f"service '{service.service_name}' requires {problem}"
        if reason is not None:
            rejected[app.name] = reason
            apps.append(dataclasses.replace(app, rejected=reason))
        else:
            apps.append(dataclasses.replace(app, services=_without_dropped_dependencies(kept)))
    return ContractVerdict(dataclasses.replace(target, apps=tuple(apps)), rejected, dropped)


def _without_dropped_dependencies(services: list[ServiceSpec]) -> tuple[ServiceSpec, ...]:
    """A kept service no longer waits for a dropped one."""
    names = {s.service_name for s in services}
    return tuple(
        dataclasses.replace(s, depends_on=tuple(d for d in s.depends_on if d in names)) for s in services
    )
