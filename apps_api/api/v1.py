"""The v1 device API."""

from __future__ import annotations

from django.http import HttpResponse
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps_api import actions, device_state
from apps_api.api.auth import access_of
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


class DeviceView(APIView):
    """GET /v1/device: the device's state, as the first app's first service sees it."""

    def get(self, request: Request) -> Response:
        return Response(device_state.v1_device(device_state.read_snapshot()))


class AppView(APIView):
    """GET /v1/apps/:appId: the one container of a single-container app."""

    def get(self, request: Request, app_id: str) -> Response:
        return Response(device_state.v1_app(device_state.read_snapshot(), app_id, access_of(request)))


class AppStopView(APIView):
    """POST /v1/apps/:appId/stop: stop the app's one container (it stays stopped)."""

    action = "stop"

    def post(self, request: Request, app_id: str) -> Response:
        container_id = actions.act_on_single_container_app(
            self.action, access=access_of(request), raw_app_id=app_id, body=request.data
        )
        return Response({"containerId": container_id})


class AppStartView(AppStopView):
    """POST /v1/apps/:appId/start: start the app's one container, creating it if missing."""

    action = "start"


class RegenerateApiKeyView(PlainTextView):
    """POST /v1/regenerate-api-key: a new key replaces the one this request used."""

    def post(self, request: Request) -> Response:
        return Response(actions.regenerate_api_key(access=access_of(request)))


class UpdateView(APIView):
    """POST /v1/update: apply the target now (204), or nothing when instant updates are off (202)."""

    def post(self, request: Request) -> Response:
        triggered = actions.trigger_update(body=request.data)
        return Response(status=204 if triggered else 202)


def body_app_id(request: Request, message: str) -> int:
    data = request.data if isinstance(request.data, dict) else {}
    return device_state.parse_app_id(data.get("appId"), message, text=True)


class RestartView(PlainTextView):
    """POST /v1/restart {appId, force?}: new containers for every service of the app."""

    def post(self, request: Request) -> Response:
        app_id = body_app_id(request, "Missing app id")
        actions.act_on_app(
            "restart", access=access_of(request), app_id=app_id, force=actions.is_forced(request.data)
        )
        return Response("OK")


class PurgeView(APIView):
    """POST /v1/purge {appId, force?}: the app restarts with its named volumes empty."""

    def post(self, request: Request) -> Response:
        app_id = body_app_id(request, "Invalid or missing appId")
        actions.act_on_app(
            "purge", access=access_of(request), app_id=app_id, force=actions.is_forced(request.data)
        )
        return Response({"Data": "OK", "Error": ""})


class MetricsView(APIView):
    """GET /metrics: Prometheus text format (no key needed, like /v1/healthy)."""

    authentication_classes = []
    permission_classes = [AllowAny]

    def get(self, request: Request) -> HttpResponse:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        from apps_api.metrics import REGISTRY

        return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
