"""The throttle of the device API's disruptive actions (apps_api/action_limit.py). Named in
REST_FRAMEWORK's DEFAULT_THROTTLE_CLASSES, so DRF imports it while defining APIView: it must
import no view."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from apps_api.action_limit import POWER_BUCKET_SUFFIX, ActionLimiter, is_disruptive, is_power_action
from apps_api.apikeys import ApiAccess

# One per process: it only remembers whether Redis could count, to log an outage once.
LIMITER = ActionLimiter()


class DisruptiveActionThrottle(BaseThrottle):
    """Refuses (ActionRateLimited, answered 429) a disruptive action over the caller's limit.
    DRF runs it after the key was checked, so a request without a valid key is 401, never
    429, and counts for nobody."""

    def allow_request(self, request: Request, view: Any) -> bool:
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return True  # the reads: nothing to count, no Redis call
        match = request.resolver_match
        access = request.auth
        if match is None or not is_disruptive(request.method or "", match.route):
            return True
        if not isinstance(access, ApiAccess):
            return True
        if is_power_action(request.method or "", match.route):
            LIMITER.take(
                access.holder.name + POWER_BUCKET_SUFFIX, limit=settings.SUPERVISOR_POWER_ACTION_RATE_LIMIT
            )
        else:
            LIMITER.take(access.holder.name, limit=settings.SUPERVISOR_ACTION_RATE_LIMIT)
        return True
