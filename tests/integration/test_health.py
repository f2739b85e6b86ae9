"""/v1/healthy's checks that need only Redis."""

from __future__ import annotations

import time

import pytest

from apps_api.health import Unhealthy, check_scheduler, scheduler_ran
from apps_api.redis_store import SCHEDULER_TICK_KEY, redis_client


def test_a_scheduler_that_stopped_ticking_makes_the_device_unhealthy(redis_server: str) -> None:
    redis_client().delete(SCHEDULER_TICK_KEY)
    check_scheduler()  # no scheduler has run here (a worker without one): nothing to expect
    scheduler_ran()
    check_scheduler()
    try:
        with pytest.raises(Unhealthy, match=r"the scheduler has not run for 9[0-9] s"):
            check_scheduler(now=time.time() + 90)
    finally:
        redis_client().delete(SCHEDULER_TICK_KEY)
