"""Which routes of the URLconf the tests called through an agent as it ships.

`record_route` is fed by every way the tests reach an agent (tests/agent_client.py, the
`Agent` helper, the log stream clients, and any `requests` call to an agent's port);
`tests/integration/test_every_route_is_called.py` compares what was called with the URLconf.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.urls import Resolver404, URLPattern, URLResolver, get_resolver, resolve

CALLED: set[str] = set()
"""The route pattern of each request sent to an agent in this session."""

AGENT_ADDRESSES: set[tuple[str, int]] = set()
"""(address, port) of each agent the tests started: a `requests` call there is recorded."""


def _join(prefix: str, route: str) -> str:
    # As Django joins the routes of nested URLconfs into ResolverMatch.route.
    return prefix + (route[1:] if route.startswith("^") else route)


def all_routes() -> set[str]:
    """Every route pattern the URLconf serves, as ResolverMatch.route names it."""

    def walk(patterns: list[URLPattern | URLResolver], prefix: str) -> set[str]:
        found: set[str] = set()
        for pattern in patterns:
            route = _join(prefix, str(pattern.pattern))
            if isinstance(pattern, URLResolver):
                found |= walk(pattern.url_patterns, route)
            else:
                found.add(route)
        return found

    return walk(get_resolver().url_patterns, "")


def record_route(method: str, url: str) -> None:
    """Count a request to `url` (a path, or a whole URL) as a call of its route."""
    path = urlsplit(url).path or "/"
    try:
        match = resolve(path)
    except Resolver404:
        return
    CALLED.add(match.route)


def record_if_agent(method: str, url: str) -> None:
    """For a `requests` hook: record `url` when it goes to an agent started by the tests."""
    parts = urlsplit(url)
    if (parts.hostname, parts.port) in AGENT_ADDRESSES:
        record_route(method, url)
