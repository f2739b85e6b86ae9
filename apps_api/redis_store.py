"""The one module that talks to Redis for the agent's own keys (Celery's broker and the
channel layer are configured in settings and keep their own connections).

The keys below are the protocol between the web process, the worker and the log
collector: single-flight applies, pre-emption, poll-now, progress and task replies. Every
key the agent uses is named here, with who writes it, who reads it and when it expires.
"""

from __future__ import annotations

import json
import os
import secrets
from functools import cache
from typing import Any

import redis
from django.conf import settings
from redis.client import Pipeline
from redis.exceptions import LockError
from redis.lock import Lock

__all__ = ["Lock", "LockError", "Pipeline"]

# --- Every key ----------------------------------------------------------------------------
# Single-flight apply lock. Held by the running apply (apply/single_flight.py) or an action that
# must run alone (restart, purge); 600 s, renewed every 60 s; cleared at worker start.
APPLY_LOCK_KEY = "supervisor:apply:lock"
# An apply is wanted ({"force": bool}). Set by schedule_apply (web or worker), taken with GETDEL
# by the apply loop at each round; no expiry (a request must survive until an apply sees it).
APPLY_REQUEST_KEY = "supervisor:apply:requested"
# Stop the running apply at its next round ("cancel" or "exclusive"). Set by cancel_running_apply,
# taken by the apply loop; expires after 60 s.
APPLY_PREEMPT_KEY = "supervisor:apply:preempt"
# When the running apply began (epoch seconds). Written and deleted by the apply loop; read by
# the engine health check; no expiry.
APPLY_STARTED_KEY = "supervisor:apply:started-at"
# Seconds the running apply spent downloading. Incremented by the journal, reset by the apply
# loop; read by the engine health check; no expiry.
APPLY_DOWNLOAD_SECONDS_KEY = "supervisor:apply:download-seconds"
# Hash of the update flags (applying, update_pending, …) as JSON values. Written by the apply
# loop and actions (apply_status.py); read by the state answers and reports; no expiry.
APPLY_FLAGS_KEY = "supervisor:apply:flags"
# When the apply loop's wait after a failed round ends (epoch seconds). Written and deleted by
# the apply loop; read by the plan answers (GET /v2/plan); expires with the wait.
APPLY_RETRY_AT_KEY = "supervisor:apply:retry-at"
# Hash network engine name → JSON {"rounds", "error"}: the rounds in a row in which the engine
# refused to remove it. Written by the apply loop (apply/refusals.py); read by the planner's
# inputs and /v1/healthy; deleted when a new target is applied or the network is gone.
REFUSED_REMOVALS_KEY = "supervisor:apply:refused-removals"
# The stored target's id the refusals above were counted for (a new target forgets them).
REFUSED_FOR_TARGET_KEY = "supervisor:apply:refused-for-target"
# Hash "appId/service" → transient status ("Downloading", "Stopping"…). Written by the journal;
# read by the state answers; no expiry (entries are deleted when the step ends).
SERVICE_STATUS_KEY = "supervisor:apply:service-status"
# Hash "appId/service" → the service's last change as JSON {"at", "action", "reason"}. Written
# with each journal row that changes a service (service_changes.py); read by the state answers;
# no expiry (it is history: after a loss it is restored from the journal at worker start).
SERVICE_LAST_CHANGE_KEY = "supervisor:apply:service-last-change"
# Hash image reference → download percent. Written by the journal; read by the state answers.
IMAGE_PROGRESS_KEY = "supervisor:apply:image-progress"
# Counter bumped with every write of the progress above, of the apply request and of the apply
# lock, in the same transaction (apply_status.py, apply/single_flight.py): with the lock's token
# it stamps what the state answers show, so a reader that saw the stamp unchanged knows the rest
# is too (snapshot.py); no expiry.
PROGRESS_VERSION_KEY = "supervisor:apply:progress-version"
# Counter bumped when a new target is committed (target/store.py); readers key their parsed copy
# of the target by it; no expiry.
TARGET_VERSION_KEY = "supervisor:target:version"
# Hashes of step and apply counters for /metrics. Incremented by the worker (metrics.py), read by
# the web process; no expiry.
METRICS_STEPS_KEY = "supervisor:metrics:steps"
METRICS_STEP_SECONDS_KEY = "supervisor:metrics:step-seconds"
METRICS_APPLIES_KEY = "supervisor:metrics:applies"
# "The LED is blinking". Set NX by POST /v1/blink (actions.py), deleted by the blink task when
# done; expires 5 s after the blink would have ended, so a lost worker cannot block blinking.
BLINK_LOCK_KEY = "supervisor:identify-blink"
# Prefix of the one-shot lists a task answers its request on (send_reply / wait_for_reply);
# each expires 120 s after its reply is pushed.
TASK_REPLY_PREFIX = "supervisor:task-reply:"
# The cloud poll's state (ETag, last fetch, backoff) as JSON. Written and read by the cloud tick
# (cloud/poll.py); read by health and the report; no expiry.
CLOUD_POLL_STATE_KEY = "supervisor:cloud:poll"
# "Poll now" ("now" or "force"), set by POST /v1/update, taken with GETDEL by the cloud tick.
CLOUD_POLL_NOW_KEY = "supervisor:cloud:poll-now"
# One cloud tick at a time: a lock held by the running tick; cleared at worker start.
CLOUD_TICK_LOCK_KEY = "supervisor:cloud:tick"
# The last state report the cloud accepted, and its pacing (cloud/report.py); no expiry.
CLOUD_REPORT_KEY = "supervisor:cloud:report"
# The same for the device tags report.
CLOUD_TAGS_REPORT_KEY = "supervisor:cloud:tags"
# When the beat scheduler last ran the cloud tick (epoch seconds): written every 5 s by the tick
# and when the agent's worker starts its scheduler; read by the health check (a scheduler that
# died would leave a managed device silently unpolled); no expiry.
SCHEDULER_TICK_KEY = "supervisor:scheduler:tick"
# The version of an apps.json that was refused, so it is logged once (target/preload.py).
PRELOAD_REFUSED_KEY = "supervisor:preload:refused"
# Prefix of the per-key counters of disruptive API actions (action_limit.py): one counter per
# API key holder, incremented by each disruptive request in the web process; each expires one
# window (60 s) after its first increment, which is when that holder may act again.
ACTION_COUNT_PREFIX = "supervisor:action-limit:"
# Prefix of the failed admin logins counted per client address and per user name
# (admin_login.py); each expires one window (15 min) after its first failure.
ADMIN_LOGIN_FAILURES_PREFIX = "supervisor:admin-login-failures:"

TASK_REPLY_TTL_SECONDS = 120


@cache
def redis_client() -> redis.Redis:
    """The process's client, with short timeouts: a dead Redis must never hang a request."""
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2, health_check_interval=30
    )


# A forked child must not share the parent's pooled connections: it makes its own client.
os.register_at_fork(after_in_child=redis_client.cache_clear)


def take(key: str) -> bytes | None:
    """Read and delete `key` in one step (GETDEL): a request is seen by one reader only."""
    value: Any = redis_client().getdel(key)
    return value


def get_json(key: str) -> Any:
    """The JSON value stored at `key`, or None when absent or not JSON."""
    raw: Any = redis_client().get(key)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def set_json(key: str, value: Any) -> None:
    redis_client().set(key, json.dumps(value))


def read_hash(key: str) -> dict[str, str]:
    """Every field of the hash at `key`, decoded; empty when absent."""
    return decode_hash(redis_client().hgetall(key))


def decode_hash(stored: Any) -> dict[str, str]:
    """A hash as a pipeline returns it (bytes to bytes), decoded."""
    return {k.decode(): v.decode() for k, v in stored.items()}


def lock(key: str, *, timeout: float, blocking: bool = True, blocking_timeout: float | None = None) -> Lock:
    """A Redis lock that expires after `timeout` seconds unless renewed (`lock.reacquire()`).
    Its token is not thread-local, so a helper thread can renew what its caller holds."""
    return redis_client().lock(
        key, timeout=timeout, blocking=blocking, blocking_timeout=blocking_timeout, thread_local=False
    )


def count_in_window(key: str, *, window_seconds: int) -> tuple[int, int]:
    """Count one more event at `key` in a window that starts at the key's first event and
    lasts `window_seconds`. Returns the count so far (this one included) and the milliseconds
    until the window ends. One round trip, atomic (MULTI/EXEC), so concurrent requests in
    several processes each get their own count."""
    with redis_client().pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, window_seconds, nx=True)
        pipe.pttl(key)
        count, _, remaining_ms = pipe.execute()
    return int(count), int(remaining_ms)


def longest_wait_at_limit(keys: list[str], *, limit: int) -> int:
    """Of the counters at `keys` (count_in_window's) that reached `limit`, the milliseconds
    until the last of their windows ends; 0 when none did."""
    with redis_client().pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.get(key)
            pipe.pttl(key)
        answers = pipe.execute()
    waits = [int(ttl) for count, ttl in zip(answers[::2], answers[1::2], strict=True)
             if count is not None and int(count) >= limit]  # fmt: skip
    return max(waits, default=0)


def new_reply_key() -> str:
    """A fresh key on which a task can answer the request that queued it."""
    return TASK_REPLY_PREFIX + secrets.token_hex(16)


def send_reply(reply_key: str, reply: dict[str, Any]) -> None:
    """Push a task's early answer; one nobody collects (the view gave up) expires by itself."""
    with redis_client().pipeline() as pipe:
        pipe.rpush(reply_key, json.dumps(reply))
        pipe.expire(reply_key, TASK_REPLY_TTL_SECONDS)
        pipe.execute()


def wait_for_reply(reply_key: str, *, timeout: float) -> dict[str, Any] | None:
    """The task's reply, or None when none came within `timeout` seconds.

    Some actions answer before their task ends: a reboot answers 202 once every update lock is
    held, then goes on to stop the apps (whose containers may include the caller).
    """
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
