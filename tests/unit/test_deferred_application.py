"""liveness.DeferredApplication, the agent's web application while it loads: real asyncio,
and an ASGI app standing in for the API (the point is the waiting, not the API)."""

from __future__ import annotations

import asyncio
from typing import Any

from supervisor_site.liveness import PING_BODY, DeferredApplication


async def ask(application: Any, path: str) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await application({"type": "http", "path": path, "method": "GET"}, receive, send)
    return sent


async def api(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": scope["path"].encode()})


def test_ping_answers_while_loading_and_the_rest_waits_for_the_api() -> None:
    async def scenario() -> None:
        application = DeferredApplication()
        assert (await ask(application, "/ping"))[1]["body"] == PING_BODY
        waiting = asyncio.create_task(ask(application, "/v1/device"))
        await asyncio.sleep(0)
        assert not waiting.done()
        application.provide(api)
        assert (await waiting)[1]["body"] == b"/v1/device"
        assert (await ask(application, "/ping"))[1]["body"] == b"/ping"  # the API's own now

    asyncio.run(scenario())


def test_a_waiting_request_cancelled_leaves_the_others_waiting() -> None:
    async def scenario() -> None:
        application = DeferredApplication()
        gone = asyncio.create_task(ask(application, "/v1/device"))
        staying = asyncio.create_task(ask(application, "/v2/version"))
        await asyncio.sleep(0)
        gone.cancel()  # daphne does so when the client went away
        await asyncio.sleep(0)
        application.provide(api)
        assert (await staying)[1]["body"] == b"/v2/version"

    asyncio.run(scenario())


def test_a_load_that_fails_answers_the_waiting_requests_503() -> None:
    async def scenario() -> None:
        application = DeferredApplication()
        waiting = asyncio.create_task(ask(application, "/v1/device"))
        await asyncio.sleep(0)
        application.fail(SystemExit(78))
        start, body = await waiting
        assert start["status"] == 503
        assert body["body"] == b"Unexpected error: the supervisor could not start"

    asyncio.run(scenario())
