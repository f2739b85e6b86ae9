"""The log stream over a WebSocket, at /v2/local/logs/ws: the records of GET /v2/local/logs.

Each text message holds one or more records, one JSON object per line (the NDJSON of the
HTTP stream, a batch at a time: one message per record would cost daphne more than the
records themselves at thousands of lines a second). The first is
`{"message":"Streaming logs","isSystem":true}`. The key, when one is needed, goes in the
`apikey` query parameter or an `Authorization: Bearer <key>` header, as for the HTTP API.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import path

from apps_api.api.auth import AUTHORIZATION_HEADER
from apps_api.api.browsers import check_keyless_request
from apps_api.errors import DeviceApiError
from apps_api.logs.records import BATCH_MESSAGE_TYPE
from localmode.log_follow import FIRST_LINE, LogFollower, LogsAccess, logs_access, parse_since

logger = logging.getLogger(__name__)

# Close codes in the range left to applications (RFC 6455 7.4.2), after HTTP's.
CLOSE_UNAUTHORIZED = 4401
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAVAILABLE = 4503
CLOSE_FORBIDDEN = 4403


def scope_key(scope: dict[str, Any]) -> str:
    """The key of a WebSocket handshake, found as apps_api.api.auth.presented_key finds it."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if key := (query.get("apikey") or [""])[0]:
        return key
    headers = dict(scope.get("headers") or [])
    match = AUTHORIZATION_HEADER.fullmatch(headers.get(b"authorization", b"").decode("latin-1"))
    return match.group(1) if match else ""


def handshake_from_the_device_clients(scope: dict[str, Any]) -> bool:
    """A keyless handshake (local mode) must not be a web page's: browsers always send its
    Origin, which must then be the device itself."""
    # ASGI gives header names as lower-case bytes.
    headers = {
        name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers") or []
    }
    try:
        check_keyless_request(method="GET", host=headers.get("host", ""),
                              origin=headers.get("origin", ""), fetch_site=headers.get("sec-fetch-site", ""),
                              content_type="", has_body=False)  # fmt: skip
    except DeviceApiError:
        return False
    return True


class LogStreamConsumer(AsyncWebsocketConsumer):
    follower: LogFollower | None = None

    async def connect(self) -> None:
        try:
            since = parse_since(
                (parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get("since") or [""])[0]
            )
        except ValueError:
            await self.close(code=CLOSE_BAD_REQUEST)
            return
        try:
            access = await sync_to_async(logs_access)(scope_key(self.scope))
        except Exception:
            logger.exception("could not check the key of a log stream")
            await self.close(code=CLOSE_UNAVAILABLE)
            return
        if access is None:
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        if access is LogsAccess.KEYLESS and not handshake_from_the_device_clients(self.scope):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self.accept()
        await self.send(text_data=FIRST_LINE)
        self.follower = LogFollower(self.channel_layer, self.channel_name, since_ms=since)
        await self.follower.start()
        async for chunk in self.follower.replay():
            await self.send(text_data=chunk)

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Batches come hundreds of times a second and touch no database: they skip the
        # thread hop that closes stale database connections before each message.
        if message["type"] == BATCH_MESSAGE_TYPE:
            await self.log_batch(message)
        else:
            await super().dispatch(message)

    async def log_batch(self, message: dict[str, Any]) -> None:
        if self.follower is not None and (text := await self.follower.text_of(message)):
            await self.send(text_data=text)

    async def disconnect(self, code: int) -> None:
        if self.follower is not None:
            await self.follower.stop()


websocket_urlpatterns = [path("v2/local/logs/ws", LogStreamConsumer.as_asgi())]
