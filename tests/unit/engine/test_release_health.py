"""The verdict on a release on probation, situation by situation: wait, commit or roll back."""

from __future__ import annotations

import pytest

from apps_api.engine.release_health import (
    DEFAULT_HEALTH_WINDOW_SECONDS,
    DEFAULT_RESTART_LIMIT,
    ServiceHealth,
    Verdict,
    health_window_seconds,
    judge_release,
    label_problem,
    restart_limit,
)
from tests.unit.engine.state_builders import svc

WINDOW = 120.0


def healthy(name: str = "web", restarts: int = 0, limit: int = 3) -> ServiceHealth:
    return ServiceHealth(name, "healthy", restarts, limit)


def no_check(name: str = "worker", restarts: int = 0, limit: int = 3) -> ServiceHealth:
    return ServiceHealth(name, None, restarts, limit)


@pytest.mark.parametrize(
    ("situation", "services", "elapsed", "verdict"),
    [
        ("healthy services inside the window wait for it to end",
         [healthy(), no_check()], 30.0, Verdict("wait", recheck_in=90.0)),
        ("healthy services once the window ended commit",
         [healthy(), no_check()], 120.0, Verdict("commit")),
        ("services without a healthcheck that never restarted commit",
         [no_check("a"), no_check("b")], 200.0, Verdict("commit")),
        ("a release with no containers to judge commits",
         [], 120.0, Verdict("commit")),
        ("restarts up to the limit are allowed",
         [healthy(restarts=3)], 120.0, Verdict("commit")),
        ("one restart over the limit rolls back before the window ends",
         [healthy(), no_check(restarts=4)], 10.0,
         Verdict("rollback", "service 'worker' restarted 4 times within 120 s (limit 3)")),
        ("a limit of 0 allows no restart at all",
         [no_check(restarts=1, limit=0)], 1.0,
         Verdict("rollback", "service 'worker' restarted 1 times within 120 s (limit 0)")),
        ("an unhealthy service inside the window is given the rest of it",
         [ServiceHealth("web", "unhealthy", 0)], 60.0, Verdict("wait", recheck_in=60.0)),
        ("an unhealthy service once the window ended rolls back",
         [ServiceHealth("web", "unhealthy", 0), no_check()], 120.0,
         Verdict("rollback", "service 'web' is unhealthy after 120 s")),
        ("a healthcheck still starting when the window ended rolls back",
         [ServiceHealth("web", "starting", 0)], 121.0,
         Verdict("rollback", "service 'web' is starting after 120 s")),
        ("restarts are named before health",
         [ServiceHealth("a", "unhealthy", 0), no_check("b", restarts=9)], 120.0,
         Verdict("rollback", "service 'b' restarted 9 times within 120 s (limit 3)")),
        ("of two unhealthy services the first by name is named",
         [ServiceHealth("b", "unhealthy", 0), ServiceHealth("a", "unhealthy", 0)], 120.0,
         Verdict("rollback", "service 'a' is unhealthy after 120 s")),
    ],
)  # fmt: skip
def test_verdict(situation: str, services: list[ServiceHealth], elapsed: float, verdict: Verdict) -> None:
    assert judge_release(services, window=WINDOW, elapsed=elapsed) == verdict, situation


def test_window_is_the_longest_any_service_asks_for() -> None:
    services = [
        svc("a", labels={"io.balena.update.health-window": "5"}),
        svc("b", labels={"io.balena.update.health-window": "30"}),
        svc("c"),
    ]
    assert health_window_seconds(services) == 30


def test_window_defaults_to_two_minutes() -> None:
    assert health_window_seconds([svc("a"), svc("b")]) == DEFAULT_HEALTH_WINDOW_SECONDS == 120


def test_restart_limit_is_the_services_label_or_three() -> None:
    assert restart_limit(svc("a", labels={"io.balena.update.health-restarts": "0"})) == 0
    assert restart_limit(svc("a")) == DEFAULT_RESTART_LIMIT == 3


@pytest.mark.parametrize(
    ("label", "value", "problem"),
    [
        ("io.balena.update.health-window", "5", None),
        ("io.balena.update.health-window", "0", None),
        ("io.balena.update.health-window", "5s", "must be a whole number of seconds from 0 to 86400"),
        ("io.balena.update.health-window", "86401", "must be a whole number of seconds from 0 to 86400"),
        ("io.balena.update.health-restarts", "-1", "must be a whole number from 0 to 1000000"),
        ("io.balena.update.health-restarts", "\u00b2", "must be a whole number from 0 to 1000000"),
        ("io.balena.update.strategy", "anything", None),
    ],
)
def test_label_values(label: str, value: str, problem: str | None) -> None:
    assert label_problem(label, value) == problem
