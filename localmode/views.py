"""The local-mode endpoints the balena CLI uses (answers are exactly 200 with JSON)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps_api.api.schemas import (
    JSON,
    MALFORMED_BODY,
    UNAUTHORIZED,
    UNSUPPORTED_BODY,
    FailureSerializer,
    SuccessSerializer,
    answer,
    unexpected,
)
from localmode import actions as target_state


class LocalStateSerializer(serializers.Serializer):
    name = serializers.CharField()
    config = serializers.DictField(
        child=serializers.CharField(allow_blank=True), help_text="Every device setting, defaults filled in."
    )
    apps = serializers.DictField(
        child=serializers.JSONField(), help_text="The last local-mode target's apps, by app id, as posted."
    )


class DependentSerializer(serializers.Serializer):
    apps = serializers.ListField(child=serializers.JSONField())
    devices = serializers.ListField(child=serializers.JSONField())


class TargetStateSerializer(serializers.Serializer):
    local = LocalStateSerializer()
    dependent = DependentSerializer()


class LocalTargetStateAnswer(SuccessSerializer):
    state = TargetStateSerializer()


class MessageAnswer(SuccessSerializer):
    message = serializers.CharField()


class DeviceInfoSerializer(serializers.Serializer):
    arch = serializers.CharField(help_text="amd64, aarch64, armv7hf, rpi, i386…")
    deviceType = serializers.CharField(help_text="The device type slug.")


class DeviceInfoAnswer(SuccessSerializer):
    info = DeviceInfoSerializer()


LOCAL_TARGET_REQUEST = {
    "type": "object",
    "required": ["local"],
    "properties": {
        "local": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "config": {"type": "object", "additionalProperties": {"type": "string"}},
                "apps": {"type": "object", "description": "By app id: name, commit, releaseId, services…"},
            },
        },
        "force": {"type": "boolean"},
    },
}


class LocalTargetStateView(APIView):
    """GET/POST /v2/local/target-state."""

    @extend_schema(
        summary="The target state, in the local-mode (v2) shape",
        responses=answer(200, "Works outside local mode too.", json=LocalTargetStateAnswer)
        | UNAUTHORIZED
        | unexpected(),
    )
    def get(self, request: Request) -> Response:
        return Response({"status": "success", "state": target_state.local_target_state()})

    @extend_schema(
        summary="Set the target state (local mode only) and start applying it",
        request={JSON: LOCAL_TARGET_REQUEST},
        responses=answer(200, "Stored; the apply has started.", json=MessageAnswer)
        | answer(
            400,
            "`Target state can only set when device is in local mode`, `Invalid target state.\\n<path>: "
            f"<problem>`, or {MALFORMED_BODY}.",
            json=FailureSerializer,
        )
        | UNAUTHORIZED
        | UNSUPPORTED_BODY
        | unexpected(),
    )
    def post(self, request: Request) -> Response:
        target_state.set_local_target_state(request.data)
        return Response({"status": "success", "message": "OK"})


class DeviceInfoView(APIView):
    """GET /v2/local/device-info."""

    @extend_schema(
        summary="The device's architecture and type",
        responses=answer(200, "From the boot partition's device-type.json.", json=DeviceInfoAnswer)
        | UNAUTHORIZED
        | unexpected(),
    )
    def get(self, request: Request) -> Response:
        return Response({"status": "success", "info": target_state.device_info()})
