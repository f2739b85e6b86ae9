"""The v2 device API."""

from __future__ import annotations

from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps_api import actions
from apps_api.api import answers, hot_reads, parsing
from apps_api.api.auth import access_of
from apps_api.api.prepared import json_answer
from apps_api.api.schemas import (
    APP_ID,
    CONTAINER_IDS,
    JOURNAL_PARAMETERS,
    JSON,
    LOCKED,
    MALFORMED_BODY,
    PLAN_REQUEST,
    TAGS_REQUEST,
    UNAUTHORIZED,
    UNEXPECTED,
    UNSUPPORTED_BODY,
    ApplicationsStateSerializer,
    ApplicationStateSerializer,
    DeviceNameSerializer,
    DeviceTagsSerializer,
    DeviceVpnSerializer,
    FailureSerializer,
    ForceRequest,
    JournalRequest,
    PlanSerializer,
    ServiceSelectorRequest,
    StateStatusSerializer,
    StepJournalSerializer,
    SuccessSerializer,
    VersionSerializer,
    answer,
    service_action_answers,
    unauthorized_or_out_of_scope,
    unexpected,
)
from apps_api.api.v1 import PlainTextView
from apps_api.errors import DeviceApiError, InternalFailure
from apps_api.service_changes import journal_page
from apps_api.snapshot import read_snapshot
from hostcfg.journal import journalctl_argv, open_journal_stream
from hostcfg.tags import set_tags, validate_tags


class ApplicationsStateView(APIView):
    """GET /v2/applications/state: every app in scope, keyed by name."""

    @extend_schema(
        summary="Every app in the key's scope, with its services",
        responses=answer(
            200, "By app name: the target apps and how far they are.", json=ApplicationsStateSerializer
        )
        | UNAUTHORIZED
        | unexpected(),
    )
    def get(self, request: Request) -> HttpResponse:
        return json_answer(hot_reads.applications_state_body(read_snapshot(), access_of(request)))


class ApplicationStateView(APIView):
    """GET /v2/applications/:appId/state."""

    @extend_schema(
        summary="One app's services, by image id",
        # The automatic id would collide with /v2/applications/state's.
        operation_id="v2_applications_app_state_retrieve",
        parameters=[APP_ID],
        responses=answer(200, "The app's state.", json=ApplicationStateSerializer)
        | answer(400, "`Invalid application ID: <app_id>`.", json=FailureSerializer)
        | UNAUTHORIZED
        | answer(
            409,
            "`Application ID does not exist: <id>`: not in the target, or not in the key's scope.",
            json=FailureSerializer,
        )
        | answer(500, "Reading the state failed; `message` is the error.", json=FailureSerializer)
        | unexpected(),
    )
    def get(self, request: Request, app_id: str) -> Response:
        try:
            parsed = parsing.app_id(app_id, f"Invalid application ID: {app_id}")
            return Response(answers.application_state(parsed, access_of(request)))
        except DeviceApiError:
            raise
        except Exception as exc:  # this endpoint's contract says 500, not the usual 503
            raise InternalFailure(str(exc) or type(exc).__name__) from exc


class ServiceActionView(PlainTextView):
    """POST /v2/applications/:appId/(restart|stop|start)-service: 200 OK once done."""

    action = ""

    @extend_schema(
        summary="Act on one service of an app",
        parameters=[APP_ID],
        request={JSON: ServiceSelectorRequest},
        responses=service_action_answers(locks=True),
    )
    def post(self, request: Request, app_id: str) -> Response:
        parsed = parsing.app_id(app_id)
        body = parsing.body_object(request, text=True)
        selector, force = parsing.service_selector(body), parsing.force(body, text=True)
        actions.act_on_service(
            self.action, access=access_of(request), app_id=parsed, selector=selector, force=force,
            route=parsing.route(request),
        )  # fmt: skip
        return Response("OK")


@extend_schema_view(post=extend_schema(summary="Replace a service's container with a new one"))
class RestartServiceView(ServiceActionView):
    action = "restart"


@extend_schema_view(post=extend_schema(summary="Stop a service's container (it stays stopped)"))
class StopServiceView(ServiceActionView):
    action = "stop"


@extend_schema_view(
    post=extend_schema(
        summary="Start a service's container, creating it if missing",
        responses=service_action_answers(locks=False),
    )
)
class StartServiceView(ServiceActionView):
    action = "start"


class StateStatusView(APIView):
    """GET /v2/state/status: applying or applied, with the first app's containers and images."""

    @extend_schema(
        summary="Whether the device is applying, with the first app's containers and images",
        responses=answer(200, "The first app in the key's scope.", json=StateStatusSerializer)
        | UNAUTHORIZED
        | unexpected(),
    )
    def get(self, request: Request) -> HttpResponse:
        return json_answer(hot_reads.state_status_body(read_snapshot(), access_of(request)))


class PlanView(APIView):
    """GET /v2/plan: the next steps against the stored target; POST: against a posted one."""

    @extend_schema(
        summary="What the engine would do next against the stored target, and what holds it back",
        responses=answer(200, "Only the key's apps for a scoped key.", json=PlanSerializer)
        | UNAUTHORIZED
        | unexpected(),
    )
    def get(self, request: Request) -> Response:
        return Response(actions.next_plan(access=access_of(request)))

    @extend_schema(
        summary="What the engine would do first if this target were stored (nothing is stored)",
        request={JSON: PLAN_REQUEST},
        responses=answer(200, "Only the key's apps for a scoped key.", json=PlanSerializer)
        | answer(
            400, f"`Invalid target state.\\n<field>: <problem>`, or {MALFORMED_BODY}.", json=FailureSerializer
        )
        | unauthorized_or_out_of_scope("Unauthorized")
        | UNSUPPORTED_BODY
        | unexpected(),
    )
    def post(self, request: Request) -> Response:
        return Response(actions.plan_target_document(request.data, access=access_of(request)))


class ContainerIdView(APIView):
    """GET /v2/containerId[?serviceName=|service=]."""

    @extend_schema(
        summary="Container ids by service name",
        parameters=[
            OpenApiParameter("serviceName", OpenApiTypes.STR, description="Answer for this service only."),
            OpenApiParameter(
                "service", OpenApiTypes.STR, description="Same as serviceName, if that is empty."
            ),
        ],
        responses=answer(
            200,
            "With a service: its container id; without: every container in the key's scope.",
            json=CONTAINER_IDS,
        )
        | UNAUTHORIZED
        | unexpected(f"`Could not find service with that name`, or: {UNEXPECTED}"),
    )
    def get(self, request: Request) -> Response:
        name = request.query_params.get("serviceName") or request.query_params.get("service")
        return Response(answers.container_ids(read_snapshot(), access_of(request), name))


class VersionView(APIView):
    """GET /v2/version."""

    @extend_schema(
        summary="The supervisor API level",
        responses=answer(200, "The version, without a leading `v`.", json=VersionSerializer)
        | UNAUTHORIZED
        | unexpected(),
    )
    def get(self, request: Request) -> HttpResponse:
        return json_answer(hot_reads.VERSION_BODY)


class DeviceNameView(APIView):
    """GET /v2/device/name: the name from the target state (default `local`)."""

    @extend_schema(
        summary="The device name",
        responses=answer(200, "The target state's name, else `local`.", json=DeviceNameSerializer)
        | UNAUTHORIZED
        | unexpected(),
    )
    def get(self, request: Request) -> Response:
        snapshot = read_snapshot()
        name = snapshot.target.name if snapshot.target and snapshot.target.name else "local"
        return Response({"status": "success", "deviceName": name})


class AppActionView(PlainTextView):
    """POST /v2/applications/:appId/(restart|purge) {force?}."""

    action = ""

    @extend_schema(
        summary="Act on a whole app",
        parameters=[APP_ID],
        request={JSON: ForceRequest},
        responses=answer(200, "`OK` once the app runs again.", text=True)
        | answer(400, f"`Missing app id`, or {MALFORMED_BODY}.", json=FailureSerializer)
        | unauthorized_or_out_of_scope("Unauthorized")
        | LOCKED
        | unexpected(f"`Application with ID <id> is not in the current state`, or: {UNEXPECTED}"),
    )
    def post(self, request: Request, app_id: str) -> Response:
        parsed = parsing.app_id(app_id, "Missing app id")
        force = parsing.force(parsing.body_object(request))
        actions.act_on_app(
            self.action, access=access_of(request), app_id=parsed, force=force, route=parsing.route(request)
        )
        return Response("OK")


@extend_schema_view(post=extend_schema(summary="Recreate every container of an app"))
class RestartAppView(AppActionView):
    action = "restart"


@extend_schema_view(post=extend_schema(summary="Recreate an app with its named volumes emptied"))
class PurgeAppView(AppActionView):
    action = "purge"


class DeviceVpnView(APIView):
    """GET /v2/device/vpn: whether the VPN service runs and is connected."""

    @extend_schema(
        summary="The VPN's state",
        responses=answer(
            200, "From systemd (openvpn.service) and the host's VPN flag file.", json=DeviceVpnSerializer
        )
        | UNAUTHORIZED
        | unexpected("D-Bus (systemd) cannot be reached, or anything unexpected; `message` says why."),
    )
    def get(self, request: Request) -> Response:
        return Response({"status": "success", "vpn": actions.vpn_status()})


class DeviceTagsView(APIView):
    """GET/PATCH /v2/device/tags (kept on the device while it is unmanaged)."""

    @extend_schema(
        summary="The device's tags",
        responses=answer(
            200,
            "From the cloud on a managed device; those kept on the device otherwise.",
            json=DeviceTagsSerializer,
        )
        | UNAUTHORIZED
        | answer(500, "The cloud cannot be reached; `message` says why.", json=FailureSerializer)
        | unexpected(),
    )
    def get(self, request: Request) -> Response:
        return Response({"status": "success", "tags": actions.device_tags()})

    @extend_schema(
        summary="Set device tags",
        request={JSON: TAGS_REQUEST},
        responses=answer(202, "Stored.", json=SuccessSerializer)
        | answer(
            400,
            "Not an object of strings (`Invalid tags body, …`), a bad tag name (`Tag keys cannot "
            f"contain whitespace`), or {MALFORMED_BODY}.",
            json=FailureSerializer,
        )
        | UNAUTHORIZED
        | UNSUPPORTED_BODY
        | unexpected(),
    )
    def patch(self, request: Request) -> Response:
        set_tags(validate_tags(request.data))
        return Response({"status": "success"}, status=202)


class CleanupVolumesView(APIView):
    """GET /v2/cleanup-volumes: remove volumes no container and no target app uses."""

    @extend_schema(
        summary="Remove the volumes that no container and no target app uses",
        responses=answer(200, "Done.", json=SuccessSerializer) | UNAUTHORIZED | unexpected(),
    )
    def get(self, request: Request) -> Response:
        actions.cleanup_volumes()
        return Response({"status": "success"})


class JournalLogsView(APIView):
    """POST /v2/journal-logs: journalctl's output, streamed until it exits or the client leaves."""

    @extend_schema(
        summary="Stream the host journal",
        request=JournalRequest,
        responses=answer(
            200, "journalctl's output as it comes, until it exits or the client leaves.", text=True
        )
        | answer(400, f"An option of the wrong type or value, or {MALFORMED_BODY}.", json=FailureSerializer)
        | UNAUTHORIZED
        | UNSUPPORTED_BODY
        | unexpected(f"`journalctl is not available on this host`, or: {UNEXPECTED}"),
    )
    def post(self, request: Request) -> StreamingHttpResponse:
        argv = journalctl_argv(request.data)
        return StreamingHttpResponse(open_journal_stream(argv), content_type="text/plain; charset=utf-8")


class StepJournalView(APIView):
    """GET /v2/journal?appId=&since=&limit=: what the supervisor did to the apps, and why."""

    @extend_schema(
        summary="The journal of applied steps, restarts, stops, kills and crashes, with their causes",
        parameters=JOURNAL_PARAMETERS,
        responses=answer(200, "One page, oldest first, in the key's scope.", json=StepJournalSerializer)
        | answer(400, "`Invalid appId: …`, `Invalid since: …` or `Invalid limit: …`.", json=FailureSerializer)
        | unauthorized_or_out_of_scope("Unauthorized")
        | unexpected(),
    )
    def get(self, request: Request) -> Response:
        query = parsing.journal_query(request.query_params)
        return Response(journal_page(query, access=access_of(request)))
