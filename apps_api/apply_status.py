"""Apply progress kept in Redis, where API reads are cheap: flags, per-service status and
download progress. It is a cache of what the apply loop is doing, not state to keep."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from apps_api.redis_store import (
    APPLY_FLAGS_KEY,
    APPLY_LOCK_KEY,
    APPLY_REQUEST_KEY,
    APPLY_RETRY_AT_KEY,
    IMAGE_PROGRESS_KEY,
    SERVICE_STATUS_KEY,
    TARGET_VERSION_KEY,
    decode_hash,
    read_hash,
    redis_client,
)

FLAG_NAMES = ("applying", "update_pending", "update_failed", "update_downloaded")


def set_flags(**flags: bool | str) -> None:
    redis_client().hset(APPLY_FLAGS_KEY, mapping={k: json.dumps(v) for k, v in flags.items()})


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
    redis_client().delete(SERVICE_STATUS_KEY, IMAGE_PROGRESS_KEY, APPLY_FLAGS_KEY, APPLY_RETRY_AT_KEY)


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
    if status is None:
        redis_client().hdel(SERVICE_STATUS_KEY, service_key(app_id, service_name))
    else:
        redis_client().hset(SERVICE_STATUS_KEY, service_key(app_id, service_name), status)


def read_service_statuses() -> dict[str, str]:
    return read_hash(SERVICE_STATUS_KEY)


def set_image_progress(reference: str, percent: int | None) -> None:
    if percent is None:
        redis_client().hdel(IMAGE_PROGRESS_KEY, reference)
    else:
        redis_client().hset(IMAGE_PROGRESS_KEY, reference, str(percent))


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
    flags, statuses, progress, applying, version = pipe.execute()
    return (
        frozenset(flags.items()),
        frozenset(statuses.items()),
        frozenset(progress.items()),
        applying,
        version,
    )


def progress_from(raw: RawProgress) -> ApplyProgress:
    stored_flags, statuses, progress, applying, version = raw
    return ApplyProgress(
        flags=_flags(decode_hash(dict(stored_flags))),
        service_statuses=decode_hash(dict(statuses)),
        image_progress={k: int(v) for k, v in decode_hash(dict(progress)).items()},
        applying=bool(applying),
        target_version=int(version or 0),
    )


def bump_target_version() -> None:
    """A new target was stored: readers re-read it."""
    redis_client().incr(TARGET_VERSION_KEY)
