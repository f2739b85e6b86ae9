"""Why did it restart? The journal of what was done to services and why: one StepRecord
row per step, crash or lock override with its cause (engine/causes.py); each service's
last change kept in Redis beside its status, so the state answers read it with the rest of
the snapshot; and the paged read of GET /v2/journal."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from apps_api import apply_status
from apps_api.apikeys import ApiAccess, check_scope
from apps_api.engine.causes import Cause, crash_cause, lock_override_cause
from apps_api.models import StepRecord

# Rows that tell a service's last change; a planner's plain start ("not running") does not,
# so the reason a container was replaced stays its last change once the new one runs.
LAST_CHANGE_KINDS = frozenset({"kill", "stop", "handover", "crash"})
JOURNAL_PAGE_DEFAULT = 100
JOURNAL_PAGE_MAX = 1000


def record(
    *,
    kind: str,
    app_id: int | None,
    service_name: str,
    reason: str,
    cause: Cause | None,
    succeeded: bool = True,
    error: str = "",
    duration_ms: int = 0,
) -> StepRecord:
    """Journal one thing done to the device; a successful change of a service also becomes
    that service's last change."""
    row = StepRecord.objects.create(
        kind=kind,
        app_id=app_id,
        service_name=service_name,
        reason=reason[:255],
        cause=cause.as_json() if cause else {},
        succeeded=succeeded,
        error=error,
        duration_ms=duration_ms,
    )
    if succeeded and app_id is not None and service_name and _tells_last_change(kind, row.cause):
        apply_status.set_last_changes({apply_status.service_key(app_id, service_name): last_change(row)})
    return row


def record_crash(app_id: int, service_name: str, exit_code: int | None) -> None:
    """A container that exited without the supervisor asking."""
    cause = crash_cause(exit_code)
    record(kind="crash", app_id=app_id, service_name=service_name, reason=cause.text, cause=cause)


def record_lock_override(app_id: int, services: tuple[str, ...]) -> None:
    """User update locks of `services` removed by force (force=true or the lock override setting)."""
    for service_name in services:
        cause = lock_override_cause((service_name,))
        record(kind="lockOverride", app_id=app_id, service_name=service_name, reason=cause.text, cause=cause)


def record_lock_overrides(taken: dict[int, tuple[str, ...]]) -> None:
    """What `UpdateLocks.locked` yields: by app, the services whose user locks it removed."""
    for app_id, services in taken.items():
        record_lock_override(app_id, services)


def _tells_last_change(kind: str, cause: dict[str, Any]) -> bool:
    return kind in LAST_CHANGE_KINDS or cause.get("type") == "api"


def action_of(row: StepRecord) -> str:
    """What the row did, as a person says it: a kill that replaces a container is a recreate."""
    if row.kind == "kill" and row.cause.get("type") == "update":
        return "recreate"
    return row.kind


def _time(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def last_change(row: StepRecord) -> dict[str, Any]:
    """A service's `lastChange` in GET /v2/applications/state."""
    return {"at": _time(row.created_at), "action": action_of(row), "reason": row.reason}


def restore_last_changes() -> None:
    """At worker start, when Redis lost them: each service's last change, from the journal."""
    if apply_status.has_last_changes():
        return
    changes: dict[str, dict[str, Any]] = {}
    for row in (
        StepRecord.objects.filter(succeeded=True, app_id__isnull=False).exclude(service_name="").iterator()
    ):
        key = apply_status.service_key(row.app_id or 0, row.service_name)
        if key not in changes and _tells_last_change(row.kind, row.cause):
            changes[key] = last_change(row)  # rows come newest first
    apply_status.set_last_changes(changes)


@dataclass(frozen=True)
class JournalQuery:
    """GET /v2/journal's parameters: `since` is a row id (rows after it) or a time (rows
    from it on); rows come oldest first, at most `limit`."""

    app_id: int | None = None
    since_id: int = 0
    since_time: datetime | None = None
    limit: int = JOURNAL_PAGE_DEFAULT


def journal_page(query: JournalQuery, *, access: ApiAccess) -> dict[str, Any]:
    """One page of the journal in the key's scope; `next` is the `since` of the following
    page (the last row's id; the cursor given when the page is empty), `more` whether rows
    after this page exist already. Called by: GET /v2/journal."""
    rows = StepRecord.objects.filter(id__gt=query.since_id)
    if query.app_id is not None:
        check_scope(access, query.app_id)
        rows = rows.filter(app_id=query.app_id)
    elif not access.all_apps:
        rows = rows.filter(app_id__in=sorted(access.app_ids))
    if query.since_time is not None:
        rows = rows.filter(created_at__gte=query.since_time)
    page = list(rows.order_by("id")[: query.limit + 1])
    more = len(page) > query.limit
    page = page[: query.limit]
    cursor = page[-1].id if page else (query.since_id or None)
    return {"status": "success", "entries": [_entry(row) for row in page], "next": cursor, "more": more}


def _entry(row: StepRecord) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": _time(row.created_at),
        "appId": row.app_id,
        "serviceName": row.service_name or None,
        "action": action_of(row),
        "reason": row.reason,
        "cause": row.cause or None,
        "succeeded": row.succeeded,
        "error": row.error or None,
        "durationMs": row.duration_ms,
    }
