"""The one place where exceptions become HTTP answers (spec/api.md error shapes)."""

from __future__ import annotations

import logging
from typing import Any

from django.http import HttpResponse, JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler

from apps_api.engine.locks import UpdatesLocked
from apps_api.errors import DeviceApiError, PowerActionRefused
from hostcfg.journal import JournalRequestInvalid, JournalUnavailable
from hostcfg.tags import TagsInvalid

logger = logging.getLogger(__name__)


def failure(message: str, status: int, *, text: bool = False) -> HttpResponse:
    if text:
        return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")
    return JsonResponse({"status": "failed", "message": message}, status=status)


def device_api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | HttpResponse | None:
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        return failure("Unauthorized", 401, text=True)
    if isinstance(exc, DeviceApiError):
        return failure(exc.message, exc.status, text=exc.text)
    if isinstance(exc, PowerActionRefused):
        return JsonResponse({"Data": "", "Error": str(exc)}, status=423 if exc.locked else 500)
    if isinstance(exc, TagsInvalid | JournalRequestInvalid):
        return failure(str(exc), 400)
    if isinstance(exc, JournalUnavailable):
        return failure(str(exc), 503)
    if isinstance(exc, UpdatesLocked):
        return failure(str(exc), 423)
    if isinstance(exc, exceptions.ParseError):
        return failure(f"Invalid request body: {exc.detail}", 400)
    handled = exception_handler(exc, context)
    if handled is not None:
        return handled
    # Anything the actions did not anticipate: the supervisor stays up and says why.
    logger.exception("request failed: %s", exc)
    return failure(str(exc) or type(exc).__name__, 503)
