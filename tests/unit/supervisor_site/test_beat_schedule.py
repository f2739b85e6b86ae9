"""The agent's beat scheduler: the cloud tick is due as the worker starts (a device is
provisioned, or polls, at once), then every 5 s as Celery's own scheduler keeps it."""

from __future__ import annotations

from celery.beat import Scheduler

from supervisor_site.celery import DueAtStart, app


def test_the_cloud_tick_is_due_at_start_then_every_5_seconds() -> None:
    scheduler = DueAtStart(app, lazy=False)
    tick = scheduler.schedule["cloud-tick"]  # type: ignore[attr-defined]  # missing from celery-types
    assert tick.is_due() == (True, 5.0)
    assert not tick.next().is_due().is_due  # once run, due again a period later
    celerys_own = Scheduler(app, lazy=False).schedule["cloud-tick"]  # type: ignore[attr-defined]
    assert not celerys_own.is_due().is_due
