"""The v1 device API."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework.exceptions import ParseError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps_api import actions
from apps_api.api import answers, hot_reads, parsing
from apps_api.api.auth import access_of
from apps_api.api.prepared import json_answer
from apps_api.api.renderers import PlainTextRenderer
from apps_api.api.schemas import (
    APP_ID,
    JSON,
    LOCKED,
    MALFORMED_BODY,
    UNAUTHORIZED,
    UNEXPECTED,
    UNSUPPORTED_BODY,
    AppActionRequest,
    FailureSerializer,
    ForceRequest,
    HostConfigPatchSerializer,
    HostConfigSerializer,
    PowerAnswerSerializer,
    UpdateRequest,
    V1AppSerializer,
    V1DeviceSerializer,
    V1PurgeSerializer,
    answer,
    single_container_app_answers,
    unauthorized_or_out_of_scope,
    unexpected,
)
from apps_api.errors import BadRequest
from apps_api.health import failed_health_checks
from apps_api.metrics import REGISTRY
from apps_api.snapshot import read_snapshot
from hostcfg.host_config import INVALID_INPUT_PREFIX as HOST_CONFIG_INVALID


class PlainTextView(APIView):
    renderer_classes = [PlainTextRenderer]


class PingView(PlainTextView):
    """GET /ping: the API answers. No key needed; a key, if sent, is ignored."""

    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(summary="Check that the API answers", responses=answer(200, "`OK`.", text=True))
    def get(self, request: Request) -> Response:
        return Response("OK")


class HealthyView(PlainTextView):
    """GET /v1/healthy: 200 OK when every dependency answers, else 500 Unhealthy."""

    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        summary="Check the database, Redis and Docker",
        responses=answer(200, "`OK`: every dependency answers.", text=True)
        | answer(500, "`Unhealthy`; what failed goes to the log and the admin's home page.", text=True),
    )
    def get(self, request: Request) -> Response:
        # The reasons are logged, not answered: this route needs no key.
        return Response("Unhealthy", status=500) if failed_health_checks() else Response("OK")


class BlinkView(PlainTextView):
    """POST /v1/blink: start the LED identify pattern and answer at once."""

    @extend_schema(
        summary="Blink the identify LED for 15 s",
        request=None,
        responses=answer(200, "`OK` at once, also when a blink is already running.", text=True)
        | UNAUTHORIZED
        | unexpected(),
    )
    def post(self, request: Request) -> Response:
        actions.identify_device()
        return Response("OK")


class DeviceView(APIView):
    """GET /v1/device: the device's state, as the first app's first service sees it."""

    @extend_schema(
        summary="The device, and the first app's first service",
        responses=answer(200, "The device's state.", json=V1DeviceSerializer) | UNAUTHORIZED | unexpected(),
    )
    def get(self, request: Request) -> HttpResponse:
        return json_answer(hot_reads.device_body(read_snapshot(), access_of(request)))


class AppView(APIView):
    """GET /v1/apps/:appId: the one container of a single-container app."""

    @extend_schema(
        summary="The one container of a single-container app",
        parameters=[APP_ID],
        responses=answer(200, "The app's container.", json=V1AppSerializer)
        | answer(
            400,
            "`Missing app id` (not a positive integer), `App not found` (no container) or "
            "`Some v1 endpoints are only allowed on single-container apps`.",
            text=True,
        )
        | unauthorized_or_out_of_scope("Application is not available")
        | unexpected(),
    )
    def get(self, request: Request, app_id: str) -> Response:
        return Response(
            answers.v1_app(parsing.app_id(app_id, "Missing app id", text=True), access_of(request))
        )


class AppStopView(APIView):
    """POST /v1/apps/:appId/stop: stop the app's one container (it stays stopped)."""

    action = "stop"

    @extend_schema(
        summary="Stop the container of a single-container app (it stays stopped)",
        parameters=[APP_ID],
        request=ForceRequest,
        responses=single_container_app_answers(locks=True),
    )
    def post(self, request: Request, app_id: str) -> Response:
        container_id = actions.act_on_single_container_app(
            self.action,
            access=access_of(request),
            app_id=parsing.app_id(app_id, "Invalid app id", text=True),
            force=parsing.force(parsing.body_object(request, text=True), text=True),
            route=parsing.route(request),
        )
        return Response({"containerId": container_id})


@extend_schema_view(
    post=extend_schema(
        summary="Start the container of a single-container app, creating it if missing",
        responses=single_container_app_answers(locks=False),
    )
)
class AppStartView(AppStopView):
    """POST /v1/apps/:appId/start: start the app's one container, creating it if missing."""

    action = "start"


class RegenerateApiKeyView(PlainTextView):
    """POST /v1/regenerate-api-key: a new key replaces the one this request used."""

    @extend_schema(
        summary="Replace the key this request used",
        request=None,
        responses=answer(200, "The new key (32 lowercase hex characters).", text=True)
        | UNAUTHORIZED
        | unexpected(f"`Cannot regenerate an unknown API key` (no stored key was used), or: {UNEXPECTED}"),
    )
    def post(self, request: Request) -> Response:
        return Response(actions.regenerate_api_key(access=access_of(request)))


class UpdateView(APIView):
    """POST /v1/update: apply the target now (204), or nothing when instant updates are off (202)."""

    @extend_schema(
        summary="Apply the target now",
        request=UpdateRequest,
        responses=answer(204, "An apply was triggered (`force`, or instant updates on).")
        | answer(202, "Nothing done: instant updates are off and `force` was not given.")
        | answer(400, "The body is not valid JSON (`Invalid request body: …`).", json=FailureSerializer)
        | UNAUTHORIZED
        | UNSUPPORTED_BODY
        | unexpected(),
    )
    def post(self, request: Request) -> Response:
        body = parsing.body_object(request)
        triggered = actions.trigger_update(force=parsing.force(body), cancel=parsing.cancel(body))
        return Response(status=204 if triggered else 202)


class RestartView(PlainTextView):
    """POST /v1/restart {appId, force?}: new containers for every service of the app."""

    @extend_schema(
        summary="Recreate every container of an app",
        request={JSON: AppActionRequest},
        responses=answer(200, "`OK` once the app runs again.", text=True)
        | answer(
            400,
            f"Text: `Missing app id` (appId absent or not a positive integer). JSON: {MALFORMED_BODY}.",
            text=True,
            json=FailureSerializer,
        )
        | unauthorized_or_out_of_scope("Unauthorized")
        | LOCKED
        | unexpected(f"`Application with ID <id> is not in the current state`, or: {UNEXPECTED}"),
    )
    def post(self, request: Request) -> Response:
        body = parsing.body_object(request, text=True)
        app_id = parsing.app_id(body.get("appId"), "Missing app id", text=True)
        force = parsing.force(body, text=True)
        actions.act_on_app(
            "restart", access=access_of(request), app_id=app_id, force=force, route=parsing.route(request)
        )
        return Response("OK")


class PurgeView(APIView):
    """POST /v1/purge {appId, force?}: the app restarts with its named volumes empty."""

    @extend_schema(
        summary="Recreate an app with its named volumes emptied",
        request=AppActionRequest,
        responses=answer(200, "Done; the app runs again.", json=V1PurgeSerializer)
        | answer(
            400,
            f"Text: `Invalid or missing appId`. JSON: {MALFORMED_BODY}.",
            text=True,
            json=FailureSerializer,
        )
        | unauthorized_or_out_of_scope("Unauthorized")
        | UNSUPPORTED_BODY
        | LOCKED
        | unexpected(f"`Application with ID <id> is not in the current state`, or: {UNEXPECTED}"),
    )
    def post(self, request: Request) -> Response:
        body = parsing.body_object(request, text=True)
        app_id = parsing.app_id(body.get("appId"), "Invalid or missing appId", text=True)
        force = parsing.force(body, text=True)
        actions.act_on_app(
            "purge", access=access_of(request), app_id=app_id, force=force, route=parsing.route(request)
        )
        return Response({"Data": "OK", "Error": ""})


class RebootView(APIView):
    """POST /v1/reboot {force?}: stop the apps, then reboot through logind."""

    kind = "reboot"

    @extend_schema(
        summary="Stop the apps, then reboot the device",
        request=ForceRequest,
        responses=answer(
            202,
            "Every app's update locks are held: the apps stop and logind is asked ~1 s later. "
            '`{"Data":"OK","Error":""}`.',
            json=PowerAnswerSerializer,
        )
        | answer(
            423,
            "An update lock is held, or a host OS update is finishing (`Waiting for Host OS update to "
            "finish`); `force: true` overrides both. `Error` says which.",
            json=PowerAnswerSerializer,
        )
        | answer(
            500,
            "logind cannot be reached, or anything unexpected; `Error` says why.",
            json=PowerAnswerSerializer,
        )
        | UNAUTHORIZED
        | UNSUPPORTED_BODY,
    )
    def post(self, request: Request) -> Response:
        actions.power_off_device(self.kind, force=parsing.force(parsing.body_object(request)))
        return Response({"Data": "OK", "Error": ""}, status=202)


@extend_schema_view(post=extend_schema(summary="Stop the apps, then power the device off"))
class ShutdownView(RebootView):
    """POST /v1/shutdown {force?}: stop the apps, then power off through logind."""

    kind = "shutdown"


class HostConfigView(APIView):
    """GET/PATCH /v1/device/host-config: the hostname and the proxy."""

    @extend_schema(
        summary="The hostname and proxy settings",
        responses=answer(200, "The host's hostname and proxy.", json=HostConfigSerializer)
        | UNAUTHORIZED
        | unexpected(),
    )
    def get(self, request: Request) -> Response:
        return Response(actions.read_host_config())

    @extend_schema(
        summary="Change the hostname or the proxy",
        request={JSON: HostConfigPatchSerializer},
        responses=answer(200, "`OK`: written, and the host units concerned restarted.", text=True)
        | answer(400, "`Could not parse host config input to a valid format: <field> <problem>`.", text=True)
        | UNAUTHORIZED
        | answer(423, "An update lock is held (the lock message); `force: true` overrides it.", text=True)
        | UNSUPPORTED_BODY
        | answer(503, "Anything unexpected, e.g. the host's units could not be restarted.", text=True),
    )
    def patch(self, request: Request) -> HttpResponse:
        try:
            body = request.data
        except ParseError as exc:
            raise BadRequest(f"{HOST_CONFIG_INVALID}{exc.detail}", text=True) from exc
        actions.change_host_config(body=body)
        return HttpResponse("OK", content_type="text/plain; charset=utf-8")


class MetricsView(APIView):
    """GET /metrics: Prometheus text format (a key, like every route but /ping and /v1/healthy)."""

    @extend_schema(
        summary="Request and engine metrics for Prometheus",
        responses=answer(200, "Prometheus text exposition format.", text=True)
        | UNAUTHORIZED
        | unexpected("Redis (the engine's counters) cannot be reached."),
    )
    def get(self, request: Request) -> HttpResponse:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest  # lazy: ~14 MiB, only for scrapes

        return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
