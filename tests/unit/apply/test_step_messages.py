"""What each step announces in the logs: the container a step acts on is named with its own
image (a kill of the old release's container names the old image, not the new one)."""

from __future__ import annotations

import pytest

from apps_api.apply.journal import _describe, done_lines, step_text
from apps_api.apply.loop import compact_duration
from apps_api.engine.state import Step
from tests.unit.engine.state_builders import app, container, svc

OLD = svc(image="registry.example/app/main:v1", commit="c1")
NEW = svc(image="registry.example/app/main:v2", commit="c2")
APP = app(OLD)


def line(step: Step) -> str:
    text = step_text(step)
    assert text is not None
    return text.starting.format(**_describe(step))


def test_a_kill_for_an_update_names_the_image_of_the_container_it_kills() -> None:
    step = Step("kill", app_id=1, current=container(APP, OLD), target=NEW, then_start=True)
    assert line(step) == "Killing service 'main registry.example/app/main:v1'"


def test_a_stop_and_a_removal_name_the_containers_own_image() -> None:
    for kind in ("stop", "remove"):
        step = Step(kind, app_id=1, current=container(APP, OLD), target=NEW)
        assert "registry.example/app/main:v1" in line(step)


def test_an_install_names_the_new_image() -> None:
    step = Step("start", app_id=1, target=NEW, app=APP)
    assert line(step) == "Installing service 'main registry.example/app/main:v2'"


def test_a_container_no_target_names_is_named_with_its_own_image() -> None:
    step = Step("kill", app_id=1, current=container(APP, OLD))
    assert line(step) == "Killing service 'main registry.example/app/main:v1'"


def test_a_created_container_that_starts_is_installed_then_started() -> None:
    step = Step("start", app_id=1, target=NEW, app=APP)
    assert line(step) == "Installing service 'main registry.example/app/main:v2'"
    assert done_lines(step) == [
        "Installed service 'main registry.example/app/main:v2'",
        "Started service 'main registry.example/app/main:v2'",
    ]


def test_a_created_container_that_is_not_to_run_is_only_installed() -> None:
    step = Step("start", app_id=1, target=svc(image="app:v2", running=False), app=APP)
    assert done_lines(step) == ["Installed service 'main app:v2'"]


def test_an_existing_container_is_started_and_a_stop_is_said_as_the_original_kills() -> None:
    start = Step("start", app_id=1, current=container(APP, OLD), target=OLD)
    assert line(start) == "Starting service 'main registry.example/app/main:v1'"
    assert done_lines(start) == ["Started service 'main registry.example/app/main:v1'"]
    stop = Step("stop", app_id=1, current=container(APP, OLD), target=OLD)
    assert line(stop) == "Killing service 'main registry.example/app/main:v1'"


def test_steps_the_original_says_nothing_of_when_done_say_nothing() -> None:
    for kind in ("createNetwork", "createVolume", "takeLock", "remove"):
        assert done_lines(Step(kind, app_id=1, current=container(APP, OLD))) == []


@pytest.mark.parametrize(
    ("seconds", "said"), [(0.25, "250ms"), (12.7, "12s"), (90, "1m"), (7200, "2h"), (3 * 86400 + 5, "3d")]
)
def test_retry_delays_are_said_in_the_originals_compact_form(seconds: float, said: str) -> None:
    assert compact_duration(seconds) == said
