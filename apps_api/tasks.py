"""Celery entry points for the engine; each is a thin call into apps_api.engine."""

from __future__ import annotations

from celery import shared_task
from celery.signals import worker_ready

from apps_api.engine.apply import clear_stale_apply_lock, request_apply, run_requested_applies


@shared_task(name="apps_api.apply_target_state", ignore_result=False)
def apply_target_state() -> bool:
    """Run pending applies single-flight; False when another apply already runs them."""
    return run_requested_applies()


@worker_ready.connect
def resume_applying(**_: object) -> None:
    # One worker drives the device: an apply lock it finds is a killed worker's leftover.
    clear_stale_apply_lock()
    request_apply()
    apply_target_state.delay()
