"""The OpenAPI schema of the device API: valid, complete, and readable without a key."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from drf_spectacular.generators import SchemaGenerator

from apps_api.api.urls import urlpatterns

HTTP_METHODS = ("get", "post", "put", "patch", "delete")
PUBLIC_PATHS = {"/ping", "/v1/healthy"}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return SchemaGenerator().get_schema(request=None, public=True)


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in schema["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield path, method, item[method]


def needs_key(operation: dict[str, Any]) -> bool:
    return any(requirement for requirement in operation.get("security", []))


def openapi_path(route: str) -> str:
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)


def test_schema_validates_without_warnings(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", "--file", str(out)
    )

    assert json.loads(out.read_text())["info"]["version"] == settings.SUPERVISOR_VERSION


def test_every_route_and_method_of_the_api_is_described(schema: dict[str, Any]) -> None:
    for pattern in urlpatterns:
        path = openapi_path(str(pattern.pattern))
        view = pattern.callback.view_class  # type: ignore[attr-defined]
        implemented = {m for m in HTTP_METHODS if hasattr(view, m)}

        assert path in schema["paths"], path
        assert set(schema["paths"][path]) & set(HTTP_METHODS) == implemented, path


def test_app_id_is_a_string_path_parameter(schema: dict[str, Any]) -> None:
    for path, method, operation in operations(schema):
        if "{app_id}" in path:
            (parameter,) = [p for p in operation["parameters"] if p["in"] == "path"]
            assert parameter["name"] == "app_id"
            assert parameter["schema"] == {"type": "string"}, (method, path)


def test_every_operation_has_a_summary_and_a_success_answer(schema: dict[str, Any]) -> None:
    for path, method, operation in operations(schema):
        assert operation.get("summary"), (method, path)
        assert any(code.startswith("2") for code in operation["responses"]), (method, path)


def test_operations_that_need_a_key_can_answer_401_in_text(schema: dict[str, Any]) -> None:
    for path, method, operation in operations(schema):
        if path in PUBLIC_PATHS:
            assert not needs_key(operation), path
            assert "401" not in operation["responses"], path
        else:
            assert needs_key(operation), (method, path)
            assert "text/plain" in operation["responses"]["401"]["content"], (method, path)


def test_key_can_come_from_the_query_or_the_authorization_header(schema: dict[str, Any]) -> None:
    schemes = schema["components"]["securitySchemes"]

    assert {"type": "apiKey", "in": "query", "name": "apikey"}.items() <= schemes["apikeyQuery"].items()
    assert {"type": "http", "scheme": "bearer"}.items() <= schemes["bearerHeader"].items()
    # Either one alone is enough.
    assert schema["paths"]["/v1/device"]["get"]["security"] == [{"apikeyQuery": []}, {"bearerHeader": []}]
