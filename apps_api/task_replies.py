"""Early answers from a running task to the request that queued it.

Some actions must answer before their task ends: reboot answers 202 once every update
lock is held, then goes on to stop the apps (whose containers may include the caller).
The task pushes one JSON reply onto a Redis list named for that request; the view waits
on it with a deadline.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

REPLY_KEY_PREFIX = "supervisor:task-reply:"
# A reply nobody collects (the view gave up) disappears by itself.
REPLY_TTL_SECONDS = 120


def new_reply_key() -> str:
    return REPLY_KEY_PREFIX + secrets.token_hex(16)


def send_reply(reply_key: str, reply: dict[str, Any]) -> None:
    from supervisor_site.redis_connection import redis_client

    with redis_client().pipeline() as pipe:
        pipe.rpush(reply_key, json.dumps(reply))
        pipe.expire(reply_key, REPLY_TTL_SECONDS)
        pipe.execute()


def wait_for_reply(reply_key: str, *, timeout: float) -> dict[str, Any] | None:
    """The task's reply, or None when none came within `timeout` seconds."""
    import redis
    from django.conf import settings

    # Its own client: the shared one's socket timeout is shorter than the wait.
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=timeout + 5, socket_connect_timeout=2)
    try:
        popped: Any = client.blpop([reply_key], timeout=max(1, round(timeout)))
    finally:
        client.close()
    if popped is None:
        return None
    reply = json.loads(popped[1])
    return reply if isinstance(reply, dict) else None
