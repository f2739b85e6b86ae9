"""`GET /ping` (and HEAD) answered by the ASGI router, before Django.

A liveness probe must answer while every view thread is busy (an apply holding the
worker's attention, a slow client, a long action waiting on its task), and it is the
route polled most: it goes through neither middleware nor DRF. The answer is the one
`apps_api.api.v1.PingView` gives (tests/integration/test_prepared_answers.py compares
them), counted in the same request metrics; other methods reach the view (405).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from apps_api.metrics import record_request

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PING_PATH = "/ping"
PING_BODY = b"OK"
PING_HEADERS = [
    (b"Content-Type", b"text/plain; charset=utf-8"),
    (b"Allow", b"GET, HEAD, OPTIONS"),
    (b"Content-Length", str(len(PING_BODY)).encode()),
]


def answering_ping(app: ASGIApp) -> ASGIApp:
    """`app`, with GET and HEAD /ping answered at once."""

    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PING_PATH or scope["method"] not in ("GET", "HEAD"):
            await app(scope, receive, send)
            return
        began = time.perf_counter()
        await send({"type": "http.response.start", "status": 200, "headers": PING_HEADERS})
        await send({"type": "http.response.body", "body": PING_BODY if scope["method"] == "GET" else b""})
        record_request("ping", scope["method"], 200, time.perf_counter() - began)

    return application
