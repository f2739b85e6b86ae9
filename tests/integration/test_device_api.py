"""The device API over real containers: state reads, service actions, errors, auth."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator

import docker
import pytest
from django.conf import settings
from django.contrib.staticfiles import finders

from apps_api import apply_status
from apps_api.apikeys import get_or_create_global_key, get_or_create_service_key
from apps_api.models import ActionRecord
from supervisor_site.system_services import wait_until
from tests.agent_client import Client
from tests.integration.conftest import lock_dir
from tests.integration.engine_helpers import apply, local_target, set_target, supervised_containers

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def one_service(engine: str) -> str:
    apply(local_target({"main": {"environment": {"GREETING": "hi"}}}, image=engine))
    return engine


@pytest.fixture
def two_services(engine: str) -> str:
    apply(local_target({"main": {}, "side": {}}, image=engine))
    return engine


def post(path: str, body: dict | None = None, **headers: str):  # type: ignore[no-untyped-def]
    return Client().post(path, json.dumps(body or {}), content_type="application/json", **headers)


# --- reads ------------------------------------------------------------------------------------


def test_applications_state_lists_apps_by_name_with_service_status(one_service: str) -> None:
    body = Client().get("/v2/applications/state").json()
    assert body == {
        "testapp": {
            "appId": 1,
            "appUuid": "1",
            "commit": "c1",
            "updateStatus": "done",
            "services": {
                "main": {"status": "Running", "image": one_service, "downloadProgress": None, "releaseId": 1}
            },
        }
    }


def test_application_state_has_the_seed_shape(one_service: str) -> None:
    response = Client().get("/v2/applications/1/state")
    assert response.status_code == 200
    assert response.json() == {
        "commit": "c1",
        "local": {"1": {"services": {"1": {"status": "Running", "releaseId": 1, "download_progress": None}}}},
        "dependent": {},
    }


@pytest.mark.parametrize(
    ("app_id", "status", "message"),
    [("abc", 400, "Invalid application ID: abc"), ("-1", 400, "Invalid application ID: -1"),
     ("99", 409, "Application ID does not exist: 99")],
)  # fmt: skip
def test_application_state_errors(one_service: str, app_id: str, status: int, message: str) -> None:
    response = Client().get(f"/v2/applications/{app_id}/state")
    assert response.status_code == status
    assert response.json() == {"status": "failed", "message": message}


def test_state_status_names_the_release_that_runs_not_the_one_that_cannot_be_fetched(
    one_service: str,
) -> None:
    """As the original: the commit of what runs, while a new release is still on its way."""
    unreachable = "127.0.0.1:9/never-pulled:v2"
    set_target(local_target({"main": {}}, image=unreachable, commit="c2", release=2))
    assert wait_until(lambda: apply_status.read_flags().get("update_failed"), 30)
    body = Client().get("/v2/state/status").json()
    assert body["release"] == "c1"
    assert [row["status"] for row in body["containers"]] == ["Running"]
    apply(local_target({"main": {}}, image=one_service, commit="c3", release=3))  # an apply that ends


def test_state_status_reports_applied_containers(one_service: str) -> None:
    body = Client().get("/v2/state/status").json()
    assert body["status"] == "success"
    assert body["appState"] == "applied"
    assert body["release"] == "c1"
    [row] = body["containers"]
    assert (row["serviceName"], row["appId"], row["status"]) == ("main", 1, "Running")
    main = supervised_containers()["main"]
    assert row["containerId"] == main.id
    # As the original: an ISO 8601 date (the engine's own, to the second).
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z", row["createdAt"]), row["createdAt"]
    assert row["createdAt"][:19] == main.attrs["Created"][:19]
    assert body["images"][0]["status"] == "Downloaded"


def test_container_id_by_service_name_and_all(two_services: str) -> None:
    ids = {name: c.id for name, c in supervised_containers().items()}
    assert Client().get("/v2/containerId?serviceName=side").json() == {
        "status": "success",
        "containerId": ids["side"],
    }
    assert Client().get("/v2/containerId?service=main").json()["containerId"] == ids["main"]
    assert Client().get("/v2/containerId").json() == {"status": "success", "services": ids}
    missing = Client().get("/v2/containerId?serviceName=nope")
    assert missing.status_code == 503
    assert missing.json() == {"status": "failed", "message": "Could not find service with that name"}


def test_version_and_device_name(one_service: str) -> None:
    version = Client().get("/v2/version").json()
    assert version["status"] == "success"
    assert tuple(int(p) for p in version["version"].split("+")[0].split(".")) >= (9, 7, 0)
    assert Client().get("/v2/device/name").json() == {"status": "success", "deviceName": "test-device"}


def test_v1_device_reports_the_first_service_as_idle(one_service: str) -> None:
    body = Client().get("/v1/device").json()
    assert body["status"] == "Idle"
    assert body["commit"] == "c1"
    assert body["update_pending"] is False
    assert body["update_failed"] is False
    assert body["api_port"] == settings.SUPERVISOR_PORT


def test_v1_app_shows_the_container_without_secrets(engine: str) -> None:
    labels = {"io.balena.features.supervisor-api": "1"}
    apply(local_target({"main": {"environment": {"GREETING": "hi"}, "labels": labels}}, image=engine))
    body = Client().get("/v1/apps/1").json()
    main = supervised_containers()["main"]
    assert body["appId"] == 1
    assert body["containerId"] == main.id
    assert body["imageId"] == engine  # the image reference, as in the balena Supervisor API reference, v9
    assert body["env"]["GREETING"] == "hi"
    assert "BALENA_SUPERVISOR_API_KEY" not in body["env"]
    assert "RESIN_SUPERVISOR_API_KEY" not in body["env"]


def test_v1_app_refuses_multi_container_apps(two_services: str) -> None:
    response = Client().get("/v1/apps/1")
    assert response.status_code == 400
    assert response.content == b"Some v1 endpoints are only allowed on single-container apps"


# --- service actions ----------------------------------------------------------------------------


def test_restart_service_gives_a_new_container(two_services: str) -> None:
    before = {name: c.id for name, c in supervised_containers().items()}
    response = post("/v2/applications/1/restart-service", {"serviceName": "side"})
    assert (response.status_code, response.content) == (200, b"OK")
    after = {name: c.id for name, c in supervised_containers().items()}
    assert after["side"] != before["side"]
    assert after["main"] == before["main"]
    assert supervised_containers()["side"].status == "running"


def test_stop_service_leaves_it_exited_and_start_service_runs_it_again(two_services: str) -> None:
    assert post("/v2/applications/1/stop-service", {"serviceName": "side"}).status_code == 200
    assert supervised_containers()["side"].status == "exited"
    assert supervised_containers()["main"].status == "running"

    assert post("/v2/applications/1/start-service", {"imageId": 2}).status_code == 200
    assert supervised_containers()["side"].status == "running"


def test_v1_stop_and_start_answer_with_the_container_id(one_service: str) -> None:
    main = supervised_containers()["main"]
    stopped = post("/v1/apps/1/stop")
    assert stopped.json() == {"containerId": main.id}
    assert supervised_containers()["main"].status == "exited"
    started = post("/v1/apps/1/start")
    assert started.json() == {"containerId": main.id}
    assert supervised_containers()["main"].status == "running"


@pytest.mark.parametrize(
    ("path", "body", "status", "text", "json_body"),
    [
        ("/v2/applications/1/restart-service", {}, 400, True, None),
        ("/v2/applications/abc/restart-service", {"serviceName": "main"}, 400, False, "Invalid app id"),
        ("/v2/applications/0/stop-service", {"serviceName": "main"}, 400, False, "Invalid app id"),
        ("/v2/applications/1/stop-service", {"serviceName": "nope"}, 404, True, None),
        ("/v2/applications/7/start-service", {"serviceName": "main"}, 404, True, None),
        ("/v1/apps/1/stop", {}, 400, True, None),
        ("/v1/apps/x/stop", {}, 400, True, None),
    ],
)
def test_service_action_errors(
    two_services: str, path: str, body: dict, status: int, text: bool, json_body: str | None
) -> None:
    before = {name: (c.id, c.status) for name, c in supervised_containers().items()}
    response = post(path, body)
    assert response.status_code == status
    if text:
        assert response["Content-Type"].startswith("text/plain")
    else:
        assert response.json() == {"status": "failed", "message": json_body}
    assert {name: (c.id, c.status) for name, c in supervised_containers().items()} == before


def test_malformed_json_is_a_400_and_changes_nothing(one_service: str) -> None:
    response = Client().post("/v2/applications/1/restart-service", "{nope", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["status"] == "failed"


def test_user_lock_makes_stop_423_and_force_goes_through(two_services: str) -> None:
    lock = lock_dir("side") / "updates.lock"
    lock.write_text("mine")
    response = post("/v2/applications/1/stop-service", {"serviceName": "side"})
    assert response.status_code == 423
    assert response.json()["status"] == "failed"
    assert "Lockfile exists" in response.json()["message"]
    assert supervised_containers()["side"].status == "running"
    assert lock.read_text() == "mine"

    assert post("/v2/applications/1/stop-service", {"serviceName": "side", "force": True}).status_code == 200
    assert supervised_containers()["side"].status == "exited"
    assert not [p for p in lock_dir("side").iterdir() if p.name.endswith("updates.lock")]


# --- auth on a managed device -------------------------------------------------------------------


def test_auth_matrix_on_a_managed_device(one_service: str, managed_device: None) -> None:
    key = get_or_create_global_key().key
    assert Client().get("/v2/applications/state").status_code == 401
    assert Client().get("/v2/applications/state").content == b"Unauthorized"
    assert Client().get("/v2/applications/state?apikey=wrong").status_code == 401
    assert Client().get(f"/v2/applications/state?apiKey={key}").status_code == 401
    assert Client().get(f"/v2/applications/state?apikey={key}").status_code == 200
    assert Client().get("/v2/applications/state", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 200
    assert Client().get("/v2/applications/state", HTTP_AUTHORIZATION=f"apikey {key}").status_code == 200
    assert Client().get("/v2/applications/state", HTTP_AUTHORIZATION=f"Basic {key}").status_code == 401
    assert Client().get("/ping").status_code == 200


def test_scoped_key_acts_only_on_its_app(one_service: str, managed_device: None) -> None:
    other_app_key = get_or_create_service_key(2, "elsewhere")
    own_key = get_or_create_service_key(1, "main")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {other_app_key}"}

    assert Client().get("/v2/applications/state", **auth).json() == {}
    conflict = Client().get("/v2/applications/1/state", **auth)
    assert conflict.status_code == 409
    denied = post("/v2/applications/1/restart-service", {"serviceName": "main"}, **auth)
    assert denied.status_code == 401
    assert denied.json() == {"status": "failed", "message": "Unauthorized"}
    assert Client().get("/v2/containerId", **auth).json() == {"status": "success", "services": {}}

    own = {"HTTP_AUTHORIZATION": f"Bearer {own_key}"}
    assert "testapp" in Client().get("/v2/applications/state", **own).json()
    assert docker.from_env().containers.get(supervised_containers()["main"].id).status == "running"


# --- app restart and purge ----------------------------------------------------------------------


@pytest.fixture
def app_with_data(engine: str) -> Iterator[str]:
    apply(local_target({"main": {"volumes": ["data:/data"]}, "side": {}}, image=engine, volumes={"data": {}}))
    supervised_containers()["main"].exec_run(["sh", "-c", "echo precious > /data/file"])
    other = docker.from_env().volumes.create(
        "2_data", labels={"io.balena.supervised": "true", "io.balena.app-uuid": "2"}
    )
    yield engine
    with contextlib.suppress(docker.errors.NotFound):
        other.remove(force=True)


def read_data(image: str, volume: str = "1_data") -> bytes:
    return docker.from_env().containers.run(
        image, ["sh", "-c", "cat /data/file || true"], volumes={volume: {"bind": "/data"}}, remove=True
    )


def test_restart_recreates_every_container_and_keeps_data(app_with_data: str) -> None:
    before = {name: c.id for name, c in supervised_containers().items()}
    response = post("/v1/restart", {"appId": 1})
    assert (response.status_code, response.content) == (200, b"OK")
    after = {name: c.id for name, c in supervised_containers().items()}
    assert sorted(after) == ["main", "side"]
    assert not set(after.values()) & set(before.values())
    assert read_data(app_with_data) == b"precious\n"


def test_purge_empties_the_apps_volumes_only(app_with_data: str) -> None:
    docker.from_env().containers.run(
        app_with_data,
        ["sh", "-c", "echo other > /data/file"],
        volumes={"2_data": {"bind": "/data"}},
        remove=True,
    )
    response = post("/v1/purge", {"appId": 1})
    assert response.status_code == 200
    assert response.json() == {"Data": "OK", "Error": ""}
    assert read_data(app_with_data) == b""
    assert read_data(app_with_data, "2_data") == b"other\n"
    assert all(c.status == "running" for c in supervised_containers().values())


def test_v2_purge_and_restart_answer_ok(app_with_data: str) -> None:
    assert post("/v2/applications/1/purge").content == b"OK"
    assert read_data(app_with_data) == b""
    assert post("/v2/applications/1/restart").content == b"OK"


@pytest.mark.parametrize(
    ("path", "body", "status", "expected"),
    [
        ("/v1/restart", {}, 400, b"Missing app id"),
        ("/v1/restart", {"appId": "x"}, 400, b"Missing app id"),
        ("/v1/purge", {"appId": -3}, 400, b"Invalid or missing appId"),
        ("/v1/restart", {"appId": 5}, 503,
         {"status": "failed", "message": "Application with ID 5 is not in the current state"}),
        ("/v2/applications/zero/purge", {}, 400, {"status": "failed", "message": "Missing app id"}),
    ],
)  # fmt: skip
def test_app_action_errors(app_with_data: str, path: str, body: dict, status: int, expected: object) -> None:
    before = {name: c.id for name, c in supervised_containers().items()}
    response = post(path, body)
    assert response.status_code == status
    assert (response.content if isinstance(expected, bytes) else response.json()) == expected
    assert {name: c.id for name, c in supervised_containers().items()} == before


def test_restart_is_refused_while_an_app_holds_its_lock(app_with_data: str) -> None:
    (lock_dir("side") / "updates.lock").write_text("mine")
    before = {name: c.id for name, c in supervised_containers().items()}
    response = post("/v1/restart", {"appId": 1})
    assert response.status_code == 423
    assert {name: c.id for name, c in supervised_containers().items()} == before
    assert read_data(app_with_data) == b"precious\n"
    (lock_dir("side") / "updates.lock").unlink()


# --- update and key regeneration ----------------------------------------------------------------


def test_update_applies_the_target_again(two_services: str) -> None:
    supervised_containers()["side"].remove(force=True)
    response = post("/v1/update")
    assert response.status_code == 204
    from tests.integration.engine_helpers import wait_applied

    wait_applied(60)
    assert sorted(supervised_containers()) == ["main", "side"]


def test_regenerated_key_replaces_the_old_one_at_once(one_service: str, managed_device: None) -> None:
    old = get_or_create_global_key().key
    response = post(f"/v1/regenerate-api-key?apikey={old}")
    assert response.status_code == 200
    new = response.content.decode()
    assert len(new) == 32
    assert new != old
    assert Client().get(f"/v2/version?apikey={old}").status_code == 401
    assert Client().get(f"/v2/version?apikey={new}").status_code == 200


# --- device utilities ---------------------------------------------------------------------------


def test_a_tag_value_of_10000_characters_and_a_balena_like_key_elsewhere_are_kept(engine: str) -> None:
    body = {"notes": "n" * 10_000, "my.io.balena.key": "fine"}
    response = Client().patch("/v2/device/tags", json.dumps(body), content_type="application/json")
    assert response.status_code == 202
    tags = Client().get("/v2/device/tags").json()["tags"]
    assert {t["name"]: len(t["value"]) for t in tags} == {"notes": 10_000, "my.io.balena.key": 4}


def test_device_tags_are_kept_locally_on_an_unmanaged_device(engine: str) -> None:
    assert Client().get("/v2/device/tags").json() == {"status": "success", "tags": []}
    response = Client().patch(
        "/v2/device/tags", json.dumps({"room": "lab", "rack": "3"}), content_type="application/json"
    )
    assert response.status_code == 202
    assert response.json() == {"status": "success"}
    Client().patch("/v2/device/tags", json.dumps({"room": "attic"}), content_type="application/json")
    tags = Client().get("/v2/device/tags").json()["tags"]
    assert {t["name"]: t["value"] for t in tags} == {"room": "attic", "rack": "3"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([1, 2], "Invalid tags body, must be an object like `{[tagKey: string]: string}`"),
        ({"room": 3}, "Invalid tags body, must be an object like `{[tagKey: string]: string}`"),
        ({"my room": "x"}, "Tag keys cannot contain whitespace"),
        # What the balena API refuses for a whole report, so one such tag would block the rest.
        ({"room": "x", "io.balena.owner": "me"},
         "Tag 'io.balena.owner': keys starting with io.balena. or io.resin. are reserved"),
        ({"io.resin.x": "y"}, "Tag 'io.resin.x': keys starting with io.balena. or io.resin. are reserved"),
        ({"room": "x", "notes": "n" * 10_001}, "Tag 'notes': the value is longer than 10000 characters"),
    ],
)  # fmt: skip
def test_invalid_tags_are_refused_whole(engine: str, body: object, message: str) -> None:
    response = Client().patch("/v2/device/tags", json.dumps(body), content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"status": "failed", "message": message}
    assert Client().get("/v2/device/tags").json()["tags"] == []


def test_cleanup_volumes_removes_only_unused_supervised_volumes(app_with_data: str) -> None:
    client = docker.from_env()
    unused = client.volumes.create("1_leftover", labels={"io.balena.supervised": "true"})
    foreign = client.volumes.create("not-ours-volume")
    try:
        assert Client().get("/v2/cleanup-volumes").json() == {"status": "success"}
        names = {v.name for v in client.volumes.list()}
        assert "1_leftover" not in names
        assert {"1_data", "not-ours-volume"} <= names
        assert "2_data" not in names, "a supervised volume of no target app, mounted by nothing"
    finally:
        foreign.remove(force=True)
        if "1_leftover" in {v.name for v in client.volumes.list()}:
            unused.remove(force=True)


def test_a_head_of_cleanup_volumes_acts_and_is_recorded_like_a_get(app_with_data: str) -> None:
    """Django answers HEAD with the GET view: the volumes go, so the audit log says so
    (security review, L7: it did not)."""
    client = docker.from_env()
    client.volumes.create("1_leftover", labels={"io.balena.supervised": "true"})
    recorded = ActionRecord.objects.filter(path="/v2/cleanup-volumes").count()
    assert Client().head("/v2/cleanup-volumes").status_code == 200
    assert "1_leftover" not in {v.name for v in client.volumes.list()}
    [row] = ActionRecord.objects.filter(path="/v2/cleanup-volumes").order_by("-id")[:1]
    assert ActionRecord.objects.filter(path="/v2/cleanup-volumes").count() == recorded + 1
    assert row.method == "HEAD"


def test_metrics_count_requests_steps_and_applies(one_service: str) -> None:
    Client().get("/v2/version")
    response = Client().get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert 'supervisor_http_requests_total{method="GET",route="v2/version",status="200"}' in text
    assert "supervisor_http_request_duration_seconds_bucket" in text
    steps = [line for line in text.splitlines() if line.startswith('supervisor_steps_total{kind="start"')]
    assert steps, text
    assert float(steps[0].rsplit(" ", 1)[1]) >= 1
    assert 'supervisor_apply_runs_total{result="converged"}' in text


def test_metrics_count_unknown_methods_as_other(redis_server: str) -> None:
    for method in ("FOO", "X" * 1000, "PROPFIND"):
        Client().generic(method, "/v2/version")
    text = Client().get("/metrics").content.decode()
    assert 'method="other",route="v2/version",status="405"' in text
    assert "FOO" not in text
    assert "PROPFIND" not in text


@pytest.mark.usefixtures("managed_device")
def test_schema_and_docs_need_a_key_on_a_managed_device() -> None:
    """Through the agent: the schema and Swagger UI are keyed like the API they describe."""
    client = Client()
    for path in ("/v2/version", "/openapi.json", "/docs/", "/metrics"):
        assert client.get(path).status_code == 401, path

    key = get_or_create_global_key().key
    schema = client.get(f"/openapi.json?apikey={key}")
    docs = client.get("/docs/", headers={"Authorization": f"Bearer {key}"})

    assert schema.status_code == 200
    assert schema["Content-Type"].startswith("application/vnd.oai.openapi+json")
    assert "/v1/device" in json.loads(schema.content)["paths"]
    assert docs.status_code == 200
    assert b"/openapi.json" in docs.content
    # Swagger UI comes from the device's own static files: devices have no internet.
    assets = re.findall(r'"/static/([^"]+)"', docs.content.decode())
    assert any(asset.startswith("drf_spectacular_sidecar/swagger-ui-dist/") for asset in assets)
    assert all(finders.find(asset) for asset in assets), assets
