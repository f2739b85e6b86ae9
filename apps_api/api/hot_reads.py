"""The polled state reads: their bodies, and their answers given before Django.

Apps poll `/v1/device` and `/v2/applications/state`, dashboards `/v2/state/status`, the
balena CLI `/v2/version`. Their views (v1.py, v2.py) and `answering_hot_reads` build the
body with the same functions below. `answering_hot_reads` answers a `GET` with a key the
views would accept before Django, with neither Django's handler nor DRF's dispatch
(`HotReadBatches`). Anything else (another method, no accepted key, a failure) goes on to
Django, which answers it as before: a refusal or an error is never the fast path's own.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.handlers.asgi import ASGIRequest

from apps_api.api import answers
from apps_api.api.auth import access_for
from apps_api.api.prepared import prepared_body, rendered_json
from apps_api.apikeys import ApiAccess
from apps_api.snapshot import DeviceSnapshot, read_snapshot

Scope = dict[str, Any]

HOST_FACTS_SECONDS = 10
"""How long `/v1/device`'s addresses and OS version (read from the host, not the
snapshot) may be served before they are read again."""

VERSION_BODY = rendered_json({"status": "success", "version": settings.SUPERVISOR_VERSION})


def device_body(snapshot: DeviceSnapshot, access: ApiAccess) -> bytes:
    key = ("v1/device", int(time.monotonic() // HOST_FACTS_SECONDS))
    return prepared_body(snapshot, key, lambda: answers.v1_device(snapshot))


def applications_state_body(snapshot: DeviceSnapshot, access: ApiAccess) -> bytes:
    key = ("v2/applications/state", access.all_apps, access.app_ids)
    return prepared_body(snapshot, key, lambda: answers.applications_state(snapshot, access))


def state_status_body(snapshot: DeviceSnapshot, access: ApiAccess) -> bytes:
    key = ("v2/state/status", access.all_apps, access.app_ids)
    return prepared_body(snapshot, key, lambda: answers.state_status(snapshot, access))


@dataclass(frozen=True)
class HotRead:
    route: str
    """As the request metrics name it."""
    body: Callable[[DeviceSnapshot, ApiAccess], bytes] | None
    """None: the body is VERSION_BODY, whatever the state."""


HOT_READS = {
    "/v1/device": HotRead("v1/device", device_body),
    "/v2/applications/state": HotRead("v2/applications/state", applications_state_body),
    "/v2/state/status": HotRead("v2/state/status", state_status_body),
    "/v2/version": HotRead("v2/version", None),
}

# The views' answer headers (DRF adds Allow), plus the length.
JSON_HEADERS = [(b"Content-Type", b"application/json"), (b"Allow", b"GET, HEAD, OPTIONS")]

_EMPTY_BODY = io.BytesIO()


def batch_bodies(scopes: list[Scope]) -> list[bytes | None]:
    """The body of each hot read, None for those Django must answer. The state is read once,
    after every one of them arrived: each answer is as fresh as if read alone."""
    state: DeviceSnapshot | Exception | None = None
    bodies: list[bytes | None] = []
    for scope in scopes:
        read = HOT_READS[scope["path"]]
        body: bytes | None = None
        try:
            access = access_for(ASGIRequest(scope, _EMPTY_BODY))
            if access is None:
                body = None
            elif read.body is None:
                body = VERSION_BODY
            else:
                if state is None:
                    try:
                        state = read_snapshot()
                    except Exception as exc:  # kept: one wait on a stalled Redis per batch, not one each
                        state = exc
                if not isinstance(state, Exception):
                    body = read.body(state, access)
        except Exception:  # Django answers again, with its own status and message
            body = None
        bodies.append(body)
    return bodies


class HotReadBatches:
    """Hot reads answered in batches on one thread: a read arriving while a batch is being
    answered waits for the next one. Under load, one thread hop and one read of the state
    serve many requests; alone, a request is its own batch. The state is read on that
    thread (SQLite, Redis, the engine's cache may block): when Redis stalls, the reads wait
    while /ping, the event loop and the other routes go on."""

    def __init__(self, answer: Callable[[list[Scope]], list[bytes | None]] = batch_bodies) -> None:
        self._answer = answer
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="api-hot-read")
        self._waiting: list[tuple[Scope, asyncio.Future[bytes | None]]] = []
        self._answering = False

    async def body(self, scope: Scope) -> bytes | None:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bytes | None] = loop.create_future()
        self._waiting.append((scope, answer))
        if not self._answering:
            self._answer_next(loop)
        return await answer

    def _answer_next(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._waiting = self._waiting, []
        self._answering = True
        bodies = loop.run_in_executor(self._thread, self._answer, [scope for scope, _ in batch])
        bodies.add_done_callback(lambda done: self._answered(loop, batch, done))

    def _answered(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[tuple[Scope, asyncio.Future[bytes | None]]],
        done: asyncio.Future[list[bytes | None]],
    ) -> None:
        self._answering = False
        bodies = done.result() if done.exception() is None else [None] * len(batch)
        for (_, answer), body in zip(batch, bodies, strict=True):
            if not answer.done():  # a client that went away cancelled its own
                answer.set_result(body)
        if self._waiting:
            self._answer_next(loop)


ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


def answering_hot_reads(app: ASGIApp, record_request: Callable[[str, str, int, float], None]) -> ASGIApp:
    """`app`, with the hot reads it would answer 200 answered before it, in batches."""
    batches = HotReadBatches()

    async def application(scope: Scope, receive: Any, send: Any) -> None:
        read = HOT_READS.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "GET" else None
        if read is None:
            await app(scope, receive, send)
            return
        began = time.perf_counter()
        body = await batches.body(scope)
        if body is None:
            await app(scope, receive, send)
            return
        headers = [*JSON_HEADERS, (b"Content-Length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        record_request(read.route, "GET", 200, time.perf_counter() - began)

    return application
