"""GET /v2/audit's answers, and the 429 of the rate limit, through Django's test client (no
engine needed: regenerating a key is the disruptive action)."""

from __future__ import annotations

import pytest
from django.http import HttpResponse, HttpResponseBase, JsonResponse
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from pytest_django.fixtures import SettingsWrapper
from rest_framework.response import Response

from apps_api.action_limit import DISRUPTIVE_ACTIONS
from apps_api.api.audit import result_message
from apps_api.apikeys import get_or_create_global_key, get_or_create_service_key
from apps_api.redis_store import ACTION_COUNT_PREFIX, redis_client

# The views run on threads of their own: what the test writes must be committed.
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("managed_device", "redis_server"),
]


@pytest.fixture(autouse=True)
def fresh_counts() -> None:
    stale = list(redis_client().scan_iter(ACTION_COUNT_PREFIX + "*"))
    if stale:
        redis_client().delete(*stale)


def test_only_the_global_key_reads_the_audit_log() -> None:
    service_key = get_or_create_service_key(1, "main")

    assert Client().get("/v2/audit").status_code == 401
    refused = Client().get(f"/v2/audit?apikey={service_key}")
    assert (refused.status_code, refused.content) == (401, b"Unauthorized")
    allowed = Client().get(f"/v2/audit?apikey={get_or_create_global_key().key}")
    assert allowed.status_code == 200
    assert allowed.json() == {"status": "success", "actions": [], "nextBefore": None}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("limit=0", "Invalid limit: expected an integer from 1 to 1000"),
        ("limit=1001", "Invalid limit: expected an integer from 1 to 1000"),
        ("limit=ten", "Invalid limit: expected an integer from 1 to 1000"),
        ("before=-3", "Invalid before: expected a positive integer"),
        ("since=yesterday", "Invalid since: expected an ISO 8601 time, e.g. 2026-01-31T12:00:00Z"),
        ("since=2026-13-45T00:00:00Z", "Invalid since: expected an ISO 8601 time, e.g. 2026-01-31T12:00:00Z"),
    ],
)
def test_a_bad_query_is_400_naming_the_parameter(query: str, message: str) -> None:
    key = get_or_create_global_key().key
    response = Client().get(f"/v2/audit?apikey={key}&{query}")

    assert response.status_code == 400
    assert response.json() == {"status": "failed", "message": message}


def test_over_the_limit_a_regeneration_is_429_keeps_the_key_and_is_recorded(
    settings: SettingsWrapper,
) -> None:
    settings.SUPERVISOR_ACTION_RATE_LIMIT = 2
    keys = [get_or_create_service_key(1, "main")]
    for _ in range(2):
        regenerated = Client().post(f"/v1/regenerate-api-key?apikey={keys[-1]}")
        assert regenerated.status_code == 200
        keys.append(regenerated.content.decode())

    refused = Client().post(f"/v1/regenerate-api-key?apikey={keys[-1]}")

    assert refused.status_code == 429
    assert refused["Content-Type"].startswith("text/plain")
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert refused.content.decode().startswith(
        "Too many disruptive actions with this key: at most 2 a minute"
    )
    assert Client().get(f"/v2/version?apikey={keys[-1]}").status_code == 200
    audit = Client().get(f"/v2/audit?apikey={get_or_create_global_key().key}")
    actions = audit.json()["actions"]
    assert [(a["scope"], a["appId"], a["serviceName"], a["path"], a["status"]) for a in actions] == [
        ("service", 1, "main", "/v1/regenerate-api-key", 429),
        ("service", 1, "main", "/v1/regenerate-api-key", 200),
        ("service", 1, "main", "/v1/regenerate-api-key", 200),
    ]
    assert actions[1]["result"] == "OK"
    assert not any(key in audit.content.decode() for key in keys)


def test_the_schema_documents_429_on_the_limited_operations_only() -> None:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    limited = {
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "429" in operation.get("responses", {})
    }

    assert limited == {
        (method, "/" + route.replace("<str:app_id>", "{app_id}")) for method, route in DISRUPTIVE_ACTIONS
    }
    refused = schema["paths"]["/v1/reboot"]["post"]["responses"]["429"]
    assert "Retry-After" in refused["headers"]


@pytest.mark.parametrize(
    ("response", "result"),
    [
        (HttpResponse("0123456789abcdef0123456789abcdef", content_type="text/plain"), "OK"),
        (HttpResponse(status=204), "No Content"),
        (
            JsonResponse({"status": "failed", "message": "Application is not available"}, status=401),
            "Application is not available",
        ),
        (JsonResponse({"Data": "", "Error": "Updates are locked"}, status=423), "Updates are locked"),
        (HttpResponse("Missing app id\nmore", status=400, content_type="text/plain"), "Missing app id"),
        (Response({"status": "failed", "message": "not rendered yet"}, status=409), "not rendered yet"),
        (HttpResponse(b"", status=503), "Service Unavailable"),
    ],
)
def test_the_recorded_result_is_a_failures_message_and_never_a_successs_body(
    response: HttpResponseBase, result: str
) -> None:
    assert result_message(response) == result
