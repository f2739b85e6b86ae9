"""The planner's explanations: for every step it holds back, what holds it.

`explain` must never change the steps `plan` returns (the engine runs those); it only
adds the held-back steps next to them.
"""

from __future__ import annotations

import dataclasses

import pytest

from apps_api.engine.planner import PlanConfig, explain, plan
from apps_api.engine.state import AppSpec, CurrentState, normalise_image_ref
from tests.unit.engine.state_builders import (
    CONFIG,
    DEVICE,
    app,
    container,
    network,
    settled,
    svc,
    with_images,
)


def updated(target: AppSpec, **fields) -> AppSpec:
    """`target` with its services' environment changed (a change that recreates them)."""
    return dataclasses.replace(
        target,
        services=tuple(dataclasses.replace(s, environment={"V": "2"}, **fields) for s in target.services),
    )


OLD = app(svc("main"))
NEW = updated(OLD)
REBOOTING = app(svc("main", labels={"io.balena.update.requires-reboot": "1"}))


@pytest.mark.parametrize(
    ("situation", "current", "target", "kwargs", "expected"),
    [
        (
            "update held by the user lock of the service itself",
            settled(OLD),
            NEW,
            {"locks_held": (), "lock_holders": {1: ["main"]}},
            [("kill", "main", "lock", "main")],
        ),
        (
            "update of one service held by another service's lock",
            settled(app(svc("main"), svc("side"))),
            app(svc("main", environment={"V": "2"}), svc("side")),
            {"locks_held": (), "lock_holders": {1: ["side"]}},
            [("kill", "main", "lock", "side")],
        ),
        (
            "update waiting only for the engine's own takeLock",
            settled(OLD),
            NEW,
            {"locks_held": ()},
            [("kill", "main", "lock", "")],
        ),
        (
            "app removed from the target, its kill held by a user lock",
            settled(OLD),
            None,
            {"locks_held": (), "lock_holders": {1: ["main"]}},
            [("kill", "main", "lock", "main")],
        ),
        (
            "fresh start waiting for its image being downloaded",
            CurrentState(networks=(network(OLD),), downloading=frozenset({"img-main:latest"})),
            OLD,
            {"locks_held": ()},
            [("start", "main", "download", "img-main:latest")],
        ),
        (
            "fresh start waiting for the fetch of this round",
            CurrentState(networks=(network(OLD),)),
            OLD,
            {"locks_held": ()},
            [("start", "main", "download", "img-main:latest")],
        ),
        (
            "download-then-kill waiting for the new image",
            settled(OLD),
            updated(OLD, image="img-new"),
            {"locks_held": (1,)},
            [("kill", "main", "download", "img-new:latest")],
        ),
        (
            "download-then-kill waiting for another service's image",
            settled(app(svc("a"), svc("b"))),
            app(svc("a", environment={"V": "2"}), svc("b", image="img-b2")),
            {"locks_held": (1,)},
            [("kill", "a", "download", "img-b2:latest"), ("kill", "b", "download", "img-b2:latest")],
        ),
        (
            "start waiting for the service it depends on",
            CurrentState(networks=(network(OLD),), images=with_images("img-db", "img-web")),
            app(svc("db"), svc("web", depends_on=("db",))),
            {"locks_held": ()},
            [("start", "web", "dependency", "db")],
        ),
        (
            "start waiting for its network",
            CurrentState(images=with_images("img-main")),
            OLD,
            {"locks_held": ()},
            [("start", "main", "dependency", "network default")],
        ),
        (
            "installed service waiting for the reboot it requires",
            settled(REBOOTING, services=(container(REBOOTING, REBOOTING.services[0], status="created"),)),
            REBOOTING,
            {"locks_held": (), "config": PlanConfig(DEVICE, reboot_pending=True)},
            [("start", "main", "reboot", "")],
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_what_holds_each_held_back_step(
    situation: str, current: CurrentState, target: AppSpec | None, kwargs: dict, expected: list
) -> None:
    targets = [target] if target is not None else []
    config, locks_held = kwargs.get("config", CONFIG), kwargs["locks_held"]
    explained = explain(current, targets, config=config, locks_held=locks_held,
                        lock_holders=kwargs.get("lock_holders"))  # fmt: skip
    got = sorted((h.kind, h.service_name, h.cause, h.held_by) for h in explained.held)
    assert got == sorted(expected), situation
    assert explained.steps == plan(current, targets, config=config, locks_held=locks_held), "plan's steps"


def test_a_backoff_holds_the_whole_next_round_until_it_ends() -> None:
    until = "2026-12-01T17:00:00Z"
    explained = explain(settled(OLD), [NEW], locks_held=(), config=CONFIG, backoff_until=until,
                        lock_holders={1: ["main"]})  # fmt: skip
    assert explained.steps == []
    assert [(h.kind, h.cause, h.until) for h in explained.held if h.cause == "backoff"] == [
        ("takeLock", "backoff", until)
    ]
    assert [(h.kind, h.held_by) for h in explained.held if h.cause == "lock"] == [("kill", "main")]


def test_a_settled_app_holds_nothing_back() -> None:
    assert explain(settled(OLD), [OLD], locks_held=(), config=CONFIG) == explain(
        settled(OLD), [OLD], locks_held=(), config=CONFIG, backoff_until=""
    )
    assert explain(settled(OLD), [OLD], locks_held=(), config=CONFIG).held == []


def test_held_image_references_are_normalised_like_the_fetch() -> None:
    target = app(svc("main", image="docker.io/library/busybox"))
    explained = explain(CurrentState(networks=(network(target),)), [target], locks_held=(), config=CONFIG)
    assert [h.held_by for h in explained.held] == [normalise_image_ref("busybox")]
