"""Django's ASGI handler without a new thread for every request.

Django enters a fresh asgiref ThreadSensitiveContext for each request, and the first
thread-sensitive call in it (the request_started signal's database receivers, a sync
view) starts a thread that is joined when the request ends. Measured under daphne, that
start and join took about half of the event loop's time for a trivial request. Here the
thread-sensitive calls of all requests share asgiref's one long-lived thread instead, and
the device API's views run on a pool of reused threads (`apps_api.api.urls.in_own_thread`),
so a request that waits on a task still holds up no other request.
"""

from __future__ import annotations

from typing import Any

import django
from django.core import signals
from django.core.handlers.asgi import ASGIHandler
from django.db import close_old_connections, reset_queries


class SharedThreadASGIHandler(ASGIHandler):
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await self.handle(scope, receive, send)


def get_shared_thread_asgi_application() -> SharedThreadASGIHandler:
    """`django.core.asgi.get_asgi_application`, with the handler above."""

    django.setup(set_prefix=False)
    # Django's database receivers of request_started are sync: sending the signal would
    # hop to the shared thread and back on every request (about a quarter of a cached
    # read's cost), to tidy that thread's connection only. The device API's views never
    # use it (they run on their own pools, whose connections these receivers never
    # reached), and the admin's, which does, is still tidied by request_finished, sent
    # from the response's close() on that thread after every request.
    signals.request_started.disconnect(close_old_connections)
    signals.request_started.disconnect(reset_queries)
    return SharedThreadASGIHandler()
