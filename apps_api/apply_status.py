"""Apply progress kept in Redis, where API reads are cheap: flags, per-service status and
download progress. It is a cache of what the apply loop is doing, not state to keep."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

APPLY_FLAGS_KEY = "supervisor:apply:flags"
SERVICE_STATUS_KEY = "supervisor:apply:service-status"
IMAGE_PROGRESS_KEY = "supervisor:apply:image-progress"
FLAG_NAMES = ("applying", "update_pending", "update_failed", "update_downloaded")


def _redis():  # type: ignore[no-untyped-def]
    from supervisor_site.redis_connection import redis_client

    return redis_client()


def set_flags(**flags: bool | str) -> None:
    _redis().hset(APPLY_FLAGS_KEY, mapping={k: json.dumps(v) for k, v in flags.items()})


def read_flags() -> dict[str, Any]:
    stored = _redis().hgetall(APPLY_FLAGS_KEY)
    flags: dict[str, Any] = dict.fromkeys(FLAG_NAMES, False)
    flags.update({k.decode(): json.loads(v) for k, v in stored.items()})
    return flags


def service_key(app_id: int, service_name: str) -> str:
    return f"{app_id}/{service_name}"


def set_service_status(app_id: int, service_name: str, status: str | None) -> None:
    """A volatile status (Downloading, Installing, Stopping…); None clears it."""
    if status is None:
        _redis().hdel(SERVICE_STATUS_KEY, service_key(app_id, service_name))
    else:
        _redis().hset(SERVICE_STATUS_KEY, service_key(app_id, service_name), status)


def read_service_statuses() -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in _redis().hgetall(SERVICE_STATUS_KEY).items()}


def set_image_progress(reference: str, percent: int | None) -> None:
    if percent is None:
        _redis().hdel(IMAGE_PROGRESS_KEY, reference)
    else:
        _redis().hset(IMAGE_PROGRESS_KEY, reference, percent)


def read_image_progress() -> dict[str, int]:
    return {k.decode(): int(v) for k, v in _redis().hgetall(IMAGE_PROGRESS_KEY).items()}


TARGET_VERSION_KEY = "supervisor:target:version"


@dataclass(frozen=True)
class ApplyProgress:
    """Everything the API reads about the apply loop, fetched in one Redis round trip."""

    flags: dict[str, Any]
    service_statuses: dict[str, str]
    image_progress: dict[str, int]
    applying: bool
    target_version: int


def read_progress(applying_keys: tuple[str, ...]) -> ApplyProgress:
    """`applying_keys`: Redis keys whose existence means an apply is requested or running."""
    pipe = _redis().pipeline(transaction=False)
    pipe.hgetall(APPLY_FLAGS_KEY)
    pipe.hgetall(SERVICE_STATUS_KEY)
    pipe.hgetall(IMAGE_PROGRESS_KEY)
    pipe.exists(*applying_keys)
    pipe.get(TARGET_VERSION_KEY)
    stored_flags, statuses, progress, applying, version = pipe.execute()
    flags: dict[str, Any] = dict.fromkeys(FLAG_NAMES, False)
    flags.update({k.decode(): json.loads(v) for k, v in stored_flags.items()})
    return ApplyProgress(
        flags=flags,
        service_statuses={k.decode(): v.decode() for k, v in statuses.items()},
        image_progress={k.decode(): int(v) for k, v in progress.items()},
        applying=bool(applying),
        target_version=int(version or 0),
    )


def bump_target_version() -> None:
    """A new target was stored: readers re-read it."""
    _redis().incr(TARGET_VERSION_KEY)
