"""The v1 device API."""

from __future__ import annotations

from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps_api import actions
from apps_api.api.renderers import FirstRendererNegotiation, PlainTextRenderer
from apps_api.health import failed_health_checks


class PlainTextView(APIView):
    renderer_classes = [PlainTextRenderer]
    content_negotiation_class = FirstRendererNegotiation


class PingView(PlainTextView):
    """GET /ping: the API answers. No key needed; a key, if sent, is ignored."""

    authentication_classes = []
    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        return Response("OK")


class HealthyView(PlainTextView):
    """GET /v1/healthy: 200 OK when every dependency answers, else 500 naming the failures."""

    authentication_classes = []
    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        failures = failed_health_checks()
        if not failures:
            return Response("OK")
        reasons = "; ".join(f"{name}: {reason}" for name, reason in failures.items())
        return Response(f"Unhealthy: {reasons}", status=500)


class BlinkView(PlainTextView):
    """POST /v1/blink: start the LED identify pattern and answer at once."""

    def post(self, request: Request) -> Response:
        actions.identify_device()
        return Response("OK")
