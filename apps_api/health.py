"""Health checks, one per dependency the supervisor cannot work without."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import connection

logger = logging.getLogger(__name__)


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def check_redis() -> None:
    from supervisor_site.redis_connection import redis_client

    redis_client().ping()


def check_docker() -> None:
    from apps_api.engine.docker import ping_engine

    ping_engine()


class Unhealthy(Exception):
    pass


def check_cloud() -> None:
    from apps_api.cloud_poll import cloud_health_problem

    if problem := cloud_health_problem():
        raise Unhealthy(problem)


HEALTH_CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "redis": check_redis,
    "docker": check_docker,
    "cloud": check_cloud,
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
