"""/v2/plan, `apply_target --dry-run` and the admin's apply page, over the real engine, a
real worker and the real HTTP stack: what the engine would do next and what holds it back."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import requests
from django.core.management import call_command

from apps_api import apply_status
from apps_api.apikeys import get_or_create_service_key
from apps_api.apply.single_flight import apply_in_progress
from apps_api.models import ApiKey, StepRecord, TargetRecord
from supervisor_site.system_services import wait_until
from tests.agent_client import Client
from tests.integration.conftest import WebProcess, lock_dir
from tests.integration.engine_helpers import (
    apply,
    local_target,
    set_target,
    supervised_containers,
    wait_applied,
)

pytestmark = pytest.mark.django_db(transaction=True)


def post_plan(document: object, **headers: str) -> Any:
    return Client().post("/v2/plan", json.dumps(document), content_type="application/json", **headers)


def device_state() -> tuple[dict[str, tuple[str, str]], int | None, int]:
    """Containers (id, status) by service, the newest stored target and the step journal's size."""
    containers = {name: (c.id, c.status) for name, c in supervised_containers().items()}
    newest = TargetRecord.objects.order_by("-id").values_list("id", flat=True).first()
    return containers, newest, StepRecord.objects.count()


@pytest.fixture
def running_main(engine: str) -> str:
    apply(local_target({"main": {}}, image=engine))
    return engine


@pytest.fixture
def update_held_by_a_user_lock(running_main: str) -> Path:
    """main runs; the app holds its update lock; a changed target waits for it."""
    user_lock = lock_dir("main") / "updates.lock"
    user_lock.write_text("held by the app")
    set_target(local_target({"main": {"environment": {"V": "2"}}}, image=running_main))
    assert wait_until(lambda: apply_status.read_flags()["update_failed"], 20), (
        "the locked update never failed"
    )
    return user_lock


def test_a_locked_update_is_held_back_naming_the_lock_and_its_service(
    update_held_by_a_user_lock: Path,
) -> None:
    response = Client().get("/v2/plan")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success"
    assert {"action": "kill", "appId": 1, "serviceName": "main", "cause": "lock", "heldBy": "main"} in body[
        "heldBack"
    ]

    # The takeLock that fails is retried after a wait that doubles: the plan says until when.
    waiting: list[dict[str, Any]] = []

    def backing_off() -> bool:
        waiting[:] = [h for h in Client().get("/v2/plan").json()["heldBack"] if h["cause"] == "backoff"]
        return bool(waiting)

    assert wait_until(backing_off, 30, interval=0.1), "no backoff seen"
    assert [h["action"] for h in waiting] == ["takeLock"]
    assert waiting[0]["until"].endswith("Z")

    update_held_by_a_user_lock.unlink()
    wait_applied(60)
    assert Client().get("/v2/plan").json() == {"status": "success", "steps": [], "heldBack": []}


def test_a_scoped_key_reads_the_plan_of_its_own_app_only(
    update_held_by_a_user_lock: Path, managed_device: None
) -> None:
    own = {"HTTP_AUTHORIZATION": f"Bearer {get_or_create_service_key(1, 'main')}"}
    other = {"HTTP_AUTHORIZATION": f"Bearer {get_or_create_service_key(2, 'elsewhere')}"}

    assert Client().get("/v2/plan").status_code == 401, "a managed device wants a key"
    assert Client().get("/v2/plan", **other).json() == {"status": "success", "steps": [], "heldBack": []}
    held = Client().get("/v2/plan", **own).json()["heldBack"]
    assert {"action": "kill", "appId": 1, "serviceName": "main", "cause": "lock", "heldBy": "main"} in held

    update_held_by_a_user_lock.unlink()
    wait_applied(60)


def test_posting_a_target_answers_its_steps_and_changes_nothing(running_main: str) -> None:
    before = device_state()
    changed = local_target({"main": {"environment": {"V": "2"}}, "side": {}}, image=running_main)

    response = post_plan(changed)

    assert response.status_code == 200
    assert response.json() == {
        "status": "success",
        "steps": [
            {
                "action": "takeLock",
                "appId": 1,
                "serviceName": None,
                "reason": "env changed: V (added)",
                "services": ["main", "side"],
            }
        ],
        "heldBack": [
            {"action": "kill", "appId": 1, "serviceName": "main", "cause": "lock", "heldBy": None},
            {"action": "start", "appId": 1, "serviceName": "side", "cause": "lock", "heldBy": None},
        ],
    }
    assert not apply_in_progress(), "nothing was scheduled"
    assert device_state() == before, "the containers, the stored target and the journal are as they were"


def test_the_plan_over_the_real_web_server(running_main: str, shared_web: WebProcess) -> None:
    before = device_state()
    changed = local_target({"main": {"environment": {"V": "2"}}}, image=running_main)

    posted = requests.post(shared_web.base_url + "/v2/plan", json=changed, timeout=10)
    read = shared_web.get("/v2/plan")

    assert posted.status_code == 200
    assert [(s["action"], s["services"]) for s in posted.json()["steps"]] == [("takeLock", ["main"])]
    assert read.json() == {"status": "success", "steps": [], "heldBack": []}, "the stored target is reached"
    assert device_state() == before


def test_a_posted_target_with_a_bad_field_is_refused_naming_it(running_main: str) -> None:
    before = device_state()
    document = local_target({"main": {}}, image=running_main)
    document["local"]["apps"]["1"]["services"]["1"]["environment"] = ["V=2"]

    response = post_plan(document)

    assert response.status_code == 400
    assert response.json()["status"] == "failed"
    assert response.json()["message"] == (
        "Invalid target state.\nlocal.apps.1.services.1.environment: expected an object"
    )
    assert device_state() == before


def test_a_scoped_key_sees_only_its_own_app(running_main: str, managed_device: None) -> None:
    own = {"HTTP_AUTHORIZATION": f"Bearer {get_or_create_service_key(1, 'main')}"}
    other = {"HTTP_AUTHORIZATION": f"Bearer {get_or_create_service_key(2, 'elsewhere')}"}
    without_app_1: dict[str, Any] = {"local": {"name": "test-device", "config": {}, "apps": {}}}
    keys_before = list(ApiKey.objects.values_list("key", flat=True).order_by("key"))
    before = device_state()

    removing = post_plan(without_app_1, **own).json()
    assert [(s["action"], s["appId"]) for s in removing["steps"]] == [("takeLock", 1)]
    assert post_plan(without_app_1, **other).json() == {"status": "success", "steps": [], "heldBack": []}

    changed = local_target({"main": {"environment": {"V": "2"}}}, image=running_main)
    denied = post_plan(changed, **other)
    assert denied.status_code == 401
    assert denied.json() == {"status": "failed", "message": "Unauthorized"}
    assert post_plan(changed, **own).status_code == 200

    assert list(ApiKey.objects.values_list("key", flat=True).order_by("key")) == keys_before
    assert device_state() == before


def test_apply_target_dry_run_prints_the_steps_and_stores_nothing(running_main: str, tmp_path: Path) -> None:
    before = device_state()
    document = tmp_path / "target.json"
    document.write_text(json.dumps(local_target({"main": {"environment": {"V": "2"}}}, image=running_main)))
    out = io.StringIO()

    call_command("apply_target", str(document), "--dry-run", stdout=out)

    printed = json.loads(out.getvalue())
    assert printed["steps"] == [
        {"action": "takeLock", "appId": 1, "serviceName": None, "reason": "env changed: V (added)",
         "services": ["main"]}
    ]  # fmt: skip
    assert printed["heldBack"] == [
        {"action": "kill", "appId": 1, "serviceName": "main", "cause": "lock", "heldBy": None}
    ]
    assert device_state() == before


def test_admin_apply_page_shows_the_plan_and_what_holds_it(
    update_held_by_a_user_lock: Path, admin_client: Client
) -> None:
    page = admin_client.get("/admin/apply/")

    assert page.status_code == 200
    html = page.content.decode()
    assert 'http-equiv="refresh"' in html
    held = html[html.index('id="plan-held-back"') : html.index('id="apply-services"')]
    assert "kill" in held
    assert "lock: main" in held
    services = html[html.index('id="apply-services"') : html.index('id="apply-last-error"')]
    assert "main" in services
    assert "running" in services
    last_error = html[html.index('id="apply-last-error"') :]
    assert "takeLock" in last_error
    assert "Lockfile exists" in last_error

    update_held_by_a_user_lock.unlink()
    wait_applied(60)


def test_the_admin_apply_page_needs_the_admin_login(engine: str) -> None:
    response = Client().get("/admin/apply/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
