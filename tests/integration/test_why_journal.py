"""Why did it restart? Real engine, real worker, the device API: every recreate, restart,
stop, crash and lock override is journaled with its cause, GET /v2/journal pages through
it in the key's scope, and each service in /v2/applications/state carries its last change."""

from __future__ import annotations

import json
from typing import Any

import pytest

from apps_api import apply_status
from apps_api.apikeys import get_or_create_global_key, get_or_create_service_key
from apps_api.engine.causes import crash_cause
from apps_api.redis_store import SERVICE_LAST_CHANGE_KEY, redis_client
from apps_api.service_changes import record, restore_last_changes
from supervisor_site.system_services import wait_until
from tests.agent_client import Client
from tests.integration.conftest import WebProcess, lock_dir
from tests.integration.engine_helpers import apply, local_target, supervised_containers

pytestmark = pytest.mark.django_db(transaction=True)


def post(path: str, body: dict | None = None, **headers: str):  # type: ignore[no-untyped-def]
    return Client().post(path, json.dumps(body or {}), content_type="application/json", **headers)


def journal(query: str = "", **headers: str) -> dict[str, Any]:
    response = Client().get(f"/v2/journal{query}", **headers)
    assert response.status_code == 200, response.content
    return dict(response.json())


def entries_of(service: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in body["entries"] if e["serviceName"] == service]


def test_changing_one_env_var_journals_its_name_and_never_its_value(
    engine: str, shared_web: WebProcess
) -> None:
    environment = {"GREETING": "hi", "API_TOKEN": "first-secret-value"}
    apply(local_target({"main": {"environment": environment}}, image=engine))
    apply(
        local_target(
            {"main": {"environment": {**environment, "API_TOKEN": "second-secret-value"}}}, image=engine
        )
    )
    assert "API_TOKEN=second-secret-value" in supervised_containers()["main"].attrs["Config"]["Env"]

    answer = shared_web.get("/v2/journal?appId=1")
    assert answer.status_code == 200
    recreates = [e for e in answer.json()["entries"] if e["action"] == "recreate"]
    assert [(e["serviceName"], e["reason"], e["cause"]) for e in recreates] == [
        (
            "main",
            "env changed: API_TOKEN (changed)",
            {"type": "update", "env": {"added": [], "removed": [], "changed": ["API_TOKEN"]}},
        )
    ]
    state = shared_web.get("/v2/applications/state")
    last_change = state.json()["testapp"]["services"]["main"]["lastChange"]
    assert (last_change["action"], last_change["reason"]) == ("recreate", "env changed: API_TOKEN (changed)")
    assert last_change["at"] == recreates[0]["at"]
    for body in (answer.text, state.text):
        assert "secret-value" not in body


def test_restart_service_journals_the_route_and_the_key_scope(engine: str, managed_device: None) -> None:
    apply(local_target({"main": {}, "side": {}}, image=engine))
    key = get_or_create_service_key(1, "main")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    assert post("/v2/applications/1/restart-service", {"serviceName": "side"}, **auth).status_code == 200

    reason = "API call: POST /v2/applications/1/restart-service by key scoped to app 1"
    body = journal("?appId=1", **auth)
    assert [(e["action"], e["reason"]) for e in entries_of("side", body)][-2:] == [
        ("kill", reason),
        ("start", reason),
    ]
    assert entries_of("side", body)[-1]["cause"] == {
        "type": "api",
        "route": "POST /v2/applications/1/restart-service",
        "scope": "key scoped to app 1",
    }
    assert key not in json.dumps(body)
    services = Client().get("/v2/applications/state", **auth).json()["testapp"]["services"]
    assert services["side"]["lastChange"]["reason"] == reason
    assert "lastChange" not in services["main"]  # installed, never changed since


def test_forced_stop_over_a_user_lock_journals_the_lock_override(engine: str) -> None:
    apply(local_target({"main": {}}, image=engine))
    lock_dir("main").mkdir(parents=True, exist_ok=True)
    (lock_dir("main") / "updates.lock").write_text("")
    assert post("/v2/applications/1/stop-service", {"serviceName": "main", "force": True}).status_code == 200

    rows = [(e["action"], e["reason"]) for e in entries_of("main", journal("?appId=1"))]
    assert rows[-2:] == [
        ("lockOverride", "lock override: user locks of main removed"),
        ("stop", "API call: POST /v2/applications/1/stop-service by global key"),
    ]


def test_container_exiting_with_code_3_is_journaled_as_a_crash(engine: str) -> None:
    # The agent's log collector thread sees the engine's exit and journals it.
    apply(
        local_target({"main": {"command": ["sh", "-c", "sleep 0.5; exit 3"], "restart": "no"}}, image=engine)
    )

    def crashes() -> list[dict[str, Any]]:
        return [e for e in journal("?appId=1")["entries"] if e["action"] == "crash"]

    assert wait_until(lambda: bool(crashes()), 30), journal("?appId=1")
    assert [(e["serviceName"], e["reason"], e["cause"]) for e in crashes()] == [
        ("main", "crash: exit code 3", {"type": "crash", "exitCode": 3})
    ]
    assert wait_until(
        lambda: Client()
        .get("/v2/applications/state")
        .json()["testapp"]["services"]["main"]
        .get("lastChange"),
        10,
    )
    last_change = Client().get("/v2/applications/state").json()["testapp"]["services"]["main"]["lastChange"]
    assert (last_change["action"], last_change["reason"]) == ("crash", "crash: exit code 3")


def test_journal_pages_by_cursor_and_shows_a_scoped_key_only_its_app(
    engine: str, managed_device: None
) -> None:
    apply(local_target({"main": {}, "side": {}}, image=engine))
    record(kind="kill", app_id=2, service_name="other", reason="not in target", cause=None)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {get_or_create_global_key().key}"}
    all_rows = journal("?limit=1000", **auth)["entries"]
    assert {e["appId"] for e in all_rows} == {1, 2}

    seen, since = [], ""
    while True:
        page = journal(f"?limit=2{since}", **auth)
        assert len(page["entries"]) <= 2
        seen += page["entries"]
        if not page["more"]:
            break
        since = f"&since={page['next']}"
    assert [e["id"] for e in seen] == [e["id"] for e in all_rows] == sorted(e["id"] for e in all_rows)

    app2 = {"HTTP_AUTHORIZATION": f"Bearer {get_or_create_service_key(2, 'other')}"}
    assert [e["appId"] for e in journal(**app2)["entries"]] == [2]
    assert Client().get("/v2/journal?appId=1", **app2).status_code == 401
    assert journal(f"?since={all_rows[-1]['id']}", **auth) == {
        "status": "success",
        "entries": [],
        "next": all_rows[-1]["id"],
        "more": False,
    }
    assert journal("?since=2999-01-01T00:00:00Z", **auth)["entries"] == []
    assert [e["id"] for e in journal("?since=2000-01-01", **auth)["entries"]] == [e["id"] for e in all_rows]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?appId=abc", "Invalid appId: expected a positive integer"),
        ("?since=yesterday", "Invalid since: expected a row id or an ISO 8601 time"),
        ("?limit=0", "Invalid limit: expected an integer from 1 to 1000"),
        ("?limit=1001", "Invalid limit: expected an integer from 1 to 1000"),
        ("?limit=-5", "Invalid limit: expected an integer from 1 to 1000"),
    ],
)
def test_bad_journal_parameters_are_400_naming_the_field(redis_server: str, query: str, message: str) -> None:
    response = Client().get(f"/v2/journal{query}")
    assert (response.status_code, response.json()) == (400, {"status": "failed", "message": message})


def test_a_forced_update_over_a_user_lock_journals_the_override_before_the_recreate(engine: str) -> None:
    apply(local_target({"main": {"environment": {"MODE": "a"}}}, image=engine))
    (lock_dir("main") / "updates.lock").write_text("")
    apply(local_target({"main": {"environment": {"MODE": "b"}}}, image=engine), force=True)

    rows = [(e["action"], e["reason"]) for e in entries_of("main", journal("?appId=1"))]
    override = rows.index(("lockOverride", "lock override: user locks of main removed"))
    assert ("recreate", "env changed: MODE (changed)") in rows[override + 1 :]


def test_last_changes_come_back_from_the_journal_when_redis_lost_them(redis_server: str) -> None:
    record(kind="kill", app_id=5, service_name="web", reason="env changed: A (changed)", cause=None)
    record(kind="start", app_id=5, service_name="web", reason="not running", cause=None)
    record(kind="crash", app_id=5, service_name="db", reason="crash: exit code 1", cause=crash_cause(1))
    redis_client().delete(SERVICE_LAST_CHANGE_KEY)

    restore_last_changes()

    changes = apply_status.read_progress().last_changes
    assert {key: (c["action"], c["reason"]) for key, c in changes.items()} == {
        "5/web": ("kill", "env changed: A (changed)"),
        "5/db": ("crash", "crash: exit code 1"),
    }
