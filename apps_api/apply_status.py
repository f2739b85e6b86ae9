"""Apply progress kept in Redis, where API reads are cheap: flags, per-service status and
download progress. It is a cache of what the apply loop is doing, not state to keep."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apps_api.redis_store import (
    APPLY_FLAGS_KEY,
    APPLY_LOCK_KEY,
    APPLY_REQUEST_KEY,
    APPLY_RETRY_AT_KEY,
    IMAGE_PROGRESS_KEY,
    PROGRESS_VERSION_KEY,
    SERVICE_LAST_CHANGE_KEY,
    SERVICE_STATUS_KEY,
    TARGET_VERSION_KEY,
    Pipeline,
    decode_hash,
    read_hash,
    redis_client,
)

FLAG_NAMES = ("applying", "update_pending", "update_failed", "update_downloaded")


def changing_progress(write: Callable[[Pipeline], object]) -> None:
    """Run `write`'s commands and bump the progress version in one transaction: every
    write of what read_raw_progress reads goes through here (or note_progress_changed)."""
    pipe = redis_client().pipeline(transaction=True)
    write(pipe)
    pipe.incr(PROGRESS_VERSION_KEY)
    pipe.execute()


def note_progress_changed() -> None:
    """For writers whose command cannot join a transaction (a redis-py lock)."""
    redis_client().incr(PROGRESS_VERSION_KEY)


def read_progress_stamp() -> tuple[Any, Any]:
    """(progress version, apply lock token), in one round trip: while it reads the same,
    so does read_raw_progress (the lock's token also changes when the lock expires)."""
    values: Any = redis_client().mget(PROGRESS_VERSION_KEY, APPLY_LOCK_KEY)
    return values[0], values[1]


def set_flags(**flags: bool | str) -> None:
    changing_progress(
        lambda pipe: pipe.hset(APPLY_FLAGS_KEY, mapping={k: json.dumps(v) for k, v in flags.items()})
    )


def read_flags() -> dict[str, Any]:
    return _flags(read_hash(APPLY_FLAGS_KEY))


def _flags(stored: dict[str, str]) -> dict[str, Any]:
    """Every flag, False unless stored."""
    flags: dict[str, Any] = dict.fromkeys(FLAG_NAMES, False)
    flags.update({k: json.loads(v) for k, v in stored.items()})
    return flags


def forget_progress() -> None:
    """At worker start: what a killed worker was doing (Installing, Stopping, a download at
    40 %) is not happening any more, and flags kept in Redis may be another installation's.
    Statuses come from Docker and the target until the next apply says otherwise."""
    changing_progress(
        lambda pipe: pipe.delete(SERVICE_STATUS_KEY, IMAGE_PROGRESS_KEY, APPLY_FLAGS_KEY, APPLY_RETRY_AT_KEY)
    )


def set_retry_at(epoch_seconds: float | None) -> None:
    """The apply loop waits until then before retrying a failed round; None: not waiting."""
    if epoch_seconds is None:
        redis_client().delete(APPLY_RETRY_AT_KEY)
    else:
        ttl_ms = max(1, int((epoch_seconds - time.time()) * 1000))
        redis_client().set(APPLY_RETRY_AT_KEY, repr(epoch_seconds), px=ttl_ms)


def read_retry_at() -> float | None:
    """When the apply loop's wait after a failed round ends (epoch seconds), or None."""
    value: Any = redis_client().get(APPLY_RETRY_AT_KEY)
    return float(value) if value is not None else None


def service_key(app_id: int, service_name: str) -> str:
    return f"{app_id}/{service_name}"


def set_service_status(app_id: int, service_name: str, status: str | None) -> None:
    """A volatile status (Downloading, Installing, Stopping…); None clears it."""
    key = service_key(app_id, service_name)
    if status is None:
        changing_progress(lambda pipe: pipe.hdel(SERVICE_STATUS_KEY, key))
    else:
        changing_progress(lambda pipe: pipe.hset(SERVICE_STATUS_KEY, key, status))


def forget_service_statuses(prefix: str) -> None:
    """Clear every service status that begins with `prefix` (a reason a service waited for
    that no longer holds once the apply has converged)."""
    stale = [key for key, status in read_hash(SERVICE_STATUS_KEY).items() if status.startswith(prefix)]
    if stale:
        changing_progress(lambda pipe: pipe.hdel(SERVICE_STATUS_KEY, *stale))


def set_last_changes(changes: dict[str, dict[str, Any]]) -> None:
    """Each service's (by `service_key`) last change: {"at", "action", "reason"}."""
    if changes:
        mapping = {k: json.dumps(v, sort_keys=True) for k, v in changes.items()}
        changing_progress(lambda pipe: pipe.hset(SERVICE_LAST_CHANGE_KEY, mapping=mapping))


def has_last_changes() -> bool:
    return bool(redis_client().exists(SERVICE_LAST_CHANGE_KEY))


def read_service_statuses() -> dict[str, str]:
    return read_hash(SERVICE_STATUS_KEY)


def set_image_progress(reference: str, percent: int | None) -> None:
    if percent is None:
        changing_progress(lambda pipe: pipe.hdel(IMAGE_PROGRESS_KEY, reference))
    else:
        changing_progress(lambda pipe: pipe.hset(IMAGE_PROGRESS_KEY, reference, str(percent)))


def read_image_progress() -> dict[str, int]:
    return {k: int(v) for k, v in read_hash(IMAGE_PROGRESS_KEY).items()}


@dataclass(frozen=True)
class ApplyProgress:
    """Everything the API reads about the apply loop, fetched in one Redis round trip."""

    flags: dict[str, Any]
    service_statuses: dict[str, str]
    image_progress: dict[str, int]
    applying: bool
    target_version: int
    last_changes: dict[str, dict[str, Any]]
    """By `service_key`: the service's last change, {"at", "action", "reason"}."""


def read_progress() -> ApplyProgress:
    """The apply loop's progress; `applying` while an apply is requested or running."""
    return progress_from(read_raw_progress())


RawProgress = tuple[Any, ...]
"""What Redis answered, hashable: equal readings mean equal progress."""


def read_raw_progress() -> RawProgress:
    """The progress as Redis holds it, in one round trip."""
    pipe = redis_client().pipeline(transaction=False)
    pipe.hgetall(APPLY_FLAGS_KEY)
    pipe.hgetall(SERVICE_STATUS_KEY)
    pipe.hgetall(IMAGE_PROGRESS_KEY)
    pipe.exists(APPLY_REQUEST_KEY, APPLY_LOCK_KEY)
    pipe.get(TARGET_VERSION_KEY)
    pipe.hgetall(SERVICE_LAST_CHANGE_KEY)
    flags, statuses, progress, applying, version, last_changes = pipe.execute()
    return (
        frozenset(flags.items()),
        frozenset(statuses.items()),
        frozenset(progress.items()),
        applying,
        version,
        frozenset(last_changes.items()),
    )


def progress_from(raw: RawProgress) -> ApplyProgress:
    stored_flags, statuses, progress, applying, version, last_changes = raw
    return ApplyProgress(
        flags=_flags(decode_hash(dict(stored_flags))),
        service_statuses=decode_hash(dict(statuses)),
        image_progress={k: int(v) for k, v in decode_hash(dict(progress)).items()},
        applying=bool(applying),
        target_version=int(version or 0),
        last_changes={k: json.loads(v) for k, v in decode_hash(dict(last_changes)).items()},
    )


def bump_target_version() -> None:
    """A new target was stored: readers re-read it."""
    changing_progress(lambda pipe: pipe.incr(TARGET_VERSION_KEY))
