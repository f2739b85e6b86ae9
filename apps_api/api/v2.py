"""The v2 device API."""

from __future__ import annotations

from django.http import StreamingHttpResponse
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps_api import actions, device_state
from apps_api.api.auth import access_of
from apps_api.api.v1 import PlainTextView


class ApplicationsStateView(APIView):
    """GET /v2/applications/state: every app in scope, keyed by name."""

    def get(self, request: Request) -> Response:
        return Response(device_state.applications_state(device_state.read_snapshot(), access_of(request)))


class ApplicationStateView(APIView):
    """GET /v2/applications/:appId/state."""

    def get(self, request: Request, app_id: str) -> Response:
        return Response(
            device_state.application_state(device_state.read_snapshot(), app_id, access_of(request))
        )


class ServiceActionView(PlainTextView):
    """POST /v2/applications/:appId/(restart|stop|start)-service: 200 OK once done."""

    action = ""

    def post(self, request: Request, app_id: str) -> Response:
        actions.act_on_service(self.action, access=access_of(request), raw_app_id=app_id, body=request.data)
        return Response("OK")


class RestartServiceView(ServiceActionView):
    action = "restart"


class StopServiceView(ServiceActionView):
    action = "stop"


class StartServiceView(ServiceActionView):
    action = "start"


class StateStatusView(APIView):
    """GET /v2/state/status: applying or applied, with the first app's containers and images."""

    def get(self, request: Request) -> Response:
        return Response(device_state.state_status(device_state.read_snapshot(), access_of(request)))


class ContainerIdView(APIView):
    """GET /v2/containerId[?serviceName=|service=]."""

    def get(self, request: Request) -> Response:
        name = request.query_params.get("serviceName") or request.query_params.get("service")
        return Response(device_state.container_ids(device_state.read_snapshot(), access_of(request), name))


class VersionView(APIView):
    """GET /v2/version."""

    def get(self, request: Request) -> Response:
        return Response({"status": "success", "version": device_state.SUPERVISOR_VERSION})


class DeviceNameView(APIView):
    """GET /v2/device/name: the name from the target state (default `local`)."""

    def get(self, request: Request) -> Response:
        snapshot = device_state.read_snapshot()
        name = snapshot.target.name if snapshot.target and snapshot.target.name else "local"
        return Response({"status": "success", "deviceName": name})


class AppActionView(PlainTextView):
    """POST /v2/applications/:appId/(restart|purge) {force?}."""

    action = ""

    def post(self, request: Request, app_id: str) -> Response:
        parsed = device_state.parse_app_id(app_id, "Missing app id")
        actions.act_on_app(
            self.action, access=access_of(request), app_id=parsed, force=actions.is_forced(request.data)
        )
        return Response("OK")


class RestartAppView(AppActionView):
    action = "restart"


class PurgeAppView(AppActionView):
    action = "purge"


class DeviceTagsView(APIView):
    """GET/PATCH /v2/device/tags (kept on the device while it is unmanaged)."""

    def get(self, request: Request) -> Response:
        from hostcfg.tags import list_tags

        return Response({"status": "success", "tags": list_tags()})

    def patch(self, request: Request) -> Response:
        from hostcfg.tags import set_tags, validate_tags

        set_tags(validate_tags(request.data))
        return Response({"status": "success"}, status=202)


class CleanupVolumesView(APIView):
    """GET /v2/cleanup-volumes: remove volumes no container and no target app uses."""

    def get(self, request: Request) -> Response:
        actions.cleanup_volumes()
        return Response({"status": "success"})


class JournalLogsView(APIView):
    """POST /v2/journal-logs: journalctl's output, streamed until it exits or the client leaves."""

    def post(self, request: Request) -> StreamingHttpResponse:
        from hostcfg.journal import journalctl_argv, stream_journal

        argv = journalctl_argv(request.data)
        return StreamingHttpResponse(stream_journal(argv), content_type="text/plain; charset=utf-8")
