"""What the device API asks of one app or service, run in the worker (where the
update-lock registry lives): restart, stop and start of a service; restart and purge of
an app. Each takes the app's locks as docs/locks.md "Locks around an action" says,
except start, which disrupts nothing; restart and purge also pre-empt the apply loop."""

from __future__ import annotations

from dataclasses import dataclass

from apps_api.apply.device_context import device_context
from apps_api.apply.loop import converge
from apps_api.apply.single_flight import exclusive_apply
from apps_api.device_settings import lock_override
from apps_api.engine.causes import Cause
from apps_api.engine.current import read_current_state
from apps_api.engine.executor import Executor, StepObserver
from apps_api.engine.locks import update_locks
from apps_api.engine.state import AppSpec, CurrentService, ServiceSpec, Step, TargetState
from apps_api.engine.temporary_stops import forget_temporary_stop, remember_temporary_stops
from apps_api.logs.publisher import system_log
from apps_api.service_changes import record_lock_overrides
from apps_api.target.store import load_target


class ServiceGone(Exception):
    """The service has no container or is not in the target any more."""


@dataclass(frozen=True)
class _Service:
    target: TargetState
    app: AppSpec
    spec: ServiceSpec
    container: CurrentService | None


def _find(app_id: int, service_name: str) -> _Service:
    loaded = load_target()
    app = next((a for a in loaded[0].apps if a.app_id == app_id), None) if loaded else None
    spec = app.service(service_name) if app else None
    if loaded is None or app is None or spec is None:
        raise ServiceGone(f"Service does not exist in target release: {service_name}")
    containers = [
        s
        for s in read_current_state().services
        if s.app_id == app_id and s.service_name == service_name and not s.container_name.startswith("old_")
    ]
    newest = max(containers, key=lambda c: c.created_at) if containers else None
    return _Service(loaded[0], app, spec, newest)


def _executor(found: _Service, observer: StepObserver) -> Executor:
    return Executor(device=device_context(found.target), locks=update_locks(), observer=observer)


def restart_service(
    app_id: int, service_name: str, *, force: bool, observer: StepObserver, cause: Cause | None = None
) -> str:
    """Kill the service's container and start a new one; returns the new container's id.
    `cause`: who asked (journaled with each step)."""
    found = _find(app_id, service_name)
    executor = _executor(found, observer)
    why = _reason(cause, "restart requested")
    with update_locks().locked(
        executor.host_root, [app_id], force=force or lock_override(found.target)
    ) as overridden:
        record_lock_overrides(overridden)
        if found.container is not None:
            executor.run_step(Step("kill", app_id=app_id, current=found.container, reason=why, cause=cause))
        executor.run_step(
            Step("start", app_id=app_id, app=found.app, target=found.spec, reason=why, cause=cause)
        )
    return _container_id(app_id, service_name)


def _reason(cause: Cause | None, default: str) -> str:
    return cause.text if cause is not None else default


def stop_service(
    app_id: int,
    service_name: str,
    *,
    force: bool,
    temporary: bool = False,
    observer: StepObserver,
    cause: Cause | None = None,
) -> str:
    """Stop the service's container without removing it; returns its id. A `temporary`
    stop (v1) ends when the worker next starts (engine/temporary_stops.py)."""
    found = _find(app_id, service_name)
    if found.container is None:
        raise ServiceGone("Service not found, a container must exist for this endpoint to work")
    executor = _executor(found, observer)
    why = _reason(cause, "stop requested")
    with update_locks().locked(
        executor.host_root, [app_id], force=force or lock_override(found.target)
    ) as overridden:
        record_lock_overrides(overridden)
        executor.run_step(Step("stop", app_id=app_id, current=found.container, reason=why, cause=cause))
    if temporary:
        remember_temporary_stops([found.container.container_id])
    else:
        forget_temporary_stop(found.container.container_id)
    return found.container.container_id


def start_service(
    app_id: int, service_name: str, *, observer: StepObserver, cause: Cause | None = None
) -> str:
    """Start the service's container, creating it if missing; returns its id."""
    found = _find(app_id, service_name)
    executor = _executor(found, observer)
    if found.container is not None:
        forget_temporary_stop(found.container.container_id)
    executor.run_step(
        Step("start", app_id=app_id, app=found.app, current=found.container, target=found.spec,
             reason=_reason(cause, "start requested"), cause=cause)
    )  # fmt: skip
    return _container_id(app_id, service_name)


def _container_id(app_id: int, service_name: str) -> str:
    found = _find(app_id, service_name)
    if found.container is None:
        raise ServiceGone(f"no container of {service_name} after the action")
    return found.container.container_id


class AppNotRunning(Exception):
    """The app has no container to restart or purge."""


def restart_app(app_id: int, *, force: bool, observer: StepObserver, cause: Cause | None = None) -> None:
    """Kill every container of the app, then converge: it starts again from its target."""
    _recreate_app(app_id, force=force, observer=observer, purge=False, cause=cause)


def purge_app(app_id: int, *, force: bool, observer: StepObserver, cause: Cause | None = None) -> None:
    """As restart, and the app's named volumes come back empty. Other apps' volumes and
    the images are kept."""
    _recreate_app(app_id, force=force, observer=observer, purge=True, cause=cause)


def _recreate_app(
    app_id: int, *, force: bool, observer: StepObserver, purge: bool, cause: Cause | None
) -> None:
    loaded = load_target()
    target = loaded[0] if loaded else None
    current = read_current_state()
    containers = [c for c in current.services if c.app_id == app_id]
    if target is None or not containers:
        raise AppNotRunning(f"Application with ID {app_id} is not in the current state")
    executor = Executor(device=device_context(target), locks=update_locks(), observer=observer)
    with exclusive_apply():
        with update_locks().locked(
            executor.host_root, [app_id], force=force or lock_override(target)
        ) as overridden:
            record_lock_overrides(overridden)
            if purge:
                system_log(f"Purging data for app {app_id}")
            why = _reason(cause, "restart requested")
            kills = [Step("kill", app_id=app_id, current=c, reason=why, cause=cause) for c in containers]
            _raise_first(executor.run_round(kills))
            if purge:
                volumes = [v for v in current.volumes if v.app_id == app_id]
                removals = [
                    Step(
                        "removeVolume",
                        app_id=app_id,
                        current_volume=v,
                        reason=_reason(cause, "purge requested"),
                        cause=cause,
                    )
                    for v in volumes
                ]
                _raise_first(executor.run_round(removals))
        # With nothing of the app left running, the engine starts it as a fresh install.
        result = converge(force=force)
        if purge:
            system_log("Purged data")
    if not result.converged:
        raise RuntimeError(f"app {app_id} did not converge after the {'purge' if purge else 'restart'}")


def _raise_first(outcomes: list) -> None:  # type: ignore[type-arg]
    for outcome in outcomes:
        if outcome.error is not None:
            raise outcome.error
