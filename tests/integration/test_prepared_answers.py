"""The hot state reads served from prepared bodies answer exactly what the views compute
from scratch, for every route and key scope, and follow every change of the state."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import requests
from django.test import Client as DjangoViewClient
from rest_framework.renderers import JSONRenderer

from apps_api import apply_status, snapshot
from apps_api.api import answers
from apps_api.apikeys import ApiAccess, get_or_create_global_key, get_or_create_service_key
from apps_api.engine.current import read_current_state
from apps_api.redis_store import APPLY_LOCK_KEY, redis_client
from tests.agent_client import Client
from tests.integration.conftest import StartWeb, WebProcess
from tests.integration.engine_helpers import apply, local_target

pytestmark = pytest.mark.django_db(transaction=True)

ROUTES = ["/v1/device", "/v2/applications/state", "/v2/state/status", "/v2/version"]


def computed_now(route: str, access: ApiAccess) -> bytes:
    """The answer built from the stores directly, bypassing every cache of the read path."""
    fresh = snapshot._snapshot(apply_status.read_progress(), read_current_state())
    data: dict[str, Any] = {
        "/v1/device": lambda: answers.v1_device(fresh),
        "/v2/applications/state": lambda: answers.applications_state(fresh, access),
        "/v2/state/status": lambda: answers.state_status(fresh, access),
        "/v2/version": lambda: {"status": "success", "version": "17.0.0"},
    }[route]()
    return bytes(JSONRenderer().render(data))


def scopes() -> dict[str, tuple[dict[str, str], ApiAccess]]:
    global_key = get_or_create_global_key().key
    own, other = get_or_create_service_key(1, "main"), get_or_create_service_key(2, "elsewhere")
    return {
        "global": ({"HTTP_AUTHORIZATION": f"Bearer {global_key}"}, ApiAccess(all_apps=True)),
        "own app": (
            {"HTTP_AUTHORIZATION": f"Bearer {own}"},
            ApiAccess(all_apps=False, app_ids=frozenset({1})),
        ),
        "other app": ({"QUERY_STRING": f"apikey={other}"}, ApiAccess(all_apps=False, app_ids=frozenset({2}))),
    }


def test_every_route_and_scope_answers_what_the_views_compute(engine: str, managed_device: None) -> None:
    apply(local_target({"main": {}, "side": {}}, image=engine))
    for name, (auth, access) in scopes().items():
        for route in ROUTES:
            for attempt in ("cold", "warm"):
                response = Client().get(route, **auth)
                assert response.status_code == 200, (name, route)
                assert response["Content-Type"] == "application/json"
                assert response.content == computed_now(route, access), (name, route, attempt)


def test_a_change_of_state_is_answered_at_once(engine: str) -> None:
    apply(local_target({"main": {}}, image=engine))
    before = Client().get("/v1/device").json()
    assert before["update_failed"] is False

    apply_status.set_flags(update_failed=True)
    try:
        assert Client().get("/v1/device").json()["update_failed"] is True
        assert Client().get("/v1/device").content == computed_now("/v1/device", ApiAccess(all_apps=True))
    finally:
        apply_status.set_flags(update_failed=False)
    apply_status.set_service_status(1, "main", "Stopping")
    try:
        state = Client().get("/v2/applications/state").json()
        assert state["testapp"]["services"]["main"]["status"] == "Stopping"
    finally:
        apply_status.set_service_status(1, "main", None)
    apply(local_target({"main": {}, "side": {}}, image=engine))
    assert sorted(Client().get("/v2/applications/state").json()["testapp"]["services"]) == ["main", "side"]


def test_an_apply_lock_that_expires_is_answered_at_once(engine: str) -> None:
    """A worker killed mid-apply leaves its lock to expire: nothing writes then, yet the
    answers must stop saying `applying` as soon as it is gone."""
    apply(local_target({"main": {}}, image=engine))
    assert Client().get("/v2/state/status").json()["appState"] == "applied"
    redis_client().set(APPLY_LOCK_KEY, "a dead worker's token", px=300)
    assert Client().get("/v2/state/status").json()["appState"] == "applying"
    deadline = time.monotonic() + 10
    while redis_client().exists(APPLY_LOCK_KEY) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Client().get("/v2/state/status").json()["appState"] == "applied"
    expected = computed_now("/v2/state/status", ApiAccess(all_apps=True))
    assert Client().get("/v2/state/status").content == expected


def test_a_regenerated_key_is_refused_at_once(engine: str, managed_device: None) -> None:
    old = get_or_create_global_key().key
    assert Client().get("/v2/version", HTTP_AUTHORIZATION=f"Bearer {old}").status_code == 200
    new = Client().post("/v1/regenerate-api-key", HTTP_AUTHORIZATION=f"Bearer {old}").content.decode()
    assert Client().get("/v2/version", HTTP_AUTHORIZATION=f"Bearer {old}").status_code == 401
    assert Client().get("/v2/version", HTTP_AUTHORIZATION=f"Bearer {new}").status_code == 200


def test_hot_reads_answered_before_django_are_the_views_answers(engine: str, managed_device: None) -> None:
    """The agent answers the hot reads with an accepted key before Django; the views,
    run here in the test process, answer what Django would: the same status, headers
    and body, refusals included (those the agent leaves to Django)."""
    apply(local_target({"main": {}, "side": {}}, image=engine))
    refused = {"no key": ({}, None), "unknown key": ({"HTTP_AUTHORIZATION": "Bearer 0123456789abcdef"}, None)}
    accepted = scopes()
    metrics = accepted["global"][0]
    before = request_counts(Client().get("/metrics", **metrics).content.decode(), "v1/device")
    for name, (auth, _) in {**accepted, **refused}.items():
        for route in ROUTES:
            view = DjangoViewClient().get(route, **auth)
            response = Client().get(route, **auth)
            assert (response.status_code, response.content) == (view.status_code, view.content), (name, route)
            for header in ("Content-Type", "Allow"):
                assert response[header] == view[header], (name, route, header)
            if response.status_code == 200:  # answered before Django, which sends no length
                assert response["Content-Length"] == str(len(view.content)), (name, route)
    after = request_counts(Client().get("/metrics", **metrics).content.decode(), "v1/device")
    assert {key: after[key] - before.get(key, 0.0) for key in after} == {
        ("GET", "200"): 3.0,
        ("GET", "401"): 2.0,
    }


def request_counts(metrics: str, route: str) -> dict[tuple[str, str], float]:
    """supervisor_http_requests_total of `route` by method and status, from /metrics."""
    pattern = re.compile(
        rf'supervisor_http_requests_total{{method="(\w+)",route="{route}",status="(\d+)"}} (\S+)'
    )
    return {
        (match[1], match[2]): float(match[3])
        for match in map(pattern.fullmatch, metrics.splitlines())
        if match
    }


def ping_counts(web: WebProcess) -> dict[str, float]:
    """supervisor_http_requests_total of /ping by method, from /metrics."""
    metrics = requests.get(web.base_url + "/metrics", timeout=10).text  # the short-circuit counts too
    counts = request_counts(metrics, "ping")
    return {method: counts.get((method, "200"), 0.0) for method in ("GET", "HEAD")}


@pytest.mark.django_db
def test_ping_answered_before_django_is_the_views_answer(start_web: StartWeb) -> None:
    web = start_web()
    # The view's own answer, computed in this process: the agent answers /ping before Django.
    view = DjangoViewClient().get("/ping")
    before = ping_counts(web)
    for method in ("GET", "HEAD"):
        for params in ({}, {"apikey": "not-a-key"}):
            response = requests.request(method, web.base_url + "/ping", params=params, timeout=10)
            assert response.status_code == view.status_code == 200
            assert response.content == (view.content if method == "GET" else b"")
            assert response.headers["Content-Type"] == view["Content-Type"]
            assert response.headers["Allow"] == view["Allow"]
    # Other methods are the view's business.
    refused = requests.post(web.base_url + "/ping", timeout=10)
    assert (refused.status_code, refused.text) == (405, 'Method "POST" not allowed.')
    after = ping_counts(web)
    assert {method: after[method] - before[method] for method in after} == {"GET": 2.0, "HEAD": 2.0}
