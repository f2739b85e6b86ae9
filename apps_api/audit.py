"""The audit log of the device API: every action an app (with its service key) or the cloud
(with the global key) asks for, or a local-mode client without a key, with when, whose key,
the route, the status code and a short result. Reads are not actions and are not recorded.

Kept for KEEP_DAYS days and at most KEEP_ROWS rows of disruptive actions that went through
and KEEP_ROWS of the others: every PRUNE_EVERY rows the insert deletes what is older or
beyond, so no process of its own is needed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q

from apps_api.apikeys import KeyHolder
from apps_api.models import ActionRecord

logger = logging.getLogger(__name__)

KEEP_DAYS = 30
KEEP_ROWS = 10_000
PRUNE_EVERY = 100
RESULT_LENGTH = 200

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Reads by method that act all the same (method, route pattern as in apps_api/api/urls.py).
# HEAD runs the GET view (Django), so it acts the same.
ACTING_READS = frozenset({("GET", "v2/cleanup-volumes"), ("HEAD", "v2/cleanup-volumes")})


def is_action(method: str, route: str) -> bool:
    """Whether a request to `route` (a URL pattern) with `method` is an action to record."""
    return method not in READ_METHODS or (method, route) in ACTING_READS


@dataclass(frozen=True)
class ApiAction:
    """One answered action, as the audit log keeps it."""

    holder: KeyHolder
    method: str
    path: str
    status_code: int
    result: str
    disruptive: bool = False
    """A disruptive action (action_limit.py) that went through."""


def record_action(action: ApiAction) -> None:
    """Add `action` to the audit log. Never raises: a log that cannot be written must not
    fail (or undo) the action it describes; the failure is logged instead."""
    try:
        # Its own (inner) transaction: a failed insert must not spoil the caller's.
        with transaction.atomic():
            row = ActionRecord.objects.create(
                key_kind=action.holder.kind,
                app_id=action.holder.app_id,
                service_name=action.holder.service_name,
                method=action.method[:8],
                path=action.path[:255],
                status_code=action.status_code,
                result=action.result[:RESULT_LENGTH],
                disruptive=action.disruptive,
            )
        if row.pk % PRUNE_EVERY == 0:
            prune_action_records(now=row.created_at)
    except Exception:
        logger.exception(
            "could not add to the audit log: %s %s → %s", action.method, action.path, action.status_code
        )


def prune_action_records(*, now: datetime, keep_days: int = KEEP_DAYS, keep_rows: int = KEEP_ROWS) -> int:
    """Delete the records older than `keep_days` before `now` and, of the disruptive actions
    that went through and of the other records apart, all but the newest `keep_rows`: cheap
    actions or refusals, however many, never push out a reboot or a purge. Returns how many
    were deleted."""
    stale = Q(created_at__lt=now - timedelta(days=keep_days))
    for disruptive in (True, False):
        group = ActionRecord.objects.filter(disruptive=disruptive).order_by("-id")
        oldest_kept = group.values_list("id", flat=True)[keep_rows - 1 : keep_rows].first()
        if oldest_kept is not None:
            stale |= Q(disruptive=disruptive, id__lt=oldest_kept)
    deleted, _ = ActionRecord.objects.filter(stale).delete()
    return deleted


def read_action_records(
    *, limit: int, before: int | None = None, since: datetime | None = None
) -> list[ActionRecord]:
    """Up to `limit` records, newest first: those with an id below `before` (the next page)
    and at or after `since`, when given."""
    records = ActionRecord.objects.all()
    if before is not None:
        records = records.filter(id__lt=before)
    if since is not None:
        records = records.filter(created_at__gte=since)
    return list(records.order_by("-id")[:limit])
