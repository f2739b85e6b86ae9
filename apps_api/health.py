"""Health checks, one per dependency the supervisor cannot work without."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from django.db import connection

from apps_api.apply.refusals import given_up_removals
from apps_api.apply_status import read_image_progress
from apps_api.cloud.client import cloud_device
from apps_api.cloud.poll import cloud_health_problem
from apps_api.device_settings import poll_interval_seconds
from apps_api.engine.docker import list_supervised_networks, ping_engine
from apps_api.redis_store import (
    APPLY_DOWNLOAD_SECONDS_KEY,
    APPLY_STARTED_KEY,
    SCHEDULER_TICK_KEY,
    redis_client,
)
from apps_api.watched_threads import thread_problems

logger = logging.getLogger(__name__)


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def check_redis() -> None:
    redis_client().ping()


def check_docker() -> None:
    ping_engine()


class Unhealthy(Exception):
    pass


# The scheduler ticks every 5 s; a minute without a tick means it (or the worker) is gone.
SCHEDULER_SILENCE_SECONDS = 60


def scheduler_ran() -> None:
    """The beat scheduler is alive (called by each cloud tick, and when the scheduler starts)."""
    redis_client().set(SCHEDULER_TICK_KEY, time.time())


def check_scheduler(*, now: float | None = None) -> None:
    """Once a scheduler has run, it must keep running: it drives every poll and report."""
    last: Any = redis_client().get(SCHEDULER_TICK_KEY)
    if last is None:
        return
    silent = (time.time() if now is None else now) - float(last)
    if silent > SCHEDULER_SILENCE_SECONDS:
        raise Unhealthy(f"the scheduler has not run for {silent:.0f} s")


def check_cloud() -> None:
    if problem := cloud_health_problem():
        raise Unhealthy(problem)


def check_engine_progress(*, now: float | None = None) -> None:
    """A managed device whose apply has run, downloads aside, for more than twice the poll
    interval is stuck (docs/operations.md "Health")."""

    if cloud_device() is None:
        return
    values: Any = redis_client().mget([APPLY_STARTED_KEY, APPLY_DOWNLOAD_SECONDS_KEY])
    started, downloading = values
    if started is None or read_image_progress():
        return
    busy = (time.time() if now is None else now) - float(started) - float(downloading or 0)
    if busy > 2 * poll_interval_seconds():
        raise Unhealthy(f"the apply has been running for {busy:.0f} s")


def check_refused_removals() -> None:
    """The engine refuses to remove a network the apply has given up on (apply/refusals.py)."""
    # Those the user has removed by hand since are forgotten (a Docker listing only then).
    if given_up_removals() and (refused := given_up_removals(n["Name"] for n in list_supervised_networks())):
        raise Unhealthy("; ".join(f"the engine refuses to remove network {name}: {error}"
                                  for name, error in sorted(refused.items())))  # fmt: skip


def check_threads() -> None:
    """Every watched thread of this process runs (docs/architecture.md "Threads")."""
    if problems := thread_problems():
        raise Unhealthy("; ".join(f"thread {name} {problem}" for name, problem in sorted(problems.items())))


HEALTH_CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "redis": check_redis,
    "docker": check_docker,
    "cloud": check_cloud,
    "engine": check_engine_progress,
    "scheduler": check_scheduler,
    "threads": check_threads,
    "networks": check_refused_removals,
}


def failed_health_checks() -> dict[str, str]:
    """Name of each failing dependency -> why it failed; empty when all are healthy."""
    failures: dict[str, str] = {}
    for name, check in HEALTH_CHECKS.items():
        try:
            check()
        except Exception as exc:  # whatever a dependency raises, it is unhealthy
            logger.warning("health check %s failed: %s", name, exc)
            failures[name] = str(exc) or type(exc).__name__
    return failures
