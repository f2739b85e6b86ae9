"""The process's Redis client for small keys (locks, flags); Celery and Channels keep their own."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    import redis


@cache
def redis_client() -> redis.Redis:
    """A client with short timeouts: a dead Redis must never hang a request."""
    import redis

    return redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2, health_check_interval=30
    )
