"""Celery entry points for the engine; each is a thin call into apps_api.engine."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_ready

from apps_api.engine.apply import clear_stale_apply_lock, request_apply, run_requested_applies

logger = logging.getLogger(__name__)


@shared_task(name="apps_api.apply_target_state", ignore_result=False)
def apply_target_state() -> bool:
    """Run pending applies single-flight; False when another apply already runs them."""
    return run_requested_applies()


@worker_ready.connect
def resume_applying(**_: object) -> None:
    from apps_api.cloud_poll import reset_at_start
    from apps_api.engine.temporary_stops import start_temporarily_stopped
    from apps_api.preload import load_preloaded_apps

    # One worker drives the device: an apply lock it finds is a killed worker's leftover.
    clear_stale_apply_lock()
    reset_at_start()
    start_temporarily_stopped()
    try:
        load_preloaded_apps()
    except Exception as exc:  # the cloud tick tries again
        logger.warning("preloaded apps not loaded yet: %s", exc)
    request_apply()
    apply_target_state.delay()


@shared_task(name="apps_api.service_action")
def service_action(
    action: str, app_id: int, service_name: str, force: bool = False, temporary: bool = False
) -> str:
    """restart, stop or start one service; returns its container id. A `temporary` stop
    ends when the worker next starts."""
    from apps_api.engine import app_actions
    from apps_api.engine.apply import JournalObserver

    observer = JournalObserver()
    if action == "restart":
        return app_actions.restart_service(app_id, service_name, force=force, observer=observer)
    if action == "stop":
        return app_actions.stop_service(
            app_id, service_name, force=force, temporary=temporary, observer=observer
        )
    if action == "start":
        return app_actions.start_service(app_id, service_name, observer=observer)
    raise ValueError(f"unknown service action {action!r}")


@shared_task(name="apps_api.app_action")
def app_action(action: str, app_id: int, force: bool = False) -> None:
    """restart or purge one app."""
    from apps_api.engine import app_actions
    from apps_api.engine.apply import JournalObserver

    if action == "restart":
        app_actions.restart_app(app_id, force=force, observer=JournalObserver())
    elif action == "purge":
        app_actions.purge_app(app_id, force=force, observer=JournalObserver())
    else:
        raise ValueError(f"unknown app action {action!r}")


@shared_task(name="apps_api.cloud_tick", ignore_result=True)
def cloud_tick() -> None:
    """Provision, or poll the cloud's target state when due (a no-op when unmanaged)."""
    from apps_api.cloud_poll import cloud_tick as tick

    tick()


@shared_task(name="apps_api.host_config_change")
def host_config_change(body: object) -> None:
    """PATCH /v1/device/host-config: the body is validated again here, where it is applied."""
    from apps_api.engine.host_config_change import change_host_config
    from hostcfg.host_config import parse_host_config_patch

    change_host_config(parse_host_config_patch(body))


@shared_task(name="apps_api.power_action")
def power_action(kind: str, force: bool, reply_key: str) -> None:
    """reboot or shutdown; replies to the request once every lock is held, or with the refusal."""
    from apps_api.engine.host_power import run_power_action
    from apps_api.engine.locks import UpdatesLocked
    from apps_api.task_replies import send_reply

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
