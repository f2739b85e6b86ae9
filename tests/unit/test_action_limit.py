"""The rate limit of disruptive API actions: the window's verdict, the limiter's counting and
its fail-open when Redis cannot count, and the Redis window itself."""

from __future__ import annotations

import logging

import pytest
from django.urls import resolve

from apps_api.action_limit import (
    DISRUPTIVE_ACTIONS,
    ActionLimiter,
    ActionRateLimited,
    is_disruptive,
    judge_window,
)
from apps_api.redis_store import ACTION_COUNT_PREFIX, count_in_window, redis_client


@pytest.mark.parametrize(
    ("count", "remaining_ms", "limit", "allowed", "retry_after"),
    [
        (1, 60_000, 6, True, 60),  # the window's first action
        (6, 1_500, 6, True, 2),  # the last one allowed; Retry-After rounds up
        (7, 42_001, 6, False, 43),  # the 7th in a minute
        (8, 1, 6, False, 1),  # a millisecond left is still a whole second to wait
        (2, 30_000, 1, False, 30),  # a limit of one
        (7, -1, 6, False, 60),  # a window without an end (cannot happen): a full window
    ],
)
def test_window_verdict(count: int, remaining_ms: int, limit: int, allowed: bool, retry_after: int) -> None:
    verdict = judge_window(count, remaining_ms, limit=limit)
    assert (verdict.allowed, verdict.retry_after) == (allowed, retry_after)


class FakeCounter:
    """Stands in for Redis where the test is about the limiter's own decisions."""

    def __init__(self, *, fail: bool = False) -> None:
        self.counts: dict[str, int] = {}
        self.fail = fail

    def __call__(self, key: str, *, window_seconds: int) -> tuple[int, int]:
        if self.fail:
            raise ConnectionError("Redis is down")
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key], 30_000


def test_the_seventh_action_of_a_holder_is_refused_and_another_holder_is_not() -> None:
    limiter = ActionLimiter(count=FakeCounter())
    for _ in range(6):
        limiter.take("service:1:main", limit=6)

    with pytest.raises(ActionRateLimited) as refused:
        limiter.take("service:1:main", limit=6)

    assert refused.value.retry_after == 30
    assert (
        str(refused.value) == "Too many disruptive actions with this key: at most 6 a minute; retry in 30 s"
    )
    limiter.take("global", limit=6)


def test_a_limit_of_zero_counts_nothing() -> None:
    counter = FakeCounter()
    limiter = ActionLimiter(count=counter)
    for _ in range(20):
        limiter.take("global", limit=0)
    assert counter.counts == {}


def test_without_redis_actions_go_ahead_and_the_outage_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counter = FakeCounter(fail=True)
    limiter = ActionLimiter(count=counter)
    with caplog.at_level(logging.WARNING, logger="apps_api.action_limit"):
        for _ in range(10):
            limiter.take("global", limit=1)
        counter.fail = False
        limiter.take("global", limit=1)

    assert [r.getMessage() for r in caplog.records] == [
        "disruptive API actions are not limited until Redis answers again: Redis is down",
        "disruptive API actions are rate limited again",
    ]


def test_the_redis_window_counts_per_key_and_ends_a_window_after_its_first_event(redis_server: str) -> None:
    first, second = ACTION_COUNT_PREFIX + "test:a", ACTION_COUNT_PREFIX + "test:b"
    redis_client().delete(first, second)

    counts = [count_in_window(first, window_seconds=60) for _ in range(3)]
    other = count_in_window(second, window_seconds=60)

    assert [count for count, _ in counts] == [1, 2, 3]
    assert all(0 < remaining <= 60_000 for _, remaining in counts)
    # Later events do not push the window's end back.
    assert counts[2][1] <= counts[0][1]
    assert other[0] == 1
    redis_client().delete(first, second)


def test_a_finished_window_starts_again_from_one(redis_server: str) -> None:
    key = ACTION_COUNT_PREFIX + "test:expired"
    count_in_window(key, window_seconds=60)
    count_in_window(key, window_seconds=60)
    redis_client().delete(key)  # what the window's expiry does

    assert count_in_window(key, window_seconds=60)[0] == 1
    redis_client().delete(key)


@pytest.mark.parametrize(("method", "route"), sorted(DISRUPTIVE_ACTIONS))
def test_every_limited_action_is_a_route_of_the_api(method: str, route: str) -> None:
    path = "/" + route.replace("<str:app_id>", "1")
    match = resolve(path)
    assert match.route == route
    assert hasattr(match.func.view_class, method.lower())  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("method", "route"),
    [
        ("POST", "v2/applications/<str:app_id>/start-service"),
        ("POST", "v1/apps/<str:app_id>/start"),
        ("POST", "v1/blink"),
        ("POST", "v1/update"),
        ("GET", "v1/device/host-config"),
        ("GET", "v1/reboot"),
    ],
)
def test_starting_blinking_updating_and_reads_are_not_limited(method: str, route: str) -> None:
    assert not is_disruptive(method, route)
