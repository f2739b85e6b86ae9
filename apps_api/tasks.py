"""Celery entry points: each is a thin call into the module that does the work.

Task names are explicit strings, so modules can move without stranding queued tasks.
Only the actions façade sends these tasks by reference; everything else asks for an apply
through `apply.single_flight.schedule_apply`, which sends it by name.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings

from apps_api import apply_status
from apps_api.apply import app_actions
from apps_api.apply.journal import JournalObserver
from apps_api.apply.loop import run_requested_applies
from apps_api.apply.probation import trial_pending
from apps_api.apply.single_flight import forget_the_dead_workers_apply, schedule_apply
from apps_api.cloud.poll import cloud_tick as tick
from apps_api.cloud.poll import reset_at_start
from apps_api.engine.causes import Cause
from apps_api.engine.locks import UpdatesLocked, prepare_lock_tree
from apps_api.engine.temporary_stops import start_temporarily_stopped
from apps_api.health import scheduler_ran
from apps_api.host_ops.host_config import change_host_config
from apps_api.host_ops.power import run_power_action
from apps_api.logs.publisher import system_log
from apps_api.redis_store import redis_client, send_reply
from apps_api.service_changes import restore_last_changes
from apps_api.target.preload import load_preloaded_apps
from apps_api.task_outcomes import answer_with_outcome
from hostcfg.blink import blink_led
from hostcfg.host_config import parse_host_config_patch

logger = logging.getLogger(__name__)


@shared_task(name="apps_api.apply_target_state", ignore_result=False)
def apply_target_state() -> bool:
    """Run pending applies single-flight; False when another apply already runs them."""
    return run_requested_applies()


@shared_task(name="apps_api.review_releases", ignore_result=True)
def review_releases() -> None:
    """A release's probation window has ended: apply (which reviews it), if it still is on probation."""
    if trial_pending():
        schedule_apply()


@worker_ready.connect
def resume_applying(**_: object) -> None:
    system_log("Supervisor starting")  # the original's first line at each start
    # One worker drives the device: whatever a previous worker left running is over.
    forget_the_dead_workers_apply()
    apply_status.forget_progress()
    if os.environ.get("SUPERVISOR_WORKER_BEAT") == "1":
        scheduler_ran()  # this worker schedules: /v1/healthy expects a tick at least every minute
    reset_at_start()
    try:
        restore_last_changes()
    except Exception:  # lastChange stays absent until the next change; applying matters more
        logger.exception("last changes not restored from the journal")
    prepare_lock_tree(Path(settings.SUPERVISOR_HOST_ROOT))
    start_temporarily_stopped()
    try:
        load_preloaded_apps()
    except Exception as exc:  # the cloud tick tries again
        logger.warning("preloaded apps not loaded yet: %s", exc)
    schedule_apply()


def _api_cause(route: str, scope: str) -> Cause | None:
    return Cause("api", route=route, scope=scope) if route else None


@shared_task(name="apps_api.service_action", ignore_result=True)
def service_action(
    action: str,
    app_id: int,
    service_name: str,
    force: bool = False,
    temporary: bool = False,
    route: str = "",
    scope: str = "",
    reply_key: str = "",
) -> str:
    """restart, stop or start one service; replies with its container id on `reply_key`. A
    `temporary` stop ends when the worker next starts. `route` and `scope`: the API call
    that asked, journaled."""

    observer, cause = JournalObserver(), _api_cause(route, scope)

    def act() -> str:
        if action == "restart":
            return app_actions.restart_service(
                app_id, service_name, force=force, observer=observer, cause=cause
            )
        if action == "stop":
            return app_actions.stop_service(
                app_id, service_name, force=force, temporary=temporary, observer=observer, cause=cause
            )
        if action == "start":
            return app_actions.start_service(app_id, service_name, observer=observer, cause=cause)
        raise ValueError(f"unknown service action {action!r}")

    return answer_with_outcome(reply_key, act)


@shared_task(name="apps_api.app_action", ignore_result=True)
def app_action(
    action: str, app_id: int, force: bool = False, route: str = "", scope: str = "", reply_key: str = ""
) -> None:
    """restart or purge one app, replying on `reply_key` when done; `route` and `scope` as for
    service_action."""

    cause = _api_cause(route, scope)

    def act() -> None:
        if action == "restart":
            app_actions.restart_app(app_id, force=force, observer=JournalObserver(), cause=cause)
        elif action == "purge":
            app_actions.purge_app(app_id, force=force, observer=JournalObserver(), cause=cause)
        else:
            raise ValueError(f"unknown app action {action!r}")

    answer_with_outcome(reply_key, act)


@shared_task(name="apps_api.cloud_tick", ignore_result=True)
def cloud_tick() -> None:
    """Provision, or poll the cloud's target state when due (a no-op when unmanaged)."""
    scheduler_ran()
    tick()


@shared_task(name="apps_api.host_config_change", ignore_result=True)
def host_config_change(body: object, reply_key: str = "") -> None:
    """PATCH /v1/device/host-config: the body is validated again here, where it is applied;
    replies on `reply_key` when done."""

    def act() -> None:
        change_host_config(parse_host_config_patch(body))

    answer_with_outcome(reply_key, act)


@shared_task(name="apps_api.power_action")
def power_action(kind: str, force: bool, reply_key: str) -> None:
    """reboot or shutdown; replies to the request once every lock is held, or with the refusal."""

    accepted = False

    def accept() -> None:
        nonlocal accepted
        accepted = True
        send_reply(reply_key, {"accepted": True})

    try:
        run_power_action("reboot" if kind == "reboot" else "shutdown", force=force, accepted=accept)
    except Exception as exc:
        if not accepted:
            send_reply(
                reply_key, {"accepted": False, "locked": isinstance(exc, UpdatesLocked), "error": str(exc)}
            )
        raise


@shared_task(name="hostcfg.blink", ignore_result=True)
def blink(lock_key: str) -> None:
    """Blink the identify LED, then let the next POST /v1/blink through."""
    try:
        blink_led(settings.SUPERVISOR_LED_FILE, seconds=settings.SUPERVISOR_BLINK_SECONDS)
    finally:
        redis_client().delete(lock_key)
