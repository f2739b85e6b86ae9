"""The audit log: what is kept (30 days, 10 000 rows), paging through it, and that a record
that cannot be written never fails the action."""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from apps_api.apikeys import KeyHolder
from apps_api.audit import (
    PRUNE_EVERY,
    ApiAction,
    is_action,
    prune_action_records,
    read_action_records,
    record_action,
)
from apps_api.models import ActionRecord

pytestmark = pytest.mark.django_db

RESTART = ApiAction(
    holder=KeyHolder(kind="service", app_id=1, service_name="main"),
    method="POST",
    path="/v2/applications/1/restart-service",
    status_code=200,
    result="OK",
)


def records_made(ages_in_days: list[float], now: datetime) -> list[int]:
    """One record per age, oldest first; their ids."""
    ids = []
    for age in ages_in_days:
        record_action(RESTART)
        newest = ActionRecord.objects.order_by("-id").first()
        assert newest is not None
        ActionRecord.objects.filter(pk=newest.pk).update(created_at=now - timedelta(days=age))
        ids.append(newest.pk)
    return ids


def remaining_ids() -> list[int]:
    return sorted(ActionRecord.objects.values_list("id", flat=True))


def test_records_older_than_30_days_are_pruned() -> None:
    now = timezone.now()
    _old, month_old, recent = records_made([31, 29.9, 0], now)

    assert prune_action_records(now=now) == 1
    assert remaining_ids() == [month_old, recent]


def test_only_the_newest_rows_are_kept() -> None:
    now = timezone.now()
    ids = records_made([0] * 5, now)

    assert prune_action_records(now=now, keep_rows=3) == 2
    assert remaining_ids() == ids[2:]


def test_a_flood_of_other_rows_never_pushes_out_a_disruptive_action_that_went_through() -> None:
    """Security review, L8: an app could erase the record of its own reboot with cheap 400s."""
    now = timezone.now()
    record_action(dataclasses.replace(RESTART, disruptive=True))
    [reboot] = remaining_ids()
    records_made([0] * 5, now)

    prune_action_records(now=now, keep_rows=3)

    assert reboot in remaining_ids()
    assert ActionRecord.objects.filter(disruptive=False).count() == 3


def test_inserts_prune_by_themselves_every_hundred_rows() -> None:
    now = timezone.now()
    [stale] = records_made([40], now)
    for _ in range(PRUNE_EVERY):
        record_action(RESTART)

    assert stale not in remaining_ids()
    assert ActionRecord.objects.count() > 0


def test_a_record_that_cannot_be_written_is_logged_and_does_not_raise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    impossible = ApiAction(
        holder=KeyHolder(kind="global"), method="POST", path="/v1/reboot", status_code=-1, result=""
    )
    with caplog.at_level(logging.ERROR, logger="apps_api.audit"):
        record_action(impossible)

    assert "could not add to the audit log: POST /v1/reboot → -1" in caplog.text
    assert ActionRecord.objects.count() == 0


def test_a_record_keeps_whose_key_and_never_more_than_a_short_result() -> None:
    record_action(
        ApiAction(holder=RESTART.holder, method="POST", path="/v1/purge", status_code=423, result="x" * 500)
    )
    [record] = read_action_records(limit=10)

    assert (record.key_kind, record.app_id, record.service_name) == ("service", 1, "main")
    assert (record.method, record.path, record.status_code) == ("POST", "/v1/purge", 423)
    assert len(record.result) == 200


def test_pages_go_from_newest_to_oldest_and_since_leaves_out_older_records() -> None:
    now = timezone.now()
    ids = records_made([3, 2, 1, 0], now)

    first_page = read_action_records(limit=2)
    second_page = read_action_records(limit=2, before=first_page[-1].pk)
    recent = read_action_records(limit=10, since=now - timedelta(days=1, hours=1))

    assert [r.pk for r in first_page] == [ids[3], ids[2]]
    assert [r.pk for r in second_page] == [ids[1], ids[0]]
    assert [r.pk for r in recent] == [ids[3], ids[2]]


@pytest.mark.parametrize(
    ("method", "route", "recorded"),
    [
        ("POST", "v2/applications/<str:app_id>/start-service", True),
        ("POST", "v1/blink", True),
        ("PATCH", "v2/device/tags", True),
        ("GET", "v2/cleanup-volumes", True),  # a read by its method that removes volumes
        ("GET", "v2/applications/state", False),
        ("GET", "v2/audit", False),
    ],
)
def test_every_action_is_recorded_and_reads_are_not(method: str, route: str, recorded: bool) -> None:
    assert is_action(method, route) is recorded


def test_the_admin_lists_the_audit_log_and_cannot_change_it(admin_client: Client) -> None:
    record_action(RESTART)
    listing = admin_client.get("/admin/apps_api/actionrecord/")

    assert listing.status_code == 200
    assert "/v2/applications/1/restart-service" in listing.content.decode()
    assert admin_client.get("/admin/apps_api/actionrecord/add/").status_code == 403
    record = ActionRecord.objects.get()
    assert (
        admin_client.post(f"/admin/apps_api/actionrecord/{record.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert ActionRecord.objects.count() == 1
