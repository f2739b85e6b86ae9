"""Why a container is replaced, as the planner tells it: the reason names what changed
(environment keys, never their values; the image; config fields), and the same parts go
to the journal as its structured cause."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from apps_api.engine.causes import Cause, api_cause, crash_cause, lock_override_cause
from apps_api.engine.planner import plan
from apps_api.engine.state import ServiceSpec, Step
from tests.unit.engine.state_builders import CONFIG, app, settled, svc, with_images

SECRET = "s3cr3t-value"


def replacement(old: ServiceSpec, new: ServiceSpec, **current: Any) -> Step:
    """The one kill step that replaces `old`'s container for `new` (lock held)."""
    state = dataclasses.replace(settled(app(old)), **current)
    steps = plan(state, [app(new)], locks_held={1}, config=CONFIG)
    assert [s.kind for s in steps] == ["kill"], steps
    return steps[0]


CASES = [
    pytest.param(
        svc(environment={"TOKEN": SECRET}), svc(environment={"TOKEN": SECRET + "2"}),
        "env changed: TOKEN (changed)",
        {"type": "update", "env": {"added": [], "removed": [], "changed": ["TOKEN"]}},
        id="env_value_changed_names_the_key",
    ),
    pytest.param(
        svc(environment={"A": "1"}), svc(environment={"A": "1", "B": SECRET}),
        "env changed: B (added)",
        {"type": "update", "env": {"added": ["B"], "removed": [], "changed": []}},
        id="env_key_added",
    ),
    pytest.param(
        svc(environment={"A": "1", "GONE": SECRET}), svc(environment={"A": "2"}),
        "env changed: A (changed), GONE (removed)",
        {"type": "update", "env": {"added": [], "removed": ["GONE"], "changed": ["A"]}},
        id="env_key_removed_and_another_changed",
    ),
    pytest.param(
        svc(), svc(composition={"privileged": True}),
        "config changed: privileged",
        {"type": "update", "config": ["privileged"]},
        id="host_config_field",
    ),
    pytest.param(
        svc(), svc(composition={"command": ["sleep", "1"], "restart": "no"}),
        "config changed: command, restart_policy",
        {"type": "update", "config": ["command", "restart_policy"]},
        id="create_and_host_config_fields_by_docker_name",
    ),
    pytest.param(
        svc(), svc(labels={"com.example.tier": "front"}),
        "config changed: label com.example.tier",
        {"type": "update", "config": ["label com.example.tier"]},
        id="label_added",
    ),
    pytest.param(
        svc(environment={"X": "1"}), svc(environment={"X": "2"}, composition={"privileged": True}),
        "env changed: X (changed); config changed: privileged",
        {"type": "update", "env": {"added": [], "removed": [], "changed": ["X"]}, "config": ["privileged"]},
        id="env_and_config_together",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "reason", "cause"), CASES)
def test_replacement_reason_names_what_changed(
    old: ServiceSpec, new: ServiceSpec, reason: str, cause: dict[str, Any]
) -> None:
    step = replacement(old, new)
    assert step.reason == reason
    assert step.cause is not None
    assert step.cause.as_json() == cause
    assert SECRET not in repr(step.cause)
    assert SECRET not in step.reason


def test_new_image_names_the_old_and_new_reference() -> None:
    step = replacement(
        svc(image="repo/a:v1"), svc(image="repo/a:v2"), images=with_images("repo/a:v1", "repo/a:v2")
    )
    assert step.reason == "image changed: repo/a:v1 → repo/a:v2"
    assert step.cause is not None
    assert step.cause.as_json() == {"type": "update", "image": {"from": "repo/a:v1", "to": "repo/a:v2"}}


def test_kill_then_download_names_the_image_before_it_is_fetched() -> None:
    old = svc(image="repo/a:v1", strategy="kill-then-download")
    new = svc(image="repo/a:v2", strategy="kill-then-download")
    assert replacement(old, new).reason == "image changed: repo/a:v1 → repo/a:v2"


def test_container_that_does_not_say_what_it_was_created_with_is_a_configuration_change() -> None:
    # Containers made before the per-part label existed, or adopted ones.
    old, new = svc(environment={"X": "1"}), svc(environment={"X": "2"})
    state = settled(app(old))
    unlabelled = dataclasses.replace(state.services[0], config_parts="")
    step = replacement(old, new, services=(unlabelled,))
    assert step.reason == "configuration changed"
    assert step.cause is not None
    assert step.cause.as_json() == {"type": "update", "configUnknown": True}


@pytest.mark.parametrize(
    ("cause", "text", "json"),
    [
        (api_cause("POST /v2/applications/1/restart-service", all_apps=True, app_ids=frozenset()),
         "API call: POST /v2/applications/1/restart-service by global key",
         {"type": "api", "route": "POST /v2/applications/1/restart-service", "scope": "global key"}),
        (api_cause("POST /v1/restart", all_apps=False, app_ids=frozenset({1})),
         "API call: POST /v1/restart by key scoped to app 1",
         {"type": "api", "route": "POST /v1/restart", "scope": "key scoped to app 1"}),
        (api_cause("POST /v1/purge", all_apps=False, app_ids=frozenset({2, 1})),
         "API call: POST /v1/purge by key scoped to apps 1, 2",
         {"type": "api", "route": "POST /v1/purge", "scope": "key scoped to apps 1, 2"}),
        (crash_cause(3), "crash: exit code 3", {"type": "crash", "exitCode": 3}),
        (lock_override_cause(("main",)), "lock override: user locks of main removed",
         {"type": "lockOverride", "services": ["main"]}),
    ],
)  # fmt: skip
def test_causes_outside_the_planner(cause: Cause, text: str, json: dict[str, Any]) -> None:
    assert (cause.text, cause.as_json()) == (text, json)
