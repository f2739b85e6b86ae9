"""What each step announces in the logs: the container a step acts on is named with its own
image (a kill of the old release's container names the old image, not the new one)."""

from __future__ import annotations

from apps_api.apply.journal import STEP_MESSAGES, _describe
from apps_api.engine.state import Step
from tests.unit.engine.state_builders import app, container, svc

OLD = svc(image="registry.example/app/main:v1", commit="c1")
NEW = svc(image="registry.example/app/main:v2", commit="c2")
APP = app(OLD)


def line(step: Step) -> str:
    return STEP_MESSAGES[step.kind][0].format(**_describe(step))


def test_a_kill_for_an_update_names_the_image_of_the_container_it_kills() -> None:
    step = Step("kill", app_id=1, current=container(APP, OLD), target=NEW, then_start=True)
    assert line(step) == "Killing service 'main registry.example/app/main:v1'"


def test_a_stop_and_a_removal_name_the_containers_own_image() -> None:
    for kind in ("stop", "remove"):
        step = Step(kind, app_id=1, current=container(APP, OLD), target=NEW)
        assert "registry.example/app/main:v1" in line(step)


def test_an_install_names_the_new_image() -> None:
    step = Step("start", app_id=1, current=container(APP, OLD), target=NEW)
    assert line(step) == "Installing service 'main registry.example/app/main:v2'"


def test_a_container_no_target_names_is_named_with_its_own_image() -> None:
    step = Step("kill", app_id=1, current=container(APP, OLD))
    assert line(step) == "Killing service 'main registry.example/app/main:v1'"
