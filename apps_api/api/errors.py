"""The one place where exceptions become HTTP answers (spec/api.md error shapes)."""

from __future__ import annotations

import logging
from typing import Any

from django.http import HttpResponse, JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler

logger = logging.getLogger(__name__)


def device_api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | HttpResponse | None:
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        return HttpResponse("Unauthorized", status=401, content_type="text/plain; charset=utf-8")
    handled = exception_handler(exc, context)
    if handled is not None:
        return handled
    # Anything the actions did not anticipate: the supervisor stays up and says why.
    logger.exception("request failed: %s", exc)
    return JsonResponse({"status": "failed", "message": str(exc) or type(exc).__name__}, status=503)
