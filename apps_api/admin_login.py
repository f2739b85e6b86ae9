"""The admin's login, throttled: failed logins are counted per client address and per user
name in Redis, and past ADMIN_LOGIN_FAILURES in ADMIN_LOGIN_WINDOW_SECONDS further attempts
from that address, or for that name, are refused (429) until the window ends. App containers
and host-networked services reach the admin's addresses; this bounds their guessing."""

from __future__ import annotations

import hashlib
import math

from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from apps_api.redis_store import (
    ADMIN_LOGIN_FAILURES_PREFIX,
    count_in_window,
    longest_wait_at_limit,
    redis_client,
)

ADMIN_LOGIN_FAILURES = 10
ADMIN_LOGIN_WINDOW_SECONDS = 15 * 60


def _keys(request: HttpRequest) -> list[str]:
    address = request.META.get("REMOTE_ADDR", "")
    keys = [f"{ADMIN_LOGIN_FAILURES_PREFIX}address:{address}"]
    if username := request.POST.get("username", ""):
        name = hashlib.sha256(username.lower().encode()).hexdigest()[:32]
        keys.append(f"{ADMIN_LOGIN_FAILURES_PREFIX}user:{name}")
    return keys


def throttled_login(request: HttpRequest) -> HttpResponse:
    """admin.site.login, unless this address or user name failed too often lately."""
    if request.method != "POST":
        return admin.site.login(request)
    keys = _keys(request)
    if wait_ms := longest_wait_at_limit(keys, limit=ADMIN_LOGIN_FAILURES):
        minutes = max(1, math.ceil(wait_ms / 60_000))
        return HttpResponse(
            f"Too many failed logins; try again in {minutes} minute(s).\n",
            status=429,
            content_type="text/plain; charset=utf-8",
            headers={"Retry-After": str(minutes * 60)},
        )
    response = admin.site.login(request)
    if response.status_code == 302:  # logged in
        redis_client().delete(*keys)
    else:
        for key in keys:
            count_in_window(key, window_seconds=ADMIN_LOGIN_WINDOW_SECONDS)
    return response
