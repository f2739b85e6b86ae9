"""Whether a newly applied release has proven itself: wait, commit it, or roll it back. Pure.

A release on probation is committed once its health window has passed with every service
that has a healthcheck healthy and no service restarted more than its limit. A service
over its restart limit fails the release whenever it is judged; health only once the
window has ended (a healthcheck may take a while to pass). The clock and the engine are
the caller's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from apps_api.engine.state import ServiceSpec
from hostcfg.values import ascii_int

HEALTH_WINDOW_LABEL = "io.balena.update.health-window"
RESTART_LIMIT_LABEL = "io.balena.update.health-restarts"
DEFAULT_HEALTH_WINDOW_SECONDS = 120
DEFAULT_RESTART_LIMIT = 3
# A label may not keep the previous release's images on the device for more than a day.
MAX_HEALTH_WINDOW_SECONDS = 86_400
MAX_RESTART_LIMIT = 1_000_000


def label_problem(label: str, value: str) -> str | None:
    """Why `value` is not acceptable for one of this module's labels; None when it is
    (or when `label` is not one of them)."""
    if label == HEALTH_WINDOW_LABEL and ascii_int(value, maximum=MAX_HEALTH_WINDOW_SECONDS) is None:
        return f"must be a whole number of seconds from 0 to {MAX_HEALTH_WINDOW_SECONDS}"
    if label == RESTART_LIMIT_LABEL and ascii_int(value, maximum=MAX_RESTART_LIMIT) is None:
        return f"must be a whole number from 0 to {MAX_RESTART_LIMIT}"
    return None


def health_window_seconds(services: Iterable[ServiceSpec]) -> int:
    """The release's window: the longest any of its services asks for (default 120 s)."""
    windows = [_label_int(s, HEALTH_WINDOW_LABEL, MAX_HEALTH_WINDOW_SECONDS) for s in services]
    given = [w for w in windows if w is not None]
    return max(given) if given else DEFAULT_HEALTH_WINDOW_SECONDS


def restart_limit(service: ServiceSpec) -> int:
    """How many restarts within the window the service is allowed (default 3)."""
    limit = _label_int(service, RESTART_LIMIT_LABEL, MAX_RESTART_LIMIT)
    return DEFAULT_RESTART_LIMIT if limit is None else limit


def _label_int(service: ServiceSpec, label: str, maximum: int) -> int | None:
    return ascii_int(service.labels.get(label, ""), maximum=maximum)


@dataclass(frozen=True)
class ServiceHealth:
    """One service of the release on probation, as the engine sees it now."""

    service_name: str
    health: str | None
    """The engine's healthcheck status (starting, healthy, unhealthy); None without a healthcheck."""
    restarts: int
    """Restarts of its container since the probation began."""
    restart_limit: int = DEFAULT_RESTART_LIMIT


@dataclass(frozen=True)
class Verdict:
    decision: Literal["wait", "commit", "rollback"]
    reason: str = ""
    """rollback: why, for the user (`service 'web' is unhealthy`)."""
    recheck_in: float = 0.0
    """wait: seconds until the window ends and a verdict can be given."""


def judge_release(services: Sequence[ServiceHealth], *, window: float, elapsed: float) -> Verdict:
    """The verdict on a release `elapsed` seconds into a probation of `window` seconds."""
    for service in sorted(services, key=lambda s: s.service_name):
        if service.restarts > service.restart_limit:
            return Verdict(
                "rollback",
                f"service '{service.service_name}' restarted {service.restarts} times within "
                f"{window:g} s (limit {service.restart_limit})",
            )
    if elapsed < window:
        return Verdict("wait", recheck_in=window - elapsed)
    for service in sorted(services, key=lambda s: s.service_name):
        if service.health is not None and service.health != "healthy":
            return Verdict(
                "rollback", f"service '{service.service_name}' is {service.health} after {window:g} s"
            )
    return Verdict("commit")
