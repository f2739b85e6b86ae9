"""OpenAPI description of the device API (drf-spectacular): request and answer bodies,
the answer building blocks the views' `@extend_schema` use, and the API key schemes.

Nothing here runs when a request is served: views only name these for the schema.
"""

from __future__ import annotations

import re
from typing import Any, get_args

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, PolymorphicProxySerializer
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer

from apps_api.action_limit import DISRUPTIVE_ACTIONS
from apps_api.api.renderers import PlainTextRenderer
from apps_api.engine.planner import HoldCause
from apps_api.engine.state import StepKind
from hostcfg.journal import OUTPUT_FORMATS

TEXT = PlainTextRenderer.media_type
JSON = JSONRenderer.media_type

# Choice sets shared by several fields called `status`; SPECTACULAR_SETTINGS'
# ENUM_NAME_OVERRIDES names their components.
SUCCESS_STATUS = ["success"]
FAILED_STATUS = ["failed"]
IMAGE_STATUSES = ["Downloading", "Downloaded"]
UPDATE_STATUSES = ["done", "downloading", "downloaded", "applying changes", "aborted", "rejected", "failed"]

Answers = dict[Any, OpenApiResponse]


# --- authentication -------------------------------------------------------------------


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """The two ways of presenting a key (docs/api.md "API keys"); either one is enough.

    Registered on import: the views import this module for their schemas."""

    target_class = "apps_api.api.auth.ApiKeyAuthentication"
    name = ["apikeyQuery", "bearerHeader"]

    def get_security_requirement(self, auto_schema: AutoSchema) -> list[dict[str, list[Any]]]:
        return [{name: []} for name in self.name]

    def get_security_definition(self, auto_schema: AutoSchema) -> list[dict[str, str]]:
        unmanaged = " Not checked while the device is unmanaged (no `apiEndpoint` in config.json)."
        return [
            {
                "type": "apiKey",
                "in": "query",
                "name": "apikey",
                "description": "The key as query parameter `apikey` (this exact name); used when non-empty."
                + unmanaged,
            },
            {
                "type": "http",
                "scheme": "bearer",
                "description": "`Authorization: Bearer <key>`; the scheme `ApiKey` works too, either "
                "case-insensitive, with exactly one space and a key of word characters." + unmanaged,
            },
        ]


# --- building blocks of the views' answers ---------------------------------------------


class FailureSerializer(serializers.Serializer):
    """The device API's JSON failure shape."""

    status = serializers.ChoiceField(choices=FAILED_STATUS)
    message = serializers.CharField()


def answer(code: int, description: str, *, text: bool = False, json: Any = None) -> Answers:
    """One status of an operation: a text/plain string, a JSON body, or both; neither means
    an answer without a body."""
    if not text and json is None:
        return {code: OpenApiResponse(description=description)}
    answers: Answers = {}
    if text:
        answers[(code, TEXT)] = OpenApiResponse(OpenApiTypes.STR, description=description)
    if json is not None:
        answers[(code, JSON)] = OpenApiResponse(json, description=description)
    return answers


NO_KEY = "The device is managed and the request carries no known key: `Unauthorized` (text)."
UNAUTHORIZED = answer(401, NO_KEY, text=True)
UNEXPECTED = (
    "Anything unexpected, e.g. Docker, Redis or the database unreachable, or config.json unreadable "
    "while checking the key; `message` is the error."
)
MALFORMED_BODY = "the body is not valid JSON (`Invalid request body: …`)"
LOCKED = answer(
    423,
    "An update lock is held (by the app's services or another supervisor operation); "
    "`force: true` overrides the services' locks.",
    json=FailureSerializer,
)
UNSUPPORTED_BODY = answer(
    415,
    "A body of a type other than JSON or form data, or (no key, local mode) a form body: send JSON. "
    "Text on the routes that answer in text.",
    text=True,
    json=FailureSerializer,
)


def unexpected(description: str = UNEXPECTED) -> Answers:
    """503: JSON failure shape; text `Unexpected error: …` when checking the key itself failed."""
    return answer(503, description, text=True, json=FailureSerializer)


def unauthorized_or_out_of_scope(message: str, *, text: bool = False) -> Answers:
    """401 for a missing or unknown key (text), and for a key of another app."""
    if text:
        return answer(401, f"{NO_KEY} A key of another app gets `{message}` too.", text=True)
    description = f"{NO_KEY} A key of another app gets `{message}` in the JSON failure shape."
    return answer(401, description, text=True, json=FailureSerializer)


APP_ID = OpenApiParameter(
    "app_id",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    description="The app's numeric id. Taken as a string: anything but a positive integer is answered "
    "with 400.",
)


# --- request bodies --------------------------------------------------------------------

FORCE_HELP = "Override the services' update locks (`true`, or the string `true` or `1`)."


class ForceRequest(serializers.Serializer):
    force = serializers.BooleanField(required=False, help_text=FORCE_HELP)


class AppActionRequest(ForceRequest):
    appId = serializers.IntegerField(min_value=1, help_text="The app; a string of digits works too.")


class UpdateRequest(serializers.Serializer):
    force = serializers.BooleanField(
        required=False, help_text="Apply even when instant updates are off; override update locks."
    )
    cancel = serializers.BooleanField(
        required=False, help_text="Stop a running apply first. Only JSON `true` counts."
    )


class ServiceSelectorRequest(serializers.Serializer):
    serviceName = serializers.CharField(required=False, help_text="The service (this or imageId).")
    imageId = serializers.IntegerField(
        required=False, help_text="The service's image id (this or serviceName); matched as a string."
    )
    force = serializers.BooleanField(required=False, help_text=f"{FORCE_HELP} start takes no lock.")


TAGS_REQUEST = {
    "type": "object",
    "additionalProperties": {"type": "string"},
    "description": "Tag name → value; names without whitespace, 1 to 255 characters. Given tags are "
    "set, others kept.",
}


class JournalRequest(serializers.Serializer):
    all = serializers.BooleanField(required=False, default=False, help_text="journalctl `--all`.")
    follow = serializers.BooleanField(
        required=False, default=False, help_text="Keep streaming new entries (`--follow`)."
    )
    count = serializers.IntegerField(required=False, min_value=1, help_text="Last entries (`--lines`).")
    unit = serializers.CharField(required=False, help_text="A systemd unit (`--unit`).")
    containerId = serializers.CharField(required=False, help_text="Syslog identifier (`--identifier`).")
    format = serializers.ChoiceField(
        choices=sorted(OUTPUT_FORMATS), required=False, default="short", help_text="`--output`."
    )
    since = serializers.CharField(required=False, help_text="`--since`, in journalctl's time syntax.")
    until = serializers.CharField(required=False, help_text="`--until`, in journalctl's time syntax.")


# --- v1 answers ------------------------------------------------------------------------


class V1DeviceSerializer(serializers.Serializer):
    api_port = serializers.IntegerField()
    ip_address = serializers.CharField(help_text="The host's IPv4 and global IPv6 addresses, space-separated")
    mac_address = serializers.CharField(help_text="The host's MAC addresses, space-separated.")
    os_version = serializers.CharField(help_text="PRETTY_NAME of the host's os-release; empty if unknown.")
    supervisor_version = serializers.CharField()
    update_pending = serializers.BooleanField()
    update_failed = serializers.BooleanField()
    update_downloaded = serializers.BooleanField()
    commit = serializers.CharField(
        required=False, help_text="The first app's running commit; absent while applying or unknown."
    )
    status = serializers.CharField(
        required=False,
        help_text="The first app's first service (`Running` reported as `Idle`); absent when it has none.",
    )
    download_progress = serializers.IntegerField(
        required=False, allow_null=True, help_text="Percent; present with `status`, null unless downloading."
    )


class V1AppSerializer(serializers.Serializer):
    appId = serializers.IntegerField()
    commit = serializers.CharField(allow_null=True, help_text="Null when the containers disagree.")
    containerId = serializers.CharField()
    env = serializers.DictField(
        child=serializers.CharField(), help_text="The container's environment, API keys left out."
    )
    imageId = serializers.CharField(help_text="The image reference the container runs (as in the target).")
    releaseId = serializers.IntegerField()


class ContainerIdSerializer(serializers.Serializer):
    containerId = serializers.CharField()


class V1PurgeSerializer(serializers.Serializer):
    Data = serializers.ChoiceField(choices=["OK"])
    Error = serializers.CharField(help_text="Always empty.")


class PowerAnswerSerializer(serializers.Serializer):
    Data = serializers.CharField(help_text="`OK` when accepted, else empty.")
    Error = serializers.CharField(help_text="Empty when accepted, else why not.")


class ProxySerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["socks4", "socks5", "http-connect", "http-relay"], required=False)
    ip = serializers.CharField(required=False)
    port = serializers.CharField(
        required=False, help_text="A string, as in the balena Supervisor API reference, v9."
    )
    login = serializers.CharField(required=False)
    password = serializers.CharField(required=False)
    dns = serializers.CharField(required=False, help_text="`ip:port` of the DNS forwarder, when one is set.")
    noProxy = serializers.ListField(child=serializers.CharField(), required=False)


class HostNetworkSerializer(serializers.Serializer):
    hostname = serializers.CharField()
    proxy = ProxySerializer(required=False, help_text="Absent when no proxy is configured.")


class HostConfigSerializer(serializers.Serializer):
    network = HostNetworkSerializer()


class ProxyPatchSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["socks4", "socks5", "http-connect", "http-relay"], required=False)
    ip = serializers.CharField(required=False, help_text="IPv4 address or host name.")
    port = serializers.IntegerField(required=False, min_value=1, max_value=65535)
    login = serializers.CharField(required=False)
    password = serializers.CharField(required=False)
    dns = serializers.JSONField(required=False, help_text="`true` (8.8.8.8:53), `false` (none) or `ip:port`.")
    noProxy = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Addresses or subnets that bypass the proxy."
    )


class HostNetworkPatchSerializer(serializers.Serializer):
    hostname = serializers.CharField(
        required=False, allow_blank=True, help_text="`[A-Za-z0-9-]`, at most 63; empty: the uuid's first 7."
    )
    proxy = ProxyPatchSerializer(
        required=False,
        allow_null=True,
        help_text="Merged over the stored proxy; `{}` removes it; null: no change.",
    )
    force = serializers.BooleanField(required=False, help_text=FORCE_HELP)


class HostConfigPatchSerializer(serializers.Serializer):
    network = HostNetworkPatchSerializer()
    force = serializers.BooleanField(required=False, help_text=FORCE_HELP)


# --- v2 answers ------------------------------------------------------------------------


class SuccessSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=SUCCESS_STATUS)


class LastChangeSerializer(serializers.Serializer):
    at = serializers.DateTimeField(help_text="When it was journaled (UTC).")
    action = serializers.CharField(help_text="`recreate`, `kill`, `stop`, `start`, `handover` or `crash`.")
    reason = serializers.CharField(help_text="Why, e.g. `env changed: FOO (changed)`; env values never.")


class ServiceSummarySerializer(serializers.Serializer):
    status = serializers.CharField(help_text="`Downloading` when nothing is known yet.")
    image = serializers.CharField()
    downloadProgress = serializers.IntegerField(allow_null=True)
    releaseId = serializers.IntegerField(help_text="The target release.")
    lastChange = LastChangeSerializer(
        required=False, help_text="The service's last recreate, restart, stop, kill or crash; absent if none."
    )


class FailedReleaseSerializer(serializers.Serializer):
    commit = serializers.CharField()
    reason = serializers.CharField(help_text="Why it failed its health probation.")


class AppSummarySerializer(serializers.Serializer):
    appId = serializers.IntegerField()
    appUuid = serializers.CharField()
    commit = serializers.CharField(
        allow_null=True, help_text="The target commit (after a rollback, the release rolled back to)."
    )
    updateStatus = serializers.ChoiceField(choices=UPDATE_STATUSES)
    services = serializers.DictField(child=ServiceSummarySerializer(), help_text="By service name.")
    failedRelease = FailedReleaseSerializer(
        required=False, help_text="Only when updateStatus is `failed`: the target release that failed."
    )


class ApplicationsStateSerializer(serializers.Serializer):
    """Every target app in the key's scope, keyed by app name (see ApplicationsStateSchema)."""


class ApplicationsStateSchema(OpenApiSerializerExtension):
    """A serializer cannot be a map itself: this one is described as name → AppSummary."""

    target_class = ApplicationsStateSerializer

    def map_serializer(self, auto_schema: AutoSchema, direction: Any) -> dict[str, Any]:
        app = auto_schema.resolve_serializer(AppSummarySerializer, direction)
        return {"type": "object", "additionalProperties": app.ref, "description": "By app name."}


class ImageServiceStateSerializer(serializers.Serializer):
    status = serializers.CharField(help_text="`Handing over` when two containers run the image.")
    releaseId = serializers.IntegerField()
    download_progress = serializers.IntegerField(allow_null=True)


class AppServicesSerializer(serializers.Serializer):
    services = serializers.DictField(child=ImageServiceStateSerializer(), help_text="By image id.")


class ApplicationStateSerializer(serializers.Serializer):
    commit = serializers.CharField(help_text="The running commit, or `undefined`.")
    local = serializers.DictField(child=AppServicesSerializer(), help_text="One entry: the app id.")
    dependent = serializers.DictField(help_text="Always empty.")


class StatusContainerSerializer(serializers.Serializer):
    status = serializers.CharField()
    serviceName = serializers.CharField()
    appId = serializers.IntegerField()
    imageId = serializers.IntegerField()
    serviceId = serializers.IntegerField()
    containerId = serializers.CharField()
    createdAt = serializers.CharField()


class StatusImageSerializer(serializers.Serializer):
    name = serializers.CharField()
    appId = serializers.IntegerField()
    serviceName = serializers.CharField()
    imageId = serializers.IntegerField()
    dockerImageId = serializers.CharField(allow_null=True, help_text="Null until the image is present.")
    status = serializers.ChoiceField(choices=IMAGE_STATUSES)
    downloadProgress = serializers.IntegerField(allow_null=True)


class StateStatusSerializer(SuccessSerializer):
    appState = serializers.ChoiceField(choices=["applying", "applied"])
    overallDownloadProgress = serializers.FloatField(allow_null=True)
    containers = StatusContainerSerializer(many=True, help_text="The first app's only.")
    images = StatusImageSerializer(many=True, help_text="The first app's only.")
    release = serializers.CharField(allow_null=True, help_text="The first app's target commit.")


PLAN_ACTIONS = list(get_args(StepKind))
HOLD_CAUSES = list(get_args(HoldCause))


class PlanStepSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=PLAN_ACTIONS)
    appId = serializers.IntegerField(allow_null=True, help_text="None for device-wide steps (removeImage).")
    serviceName = serializers.CharField(allow_null=True)
    reason = serializers.CharField(allow_blank=True)
    image = serializers.CharField(required=False, help_text="fetch and removeImage: the image reference.")
    services = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="takeLock: whose locks it takes."
    )


class HeldStepSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=PLAN_ACTIONS)
    appId = serializers.IntegerField(allow_null=True)
    serviceName = serializers.CharField(allow_null=True)
    cause = serializers.ChoiceField(
        choices=HOLD_CAUSES,
        help_text="`lock`: an update lock; `download`: an image on its way; `dependency`: a service, "
        "network or volume not ready; `backoff`: the wait after a failed round; `reboot`: a pending reboot.",
    )
    heldBy = serializers.CharField(
        allow_null=True,
        help_text="lock: the service whose lock file holds it (null: the supervisor takes the lock "
        "first); download: the image; dependency: the service, or `network <name>`/`volume <name>`.",
    )
    until = serializers.CharField(required=False, help_text="backoff: when the wait ends (ISO 8601, UTC).")


class PlanSerializer(SuccessSerializer):
    steps = PlanStepSerializer(many=True, help_text="The next round's steps; they run concurrently.")
    heldBack = HeldStepSerializer(many=True, help_text="Steps of later rounds and what holds each back.")


PLAN_REQUEST = {
    "type": "object",
    "description": 'A target document: v2 local mode (`{"local": {...}}`, as POST '
    '/v2/local/target-state takes) or v3 cloud (`{"<device uuid>": {...}}`); `force: true` plans '
    "as if update locks were overridden.",
}


class OneContainerIdSerializer(SuccessSerializer):
    containerId = serializers.CharField()


class AllContainerIdsSerializer(SuccessSerializer):
    services = serializers.DictField(child=serializers.CharField(), help_text="Service name → container id.")


CONTAINER_IDS = PolymorphicProxySerializer(
    component_name="ContainerIds",
    serializers=[OneContainerIdSerializer, AllContainerIdsSerializer],
    resource_type_field_name=None,
)


class VersionSerializer(SuccessSerializer):
    version = serializers.CharField()


class DeviceNameSerializer(SuccessSerializer):
    deviceName = serializers.CharField()


class TagSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    value = serializers.CharField()


class VpnStateSerializer(serializers.Serializer):
    enabled = serializers.BooleanField(help_text="openvpn.service is active.")
    connected = serializers.BooleanField(help_text="The tunnel is up.")


class DeviceVpnSerializer(SuccessSerializer):
    vpn = VpnStateSerializer()


class DeviceTagsSerializer(SuccessSerializer):
    tags = TagSerializer(many=True)


class AuditEntrySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    time = serializers.DateTimeField()
    scope = serializers.ChoiceField(
        choices=["global", "service", "none"],
        help_text="Whose key: the global (cloud) key, a service's key, or none (local mode).",
    )
    appId = serializers.IntegerField(allow_null=True, help_text="The app of the service's key.")
    serviceName = serializers.CharField(allow_null=True, help_text="The service of the service's key.")
    method = serializers.CharField()
    path = serializers.CharField()
    status = serializers.IntegerField(help_text="The status code answered; 429: the rate limit refused it.")
    result = serializers.CharField(help_text="The reason phrase of a success, the message of a failure.")


class AuditPageSerializer(SuccessSerializer):
    actions = AuditEntrySerializer(many=True)
    nextBefore = serializers.IntegerField(
        allow_null=True, help_text="Pass as `before` for the next (older) page; null on the last page."
    )


# --- answers shared by several operations -------------------------------------------------


JOURNAL_PARAMETERS = [
    OpenApiParameter("appId", OpenApiTypes.STR, description="Only this app's rows (a positive integer)."),
    OpenApiParameter(
        "since",
        OpenApiTypes.STR,
        description="A row id (rows after it: pass the last answer's `next`) or an ISO 8601 time "
        "(rows from it on).",
    ),
    OpenApiParameter("limit", OpenApiTypes.STR, description="Rows per page, 1 to 1000 (default 100)."),
]


class JournalEntrySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    at = serializers.DateTimeField()
    appId = serializers.IntegerField(allow_null=True)
    serviceName = serializers.CharField(allow_null=True)
    action = serializers.CharField(
        help_text="The step (`fetch`, `kill`, `start`…), `recreate` for a kill that replaces a container, "
        "`crash`, or `lockOverride`."
    )
    reason = serializers.CharField(allow_blank=True)
    cause = serializers.DictField(
        allow_null=True,
        help_text="The reason in parts: `type` (`update`, `api`, `crash`, `lockOverride`) and `image` "
        "{from, to}, `env` {added, removed, changed} (names only), `config` (field names), `networks`, "
        "`route`, `scope`, `exitCode`, `services`.",
    )
    succeeded = serializers.BooleanField()
    error = serializers.CharField(allow_null=True)
    durationMs = serializers.IntegerField()


class StepJournalSerializer(SuccessSerializer):
    entries = JournalEntrySerializer(many=True, help_text="Oldest first.")
    next = serializers.IntegerField(allow_null=True, help_text="The `since` of the next page.")
    more = serializers.BooleanField(help_text="Whether rows after this page exist already.")


def single_container_app_answers(*, locks: bool) -> Answers:
    """POST /v1/apps/:appId/(stop|start); only stop takes the update locks."""
    return (
        answer(200, "The container's id, after the action.", json=ContainerIdSerializer)
        | answer(
            400,
            "Text: `Invalid app id`; the app has no container (`App not found: …`); or it has more than "
            f"one service (`serviceName or imageId parameters were not provided…`). JSON: {MALFORMED_BODY}.",
            text=True,
            json=FailureSerializer,
        )
        | unauthorized_or_out_of_scope("Unauthorized", text=True)
        | answer(
            404,
            "`Service does not exist in target release` (or the container vanished during the action).",
            text=True,
        )
        | UNSUPPORTED_BODY
        | (LOCKED if locks else {})
        | unexpected()
    )


def service_action_answers(*, locks: bool) -> Answers:
    """POST /v2/applications/:appId/(restart|stop|start)-service; start takes no lock."""
    return (
        answer(200, "`OK` once done.", text=True)
        | answer(
            400,
            "Text: neither serviceName nor imageId given (`serviceName or imageId parameters were not "
            f"provided…`). JSON: `Invalid app id`, or {MALFORMED_BODY}.",
            text=True,
            json=FailureSerializer,
        )
        | unauthorized_or_out_of_scope("Unauthorized")
        | answer(
            404,
            "The app has no container (`App not found: …`); no container of the service (`Service not "
            "found, a container must exist for this endpoint to work`); or the service is not in the "
            "target (`Service does not exist in target release…`).",
            text=True,
        )
        | (LOCKED if locks else {})
        | unexpected()
    )


# --- the rate limit of the disruptive actions (apps_api/action_limit.py) -----------------------


def document_action_limits(result: dict[str, Any], **_: Any) -> dict[str, Any]:
    """drf-spectacular post-processing hook: a 429 answer on every rate-limited operation,
    from the same table the limit uses, so the two cannot drift."""
    for method, route in DISRUPTIVE_ACTIONS:
        openapi_path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
        operation = result["paths"].get(openapi_path, {}).get(method.lower())
        if operation is not None:
            operation["responses"]["429"] = {
                "description": "This key's holder already made SUPERVISOR_ACTION_RATE_LIMIT disruptive "
                "actions (default 6) in the last minute; nothing was done. In the route's error format.",
                "headers": {
                    "Retry-After": {"schema": {"type": "integer"}, "description": "Whole seconds to wait."}
                },
                "content": {
                    TEXT: {"schema": {"type": "string"}},
                    JSON: {"schema": {"$ref": "#/components/schemas/Failure"}},
                },
            }
    return result
