"""`GET /ping` (and HEAD) answered by the ASGI router, before Django.

A liveness probe must answer while every view thread is busy (an apply holding the
worker's attention, a slow client, a long action waiting on its task), and it is the
route polled most: it goes through neither middleware nor DRF. The answer is the one
`apps_api.api.v1.PingView` gives (tests/integration/test_prepared_answers.py compares
them), counted in the same request metrics; other methods reach the view (405).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Awaitable, Callable
from typing import Any

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


def is_ping(scope: Scope) -> bool:
    return scope["type"] == "http" and scope["path"] == PING_PATH and scope["method"] in ("GET", "HEAD")


async def answer_ping(scope: Scope, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": PING_HEADERS})
    await send({"type": "http.response.body", "body": PING_BODY if scope["method"] == "GET" else b""})


def answering_ping(app: ASGIApp, record_request: Callable[[str, str, int, float], None]) -> ASGIApp:
    """`app`, with GET and HEAD /ping answered at once and counted by `record_request`
    (the metrics' own, passed in: this module loads before Django)."""

    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        if not is_ping(scope):
            await app(scope, receive, send)
            return
        began = time.perf_counter()
        await answer_ping(scope, send)
        record_request("ping", scope["method"], 200, time.perf_counter() - began)

    return application


class DeferredApplication:
    """The web server's application while the agent loads its own: it listens, and
    answers /ping, from the start; every other request waits until `provide()` (the
    agent first sets Django up, checks its state files and imports the API)."""

    def __init__(self) -> None:
        self._app: ASGIApp | None = None
        self._loaded: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def provide(self, app: ASGIApp) -> None:
        self._app = app
        if not self._loaded.done():
            self._loaded.set_result(app)

    def fail(self, error: BaseException) -> None:
        """The agent could not load: the requests waiting get 503, then the process ends."""
        if not self._loaded.done():
            self._loaded.set_exception(error)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app
        if app is None:
            if is_ping(scope):
                await answer_ping(scope, send)
                return
            try:
                # Shielded: a request cancelled while it waits (its client went away) must
                # not cancel the one future every waiting request shares.
                loaded = await asyncio.shield(asyncio.wrap_future(self._loaded))
            except asyncio.CancelledError:
                raise
            except BaseException:  # the load's own error, SystemExit(78) included
                await _not_started(scope, send)
                return
            await loaded(scope, receive, send)
            return
        await app(scope, receive, send)


NOT_STARTED_BODY = b"Unexpected error: the supervisor could not start"


async def _not_started(scope: Scope, send: Send) -> None:
    if scope["type"] != "http":
        await send({"type": "websocket.close", "code": 1011})
        return
    headers = [
        (b"Content-Type", b"text/plain; charset=utf-8"),
        (b"Content-Length", str(len(NOT_STARTED_BODY)).encode()),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": NOT_STARTED_BODY})
