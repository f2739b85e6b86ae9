"""The device API's side of the audit log (apps_api/audit.py): the view wrapper that records
every answered action, and GET /v2/audit."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps_api.action_limit import is_disruptive
from apps_api.api import parsing
from apps_api.api.auth import access_of
from apps_api.api.schemas import AuditPageSerializer, FailureSerializer, answer, unexpected
from apps_api.apikeys import ApiAccess
from apps_api.audit import ApiAction, is_action, read_action_records, record_action
from apps_api.errors import NotInScope
from apps_api.models import ActionRecord

AUDIT_PAGE_DEFAULT = 100
AUDIT_PAGE_MAX = 1000


def audited(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """`view`, recording each action it answers for a caller with a valid key."""

    @functools.wraps(view)  # keeps `cls` and `csrf_exempt`, which DRF and the schema read
    def audited_view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = view(request, *args, **kwargs)
        method, match = request.method or "", request.resolver_match
        # DRF sets `auth` on the Django request too; absent or None when no key was accepted.
        access = getattr(request, "auth", None)
        if match is not None and isinstance(access, ApiAccess) and is_action(method, match.route):
            record_action(
                ApiAction(
                    holder=access.holder,
                    method=method,
                    path=request.path,
                    status_code=response.status_code,
                    result=result_message(response),
                    disruptive=is_disruptive(method, match.route) and response.status_code < 400,
                )
            )
        return response

    return audited_view


def result_message(response: HttpResponseBase) -> str:
    """A short result for the audit log: the reason phrase of a success (a success's body can
    be a secret: the regenerated key), the message of a failure."""
    if response.status_code < 400 or response.streaming:
        return response.reason_phrase
    body: Any = getattr(response, "data", None)  # a DRF answer, not rendered yet
    if body is None and getattr(response, "is_rendered", True):
        content = getattr(response, "content", b"").decode(errors="replace")
        body = content
        if response.get("Content-Type", "").startswith("application/json"):
            with contextlib.suppress(ValueError):  # not JSON after all: the text is the message
                body = json.loads(content)
    if isinstance(body, dict):
        body = body.get("message") or body.get("Error") or ""
    text = str(body or "").strip()
    return text.splitlines()[0] if text else response.reason_phrase


class AuditView(APIView):
    """GET /v2/audit: the audit log, newest first, a page at a time (global key only)."""

    @extend_schema(
        summary="The audit log of API actions (global key only)",
        parameters=[
            OpenApiParameter(
                "limit",
                OpenApiTypes.INT,
                description=f"At most this many records (1 to {AUDIT_PAGE_MAX}; "
                f"default {AUDIT_PAGE_DEFAULT}).",
            ),
            OpenApiParameter(
                "before",
                OpenApiTypes.INT,
                description="Only records with a smaller id: pass the previous page's `nextBefore`.",
            ),
            OpenApiParameter(
                "since",
                OpenApiTypes.DATETIME,
                description="Only records at or after this ISO 8601 time (UTC when no offset is given).",
            ),
        ],
        responses=answer(200, "The records, newest first.", json=AuditPageSerializer)
        | answer(400, "A bad `limit`, `before` or `since` (`Invalid <field>: …`).", json=FailureSerializer)
        | answer(401, "No valid key, or a key of an app's service: `Unauthorized`.", text=True)
        | unexpected(),
    )
    def get(self, request: Request) -> Response:
        if not access_of(request).all_apps:
            raise NotInScope("Unauthorized", text=True)
        query = request.query_params
        limit = parsing.query_count(
            query.get("limit"), "limit", default=AUDIT_PAGE_DEFAULT, maximum=AUDIT_PAGE_MAX
        )
        records = read_action_records(
            limit=limit,
            before=parsing.query_id(query.get("before"), "before"),
            since=parsing.query_time(query.get("since"), "since"),
        )
        next_before = records[-1].pk if len(records) == limit else None
        return Response(
            {"status": "success", "actions": [audit_entry(r) for r in records], "nextBefore": next_before}
        )


def audit_entry(record: ActionRecord) -> dict[str, Any]:
    return {
        "id": record.pk,
        "time": record.created_at.isoformat().replace("+00:00", "Z"),
        "scope": record.key_kind,
        "appId": record.app_id,
        "serviceName": record.service_name or None,
        "method": record.method,
        "path": record.path,
        "status": record.status_code,
        "result": record.result,
    }
