"""Service status as the API reports it, from containers, target and apply progress."""

from __future__ import annotations

import dataclasses

from apps_api.engine.state import CurrentState
from apps_api.engine.status import service_statuses
from tests.unit.engine.state_builders import app, container, settled, svc


def statuses(current: CurrentState, target, volatile=None, progress=None) -> dict[str, tuple]:  # type: ignore[no-untyped-def]
    result = service_statuses(current, target, volatile=volatile or {}, image_progress=progress or {})
    return {s.service_name: (s.status, s.download_progress) for s in result}


def test_running_container_is_running() -> None:
    target = app(svc("a"))
    assert statuses(settled(target), [target]) == {"a": ("Running", None)}


def test_docker_words_are_mapped() -> None:
    target = app(svc("a"), svc("b"), svc("c"))
    current = settled(target, services=(container(target, target.services[0], status="created"),
                                        container(target, target.services[1], status="dead"),
                                        container(target, target.services[2], status="exited")))  # fmt: skip
    assert statuses(current, [target]) == {
        "a": ("Installed", None),
        "b": ("Dead", None),
        "c": ("exited", None),
    }


def test_service_without_container_or_image_is_downloading_from_zero() -> None:
    target = app(svc("a"))
    assert statuses(CurrentState(), [target]) == {"a": ("Downloading", 0)}


def test_download_progress_is_reported_while_downloading() -> None:
    target = app(svc("a"))
    assert statuses(CurrentState(), [target], progress={"img-a:latest": 42}) == {"a": ("Downloading", 42)}


def test_image_present_without_container_is_downloaded() -> None:
    target = app(svc("a"))
    current = settled(target, services=())
    assert statuses(current, [target]) == {"a": ("Downloaded", None)}


def test_a_running_step_overrides_the_container_state() -> None:
    target = app(svc("a"))
    assert statuses(settled(target), [target], volatile={"1/a": "Stopping"}) == {"a": ("Stopping", None)}


def test_hand_over_shows_the_new_container_awaiting_it() -> None:
    target = app(svc("a"))
    old = dataclasses.replace(
        container(target, target.services[0], created="1"), container_name="old_a_10_1_c1"
    )
    new = container(target, target.services[0], created="2")
    assert statuses(settled(target, services=(old, new)), [target]) == {"a": ("Awaiting handover", None)}


def test_container_of_a_service_leaving_the_target_is_still_listed() -> None:
    old = app(svc("a"), svc("b"))
    new = app(svc("a"))
    assert statuses(settled(old), [new], volatile={"1/b": "Stopping"}) == {
        "a": ("Running", None),
        "b": ("Stopping", None),
    }
