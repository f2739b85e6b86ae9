"""Where a caller's key is read from (docs/api.md "API keys")."""

from __future__ import annotations

import pytest
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from apps_api.api.auth import presented_key

KEY = "0123456789abcdef0123456789abcdef"


def request_with(query: str = "", authorization: str | None = None) -> Request:
    headers = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
    return Request(APIRequestFactory().get(f"/v1/device{query}", **headers))


@pytest.mark.parametrize(
    ("query", "authorization", "expected"),
    [
        (f"?apikey={KEY}", None, KEY),
        (f"?apikey={KEY}", "Bearer other", KEY),
        ("", f"Bearer {KEY}", KEY),
        ("", f"bEaReR {KEY}", KEY),
        ("", f"ApiKey {KEY}", KEY),
        ("", f"apikey {KEY}", KEY),
        (f"?apiKey={KEY}", None, ""),
        (f"?APIKEY={KEY}", None, ""),
        ("?apikey=", f"Bearer {KEY}", KEY),
        ("", f"Bearer  {KEY}", ""),
        ("", f"Basic {KEY}", ""),
        ("", f"Bearer {KEY} extra", ""),
        ("", "Bearer key-with-dash", ""),
        ("", None, ""),
    ],
)
def test_presented_key(query: str, authorization: str | None, expected: str) -> None:
    assert presented_key(request_with(query, authorization)) == expected
