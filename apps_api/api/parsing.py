"""Requests parsed at the edge: the path, query and body values the views pass to the
actions become typed values here, or the request is refused with 400 naming the field,
before anything runs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.utils.dateparse import parse_datetime
from rest_framework.request import Request

from apps_api.actions import ServiceSelector
from apps_api.errors import BadRequest
from apps_api.service_changes import JOURNAL_PAGE_DEFAULT, JOURNAL_PAGE_MAX, JournalQuery
from apps_api.target.json_shape import MAX_ID
from hostcfg.values import ascii_int, flag


def body_object(request: Request, *, text: bool = False) -> dict[str, Any]:
    """The body as an object (no body at all is an empty one); JSON that is not an object
    (null, a list, a string…) is refused."""
    data = request.data
    if isinstance(data, dict):
        return data
    raise BadRequest("Invalid request body: expected a JSON object", text=text)


def route(request: Request) -> str:
    """`METHOD /path` of the request, as the journal names an API call's cause."""
    return f"{request.method} {request.path}"


def app_id(raw: object, message: str = "Invalid app id", *, text: bool = False) -> int:
    """A positive app id (ASCII digits, at most 2**53) from a path or body value, else
    BadRequest(`message`)."""
    number = _id(raw)
    if not number:
        raise BadRequest(message, text=text)
    return number


def _id(raw: object) -> int | None:
    """A JSON number or a string of ASCII digits, up to MAX_ID; None otherwise."""
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        return None
    return ascii_int(str(raw), maximum=MAX_ID)


def force(body: dict[str, Any], *, text: bool = False) -> bool:
    return _flag(body, "force", text=text)


def cancel(body: dict[str, Any]) -> bool:
    return _flag(body, "cancel", text=False)


def _flag(body: dict[str, Any], field: str, *, text: bool) -> bool:
    try:
        return flag(body.get(field))
    except ValueError as exc:
        raise BadRequest(f"Invalid {field}: {exc}", text=text) from exc


def service_selector(body: dict[str, Any]) -> ServiceSelector:
    """serviceName (a string) and/or imageId (an integer, or its digits as a string) of the
    v2 service actions; empty values count as absent."""
    name = body.get("serviceName")
    if name is not None and not isinstance(name, str):
        raise BadRequest("Invalid serviceName: expected a string", text=True)
    raw_image = body.get("imageId")
    image_id = None
    if raw_image not in (None, ""):
        image_id = _id(raw_image)
        if image_id is None:
            raise BadRequest("Invalid imageId: expected an integer", text=True)
    return ServiceSelector(service_name=name or None, image_id=image_id)


def query_count(raw: str | None, field: str, *, default: int, maximum: int) -> int:
    """A query parameter that counts something, 1 to `maximum`; `default` when absent."""
    if raw is None or raw == "":
        return default
    number = ascii_int(raw, maximum=maximum)
    if not number:
        raise BadRequest(f"Invalid {field}: expected an integer from 1 to {maximum}")
    return number


def query_id(raw: str | None, field: str) -> int | None:
    """A positive id given as a query parameter; None when absent."""
    if raw is None or raw == "":
        return None
    number = _id(raw)
    if not number:
        raise BadRequest(f"Invalid {field}: expected a positive integer")
    return number


def query_time(raw: str | None, field: str) -> datetime | None:
    """An ISO 8601 time given as a query parameter (UTC when it names no offset); None when absent."""
    if raw is None or raw == "":
        return None
    try:
        parsed = parse_datetime(raw)
    except ValueError:
        parsed = None
    if parsed is None:
        raise BadRequest(f"Invalid {field}: expected an ISO 8601 time, e.g. 2026-01-31T12:00:00Z")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def journal_query(params: Any) -> JournalQuery:
    """GET /v2/journal's `appId`, `since` (a row id, or an ISO 8601 time) and `limit`."""
    app = query_id(params.get("appId"), "appId")
    since = params.get("since") or ""
    since_id, since_time = 0, None
    if since.isascii() and since.isdigit():
        parsed_id = ascii_int(since, maximum=MAX_ID)
        if parsed_id is None:
            raise BadRequest("Invalid since: the row id is too large")
        since_id = parsed_id
    elif since:
        try:
            since_time = query_time(since, "since")
        except BadRequest as exc:
            raise BadRequest("Invalid since: expected a row id or an ISO 8601 time") from exc
    limit = query_count(params.get("limit"), "limit", default=JOURNAL_PAGE_DEFAULT, maximum=JOURNAL_PAGE_MAX)
    return JournalQuery(app_id=app, since_id=since_id, since_time=since_time, limit=limit)
