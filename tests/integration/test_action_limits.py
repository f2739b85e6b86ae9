"""The rate limit of disruptive actions and the audit log, through the real web process over
HTTP, with the real engine and worker: a key's 7th disruptive action in a minute is refused
(429, Retry-After) and changes nothing, another key is not held back by that count, the
count outlives the web process, every action is in GET /v2/audit for the global key, and
without Redis the limit lets actions through (fail open)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings

from apps_api.apikeys import get_or_create_global_key, get_or_create_service_key
from apps_api.redis_store import ACTION_COUNT_PREFIX, SCHEDULER_TICK_KEY, redis_client
from tests.integration.conftest import WebProcess, free_port, launch_web, stop_web
from tests.integration.engine_helpers import apply, local_target, supervised_containers

# The web process's threads read the keys this test writes: they must be committed.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("managed_device")]

API_SERVICE = {"labels": {"io.balena.features.supervisor-api": "1"}}


@pytest.fixture
def start_limited_web(redis_server: str, tmp_path: Path) -> Iterator[Callable[[], WebProcess]]:
    """Starts the web server on the tests' database, Redis and engine, with the default limit
    (the tests' settings turn it off); counts left by other tests are cleared first."""
    stale = list(redis_client().scan_iter(ACTION_COUNT_PREFIX + "*"))
    redis_client().delete(SCHEDULER_TICK_KEY, *stale)
    started: list[WebProcess] = []

    def start() -> WebProcess:
        data_dir = Path(settings.SUPERVISOR_DATA_DIR)
        web = launch_web(
            data_dir,
            tmp_path,
            DJANGO_SETTINGS_MODULE="tests.settings",
            SUPERVISOR_TEST_DATA_DIR=str(data_dir),
            SUPERVISOR_TEST_REDIS_URL=settings.REDIS_URL,
            SUPERVISOR_ACTION_RATE_LIMIT="6",
        )
        started.append(web)
        return web

    yield start
    for web in started:
        stop_web(web)


def post(web: WebProcess, path: str, key: str, body: dict[str, Any] | None = None) -> requests.Response:
    return requests.post(f"{web.base_url}{path}", params={"apikey": key}, json=body or {}, timeout=90)


def regenerate(web: WebProcess, key: str) -> str:
    response = post(web, "/v1/regenerate-api-key", key)
    assert response.status_code == 200, response.text
    return response.text


def test_the_seventh_disruptive_call_in_a_minute_is_refused_and_changes_nothing(
    engine: str, start_limited_web: Callable[[], WebProcess]
) -> None:
    apply(local_target({"main": API_SERVICE}, image=engine))
    web = start_limited_web()
    keys = [get_or_create_service_key(1, "main")]
    global_key = get_or_create_global_key().key
    restart = "/v2/applications/1/restart-service"

    # Six disruptive actions with the service's key: five regenerations and a restart.
    for _ in range(5):
        keys.append(regenerate(web, keys[-1]))
    assert post(web, restart, keys[-1], {"serviceName": "main"}).status_code == 200
    container = supervised_containers()["main"].id

    refused_restart = post(web, restart, keys[-1], {"serviceName": "main"})
    refused_regeneration = post(web, "/v1/regenerate-api-key", keys[-1])

    for refused in (refused_restart, refused_regeneration):
        assert refused.status_code == 429
        assert refused.headers["Content-Type"].startswith("text/plain")
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert refused.text.startswith("Too many disruptive actions with this key: at most 6 a minute")
    assert supervised_containers()["main"].id == container
    assert web.get("/v2/version", params={"apikey": keys[-1]}).status_code == 200
    # Starting a service is not disruptive; another key has a count of its own.
    assert post(web, "/v2/applications/1/start-service", keys[-1], {"serviceName": "main"}).status_code == 200
    assert post(web, restart, global_key, {"serviceName": "main"}).status_code == 200
    assert supervised_containers()["main"].id != container

    audit = web.get("/v2/audit", params={"apikey": global_key, "limit": "9"})
    assert audit.status_code == 200
    actions = audit.json()["actions"]
    service = ("service", 1, "main")
    assert [
        (a["scope"], a["appId"], a["serviceName"], a["method"], a["path"], a["status"]) for a in actions
    ] == [
        ("global", None, None, "POST", restart, 200),
        (*service, "POST", "/v2/applications/1/start-service", 200),
        (*service, "POST", "/v1/regenerate-api-key", 429),
        (*service, "POST", restart, 429),
        (*service, "POST", restart, 200),
    ] + [(*service, "POST", "/v1/regenerate-api-key", 200)] * 4
    assert actions[2]["result"].startswith("Too many disruptive actions")
    assert actions[0]["result"] == "OK"
    assert not any(key in audit.text for key in [*keys, global_key])
    # The oldest of the ten is on the next page.
    older = web.get("/v2/audit", params={"apikey": global_key, "before": str(audit.json()["nextBefore"])})
    assert [a["path"] for a in older.json()["actions"]] == ["/v1/regenerate-api-key"]
    assert older.json()["nextBefore"] is None
    # A service's key cannot read the log.
    scoped = web.get("/v2/audit", params={"apikey": keys[-1]})
    assert (scoped.status_code, scoped.text) == (401, "Unauthorized")


def test_the_count_outlives_a_restart_of_the_web_process(
    start_limited_web: Callable[[], WebProcess],
) -> None:
    first = start_limited_web()
    key = get_or_create_service_key(1, "main")
    for _ in range(6):
        key = regenerate(first, key)
    stop_web(first)

    second = start_limited_web()
    refused = post(second, "/v1/regenerate-api-key", key)

    assert refused.status_code == 429
    assert second.get("/v2/version", params={"apikey": key}).status_code == 200


def test_without_redis_the_limit_lets_actions_through_and_says_so_once(tmp_path: Path) -> None:
    data_dir = Path(settings.SUPERVISOR_DATA_DIR)
    nothing_listens = f"redis://127.0.0.1:{free_port()}/0"
    web = launch_web(
        data_dir,
        tmp_path,
        DJANGO_SETTINGS_MODULE="tests.settings",
        SUPERVISOR_TEST_DATA_DIR=str(data_dir),
        SUPERVISOR_TEST_REDIS_URL=nothing_listens,
        SUPERVISOR_ACTION_RATE_LIMIT="6",
    )
    try:
        key = get_or_create_service_key(1, "main")
        for _ in range(8):  # regenerating a key needs no Redis
            key = regenerate(web, key)
    finally:
        stop_web(web)

    assert web.output().count("disruptive API actions are not limited until Redis answers again") == 1
