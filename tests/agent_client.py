"""Django's test-client calls, sent over real HTTP to the agent that ships.

Tests written against `django.test.Client` keep their calls (`Client().get(path,
HTTP_AUTHORIZATION=…)`, `post(path, body, content_type=…)`); what answers is the session's
agent (`python -m supervisor_site.agent`, started by the `shipped_agent` fixture), its web
server thread beside its worker, not views run in the pytest process.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import requests

from tests.route_coverage import record_route

BASE_URL: list[str] = []
"""The session agent's address, set by the `shipped_agent` fixture."""

TIMEOUT_SECONDS = 330  # the longest a waiting action may take (an app purge: 300 s), and some


class AgentResponse:
    """The parts of Django's test response the tests read, over a `requests` response."""

    def __init__(self, response: requests.Response) -> None:
        self.raw = response
        self.status_code = response.status_code
        self.content = response.content
        self.headers = response.headers

    @property
    def text(self) -> str:
        return self.raw.text

    def json(self) -> Any:
        return self.raw.json()

    def __getitem__(self, header: str) -> str:
        return self.headers[header]

    def __contains__(self, header: str) -> bool:
        return header in self.headers

    def has_header(self, header: str) -> bool:
        return header in self.headers

    def get(self, header: str, default: str | None = None) -> str | None:
        return self.headers.get(header, default)


def _headers(extra: dict[str, Any]) -> tuple[dict[str, str], str]:
    """Django's META-style keywords (HTTP_X_Y, QUERY_STRING) as headers and a query string."""
    headers, query = {}, ""
    for name, value in extra.items():
        if name == "QUERY_STRING":
            query = str(value)
        elif name.startswith("HTTP_"):
            headers[name.removeprefix("HTTP_").replace("_", "-").title()] = str(value)
        elif name == "CONTENT_TYPE":
            headers["Content-Type"] = str(value)
        else:
            raise TypeError(f"not sent over HTTP by this client: {name}")
    return headers, query


class Client:
    """A drop-in for `django.test.Client` (the calls the tests make) talking to the agent."""

    def __init__(self, base_url: str | None = None, **defaults: Any) -> None:
        if base_url is None:
            assert BASE_URL, "no agent: the test needs the `shipped_agent` fixture"
            base_url = BASE_URL[-1]
        self.base_url = base_url
        self.defaults = defaults
        self.session = requests.Session()

    def request(
        self,
        method: str,
        path: str,
        data: Any = None,
        content_type: str | None = None,
        *,
        follow: bool = False,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> AgentResponse:
        sent_headers, query = _headers({**self.defaults, **extra})
        sent_headers.update(headers or {})
        body: bytes | str | None = None
        if method in ("GET", "HEAD", "DELETE") and isinstance(data, dict) and content_type is None:
            query = "&".join(filter(None, [query, urlencode(data, doseq=True)]))
        elif data is not None:
            if content_type is None and isinstance(data, dict):
                body, content_type = urlencode(data, doseq=True), "application/x-www-form-urlencoded"
            elif content_type == "application/json" and not isinstance(data, str | bytes):
                body = json.dumps(data)
            else:
                body = data
        if content_type is not None:
            sent_headers["Content-Type"] = content_type
        url = self.base_url + path + (("&" if "?" in path else "?") + query if query else "")
        record_route(method, url)
        response = self.session.request(
            method, url, data=body, headers=sent_headers, allow_redirects=follow, timeout=TIMEOUT_SECONDS
        )
        return AgentResponse(response)

    def login(self, *, username: str, password: str) -> bool:
        """Sign in to the admin through its login form, as a maintainer's browser does."""
        form = self.get("/admin/login/")
        token = self.session.cookies.get("csrftoken")
        if form.status_code != 200 or token is None:
            return False
        answer = self.post(
            "/admin/login/?next=/admin/",
            {"csrfmiddlewaretoken": token, "username": username, "password": password},
            HTTP_REFERER=f"{self.base_url}/admin/login/",
        )
        return answer.status_code == 302 and "sessionid" in self.session.cookies

    def generic(self, method: str, path: str, data: Any = None, **extra: Any) -> AgentResponse:
        return self.request(method, path, data, **extra)

    def get(self, path: str, data: Any = None, **extra: Any) -> AgentResponse:
        return self.request("GET", path, data, **extra)

    def head(self, path: str, data: Any = None, **extra: Any) -> AgentResponse:
        return self.request("HEAD", path, data, **extra)

    def options(self, path: str, data: Any = None, **extra: Any) -> AgentResponse:
        return self.request("OPTIONS", path, data, **extra)

    def post(
        self, path: str, data: Any = None, content_type: str | None = None, **extra: Any
    ) -> AgentResponse:
        return self.request("POST", path, data, content_type, **extra)

    def put(
        self, path: str, data: Any = None, content_type: str | None = None, **extra: Any
    ) -> AgentResponse:
        return self.request("PUT", path, data, content_type, **extra)

    def patch(
        self, path: str, data: Any = None, content_type: str | None = None, **extra: Any
    ) -> AgentResponse:
        return self.request("PATCH", path, data, content_type, **extra)

    def delete(
        self, path: str, data: Any = None, content_type: str | None = None, **extra: Any
    ) -> AgentResponse:
        return self.request("DELETE", path, data, content_type, **extra)
