"""The rate limit of the device API's disruptive actions: each API key holder (the global key,
one service's key, or local mode's no key) may start at most SUPERVISOR_ACTION_RATE_LIMIT of
them in a window of WINDOW_SECONDS (default 120: a burst of 60 on top of a steady one a
second, what a CLI session or an app's own controller sends, is never refused), and at most
SUPERVISOR_POWER_ACTION_RATE_LIMIT reboots and shutdowns (default 10), counted apart; further
ones are refused until the window ends.

The counters are in Redis (redis_store.count_in_window), so the limit holds across the web
process's threads, its restarts and several web processes. The window is fixed: it opens at
the holder's first counted action and closes WINDOW_SECONDS later, which is what Retry-After
says. Refused attempts are counted too, but they cannot move the window's end.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from apps_api.redis_store import ACTION_COUNT_PREFIX, count_in_window

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60

# (method, route pattern as in apps_api/api/urls.py): what stops, restarts or wipes something,
# or changes the host or the caller's key. Starting a service, blinking, polling for an update
# and the reads are not limited (they are audited: apps_api/audit.py).
DISRUPTIVE_ACTIONS = frozenset(
    {
        ("POST", "v1/reboot"),
        ("POST", "v1/shutdown"),
        ("POST", "v1/restart"),
        ("POST", "v1/purge"),
        ("POST", "v1/apps/<str:app_id>/stop"),
        ("PATCH", "v1/device/host-config"),
        ("POST", "v1/regenerate-api-key"),
        ("POST", "v2/applications/<str:app_id>/restart-service"),
        ("POST", "v2/applications/<str:app_id>/stop-service"),
        ("POST", "v2/applications/<str:app_id>/restart"),
        ("POST", "v2/applications/<str:app_id>/purge"),
    }
)


POWER_ACTIONS = frozenset({("POST", "v1/reboot"), ("POST", "v1/shutdown")})
POWER_BUCKET_SUFFIX = ":power"


def is_disruptive(method: str, route: str) -> bool:
    """Whether a request to `route` (a URL pattern) with `method` counts against the limit."""
    return (method, route) in DISRUPTIVE_ACTIONS


def is_power_action(method: str, route: str) -> bool:
    """Whether the request reboots or shuts the device down (counted in its own bucket)."""
    return (method, route) in POWER_ACTIONS


class ActionRateLimited(Exception):
    """The key's holder used up its disruptive actions for this window (answered 429)."""

    def __init__(self, *, limit: int, retry_after: int) -> None:
        super().__init__(
            f"Too many disruptive actions with this key: at most {limit} a minute; retry in {retry_after} s"
        )
        self.retry_after = retry_after


@dataclass(frozen=True)
class WindowVerdict:
    allowed: bool
    retry_after: int  # whole seconds until the window closes, at least 1


def judge_window(count: int, remaining_ms: int, *, limit: int) -> WindowVerdict:
    """Whether the `count`th action of a window with `remaining_ms` left is within `limit`."""
    # A window without an end (Redis's -1/-2) cannot come from count_in_window; were it to,
    # a full window is the honest wait.
    seconds = math.ceil(remaining_ms / 1000) if remaining_ms > 0 else WINDOW_SECONDS
    return WindowVerdict(allowed=count <= limit, retry_after=max(1, seconds))


Counter = Callable[..., tuple[int, int]]


class ActionLimiter:
    """Counts each holder's disruptive actions and refuses those over the limit.

    When Redis cannot count, the action goes ahead (the limiter must never be why a reboot
    or a restart fails): that is logged once when counting stops and once when it works
    again, not on every request."""

    def __init__(self, *, count: Counter = count_in_window, window_seconds: int = WINDOW_SECONDS) -> None:
        self._count = count
        self._window_seconds = window_seconds
        self._counting = True

    def take(self, holder: str, *, limit: int) -> None:
        """Count one action of `holder`; raise ActionRateLimited when it is over `limit`
        (0 or less: no limit, nothing counted)."""
        if limit <= 0:
            return
        try:
            key = ACTION_COUNT_PREFIX + holder
            count, remaining_ms = self._count(key, window_seconds=self._window_seconds)
        except Exception as exc:
            if self._counting:
                logger.warning("disruptive API actions are not limited until Redis answers again: %s", exc)
            self._counting = False
            return
        if not self._counting:
            logger.warning("disruptive API actions are rate limited again")
            self._counting = True
        verdict = judge_window(count, remaining_ms, limit=limit)
        if not verdict.allowed:
            raise ActionRateLimited(limit=limit, retry_after=verdict.retry_after)
