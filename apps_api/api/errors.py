"""The one place where exceptions become HTTP answers (docs/api.md "Error shapes")."""

from __future__ import annotations

import logging
from typing import Any

from django.http import Http404, HttpResponse, JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response

from apps_api.action_limit import ActionRateLimited
from apps_api.api.renderers import PlainTextRenderer
from apps_api.engine.locks import UpdatesLocked
from apps_api.errors import DeviceApiError, PowerActionRefused
from hostcfg.journal import JournalRequestInvalid, JournalUnavailable
from hostcfg.tags import TagsInvalid

logger = logging.getLogger(__name__)


def failure(message: str, status: int, *, text: bool = False) -> HttpResponse:
    if text:
        return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")
    return JsonResponse({"status": "failed", "message": message}, status=status)


def detail_text(detail: Any) -> str:
    """DRF's error detail (a string, a list or a field map) as one line of text."""
    if isinstance(detail, dict):
        return "; ".join(f"{field}: {detail_text(value)}" for field, value in detail.items())
    if isinstance(detail, list):
        return "; ".join(detail_text(item) for item in detail)
    return str(detail)


def answers_in_text(context: dict[str, Any]) -> bool:
    """Whether the view answers in text (its first renderer), so that its errors do too."""
    renderers: list[type] = list(getattr(context.get("view"), "renderer_classes", []))
    return bool(renderers) and issubclass(renderers[0], PlainTextRenderer)


def device_api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | HttpResponse | None:
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        return failure("Unauthorized", 401, text=True)
    if isinstance(exc, ActionRateLimited):
        limited = failure(str(exc), 429, text=answers_in_text(context))
        limited["Retry-After"] = str(exc.retry_after)
        return limited
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
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    if isinstance(exc, exceptions.APIException):  # a wrong method, media type, Accept…
        return failure(detail_text(exc.detail), exc.status_code, text=answers_in_text(context))
    # Anything the actions did not anticipate: the supervisor stays up and says why.
    logger.exception("request failed: %s", exc)
    return failure(str(exc) or type(exc).__name__, 503)
