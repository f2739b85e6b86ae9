"""GET /v2/local/logs: every log record as NDJSON, for as long as the client stays
(docs/logs.md "Streams"; what the balena CLI needs: docs/local-mode.md "What the balena CLI sends").

An async view streaming from an async iterator: a long-lived response must not hold
the thread that thread-sensitive calls share (supervisor_site/asgi_handler.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET
from rest_framework.request import Request

from apps_api.api.auth import presented_key, refuse_browser_requests
from apps_api.api.errors import failure
from apps_api.errors import DeviceApiError
from localmode.log_follow import FIRST_LINE, LogFollower, LogsAccess, logs_access, parse_since

logger = logging.getLogger(__name__)


@require_GET
async def logs_view(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    """200 and the stream; `?since=<ms>` first replays the records kept on disk (persistent
    logging) stamped at or after it."""
    try:
        access = await sync_to_async(logs_access)(presented_key(Request(request)))
    except Exception as exc:  # docs/api.md "API keys": an internal failure while checking is 503 text
        logger.exception("could not check the key of a log stream")
        return failure(f"Unexpected error: {exc}", 503, text=True)
    if access is None:
        return failure("Unauthorized", 401, text=True)
    if access is LogsAccess.KEYLESS:
        try:
            await sync_to_async(refuse_browser_requests)(Request(request))
        except DeviceApiError as exc:
            return failure(exc.message, exc.status, text=True)
    try:
        since = parse_since(request.GET.get("since"))
    except ValueError as exc:
        return failure(str(exc), 400, text=True)
    response = StreamingHttpResponse(_ndjson(since))
    # As the original: no Content-Type (clients read lines whatever it says), and nothing
    # on the way (a proxy or a compressing layer) may hold lines back.
    del response["Content-Type"]
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


async def _ndjson(since_ms: int | None) -> AsyncIterator[bytes]:
    yield FIRST_LINE.encode()  # at once, so that the client sees the stream has begun
    layer = get_channel_layer()
    assert layer is not None
    follower = LogFollower(layer, await layer.new_channel(), since_ms=since_ms)
    try:
        await follower.start()
        async for chunk in follower.replay():
            yield chunk.encode()
        while True:
            if text := await follower.text_of(await layer.receive(follower.channel)):
                yield text.encode()
    finally:
        await follower.stop()
