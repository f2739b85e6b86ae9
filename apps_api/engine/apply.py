"""The apply loop: plan a round, run it, repeat until the target is reached.

Single-flight across the worker's threads and processes: a Redis lock names the one
running apply; a request arriving meanwhile is left in Redis and picked up by that
apply before it lets go. The target is re-read every round, so a new target changes
course at the next round boundary.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from django.conf import settings

from apps_api import apply_status
from apps_api.engine.container_config import DeviceContext, feature_enabled
from apps_api.engine.current import read_current_state
from apps_api.engine.executor import Executor
from apps_api.engine.locks import UpdateLocks, UpdatesLocked
from apps_api.engine.planner import PlanConfig, plan
from apps_api.engine.state import Step, TargetState
from apps_api.logs import LogRecord, now_ms, publish_log_record
from apps_api.metrics import record_apply, record_step

logger = logging.getLogger(__name__)

APPLY_LOCK_KEY = "supervisor:apply:lock"
APPLY_REQUEST_KEY = "supervisor:apply:requested"
APPLY_PREEMPT_KEY = "supervisor:apply:preempt"
# For the engine health check: when the running apply began, and how long it downloaded.
APPLY_STARTED_KEY = "supervisor:apply:started-at"
APPLY_DOWNLOAD_SECONDS_KEY = "supervisor:apply:download-seconds"
EXCLUSIVE_WAIT_SECONDS = 60
# Long enough for the longest round (a hand-over waits up to its timeout); renewed each round.
APPLY_LOCK_SECONDS = 600
BACKOFF_BASE_SECONDS = 0.5
MAX_IDENTICAL_ROUNDS = 5


@cache
def update_locks() -> UpdateLocks:
    """The process's registry of held update locks (engine and synchronous actions share it)."""
    return UpdateLocks()


def request_apply(*, force: bool = False) -> None:
    """Record that the target must be applied; the running apply (or the next) sees it."""
    from supervisor_site.redis_connection import redis_client

    client = redis_client()
    previous: bytes | None = client.getset(APPLY_REQUEST_KEY, json.dumps({"force": force}))  # type: ignore[assignment]
    if previous is not None and json.loads(previous).get("force") and not force:
        client.set(APPLY_REQUEST_KEY, json.dumps({"force": True}))


def run_requested_applies() -> bool:
    """Apply while requests are pending, unless another apply runs (it will see them).

    Returns whether this call did the applying.
    """
    from redis.exceptions import LockError

    from supervisor_site.redis_connection import redis_client

    client = redis_client()
    ran = False
    while client.exists(APPLY_REQUEST_KEY):
        lock = client.lock(APPLY_LOCK_KEY, timeout=APPLY_LOCK_SECONDS, blocking=False)
        if not lock.acquire():
            return ran
        ran = True
        preempted = None
        renewing = threading.Event()
        renewer = threading.Thread(target=_keep_lock, args=(lock, renewing), daemon=True, name="apply-lock")
        renewer.start()
        client.set(APPLY_STARTED_KEY, time.time())
        client.delete(APPLY_DOWNLOAD_SECONDS_KEY)
        try:
            preempted = converge().preempted
        finally:
            client.delete(APPLY_STARTED_KEY)
            renewing.set()
            renewer.join()
            apply_status.set_flags(applying=False)
            try:
                lock.release()
            except LockError:
                logger.warning("the apply lock expired before the apply ended")
        if preempted == "exclusive":
            return ran  # the pre-empting action requests an apply when it is done
    return ran


def cancel_running_apply(reason: str = "cancel") -> None:
    """Make the running apply stop at its next round (or retry wait)."""
    from supervisor_site.redis_connection import redis_client

    if apply_in_progress():
        redis_client().set(APPLY_PREEMPT_KEY, reason, ex=EXCLUSIVE_WAIT_SECONDS)


@contextmanager
def exclusive_apply(wait_seconds: float = EXCLUSIVE_WAIT_SECONDS) -> Iterator[None]:
    """Hold the apply lock for an action that must run alone (restart, purge): the running
    apply is pre-empted at its next round; a normal apply is requested afterwards."""
    from redis.exceptions import LockError

    from supervisor_site.redis_connection import redis_client

    client = redis_client()
    cancel_running_apply("exclusive")
    lock = client.lock(APPLY_LOCK_KEY, timeout=APPLY_LOCK_SECONDS, blocking_timeout=wait_seconds)
    if not lock.acquire():
        raise UpdatesLocked("Locks for the apply are being held by another supervisor operation")
    try:
        client.delete(APPLY_PREEMPT_KEY)
        yield
    finally:
        try:
            lock.release()
        except LockError:
            logger.warning("the apply lock expired during an exclusive action")
        request_apply()
        from apps_api.tasks import apply_target_state

        apply_target_state.delay()


def _keep_lock(lock: Any, stop: threading.Event) -> None:
    """Renew the apply lock while the apply runs, however long a round or a backoff lasts."""
    from redis.exceptions import LockError

    while not stop.wait(APPLY_LOCK_SECONDS / 10):
        try:
            lock.reacquire()
        except LockError:
            logger.warning("lost the apply lock; another apply may start")
            return


def clear_stale_apply_lock() -> None:
    """At worker start: a lock left by a killed worker would block applies for minutes."""
    from supervisor_site.redis_connection import redis_client

    redis_client().delete(APPLY_LOCK_KEY)


def device_context(target: TargetState) -> DeviceContext:
    from apps_api.apikeys import get_or_create_service_key
    from hostcfg.device_type import read_device_type
    from hostcfg.identity import load_device_identity

    identity = load_device_identity()
    slug, arch = read_device_type(Path(settings.SUPERVISOR_BOOT_ROOT))
    keys = {
        f"{app.app_id}/{service.service_name}": get_or_create_service_key(app.app_id, service.service_name)
        for app in target.apps
        for service in app.services
        if feature_enabled(service, "supervisor-api")
    }
    docker_host = settings.DOCKER_HOST
    return DeviceContext(
        uuid=identity.uuid,
        host_root=str(settings.SUPERVISOR_HOST_ROOT),
        docker_socket=docker_host.removeprefix("unix://") if docker_host.startswith("unix://") else "",
        device_type=slug,
        arch=arch,
        device_name=target.name or "",
        api_port=settings.SUPERVISOR_PORT,
        device_api_key=identity.device_api_key,
        api_endpoint=identity.api_endpoint or "",
        service_api_keys=keys,
    )


def poll_interval_seconds(target: TargetState) -> float:
    from apps_api.engine.device_config_steps import device_config

    return device_config(target).poll_interval_ms / 1000


@dataclass
class ConvergeResult:
    rounds: int
    converged: bool
    preempted: str | None = None
    """Why the apply stopped early: "cancel" (POST /v1/update cancel) or "exclusive" (an
    action that must run alone holds the apply lock next)."""


def converge(*, force: bool = False, max_rounds: int | None = None) -> ConvergeResult:
    """Plan and run rounds until no step remains. A failed round (a step, or reading the
    state, failed) backs off exponentially (0.5 s * 2^n, capped at the poll interval) and
    is retried; a new target or apply request ends the wait at once."""
    from apps_api.target_store import load_target

    failures, rounds = 0, 0
    began = time.monotonic()
    seen_record: int | None = None
    repeats, last_signature = 0, None
    requested_force = force
    while max_rounds is None or rounds < max_rounds:
        # This round plans from the newest target, so it answers any request waiting now;
        # only a request arriving during the round cuts the round short.
        if preemption := _take_preemption():
            return ConvergeResult(rounds, False, preempted=preemption)
        request_force = _take_request()
        loaded = load_target()
        if loaded is None:
            return ConvergeResult(rounds, True)
        target, record = loaded
        if record.pk != seen_record:
            failures, seen_record, requested_force = 0, record.pk, force
            _apply_device_config(target)
        requested_force = requested_force or request_force
        rounds += 1
        try:
            steps, errors = _run_round(target, record.force or requested_force, rounds)
        except Exception as exc:  # reading the state failed (engine restarting, Redis down…)
            logger.exception("apply round %d could not run", rounds)
            steps, errors = [], [exc]
        if not steps and not errors:
            apply_status.set_flags(
                applying=False, update_pending=False, update_failed=False, update_downloaded=False
            )
            if rounds > 1:
                record_apply(True, time.monotonic() - began)
                _prune_journal()
            _reboot_if_requested()
            return ConvergeResult(rounds, True)
        signature = [(s.kind, s.app_id, s.service_name, s.image, s.reason) for s in steps]
        repeats = repeats + 1 if signature == last_signature else 0
        last_signature = signature
        if repeats >= MAX_IDENTICAL_ROUNDS:
            # Succeeding steps that change nothing: a planner/engine disagreement. Back off
            # instead of spinning.
            errors.append(RuntimeError(f"no progress after {repeats + 1} identical rounds: {signature}"))
        if not errors:
            failures = 0
            continue
        failures += 1
        delay = min(BACKOFF_BASE_SECONDS * 2**failures, poll_interval_seconds(target))
        _report_failure(rounds, errors, delay)
        _wait_for_retry(delay, record.pk)
    return ConvergeResult(rounds, False)


def _run_round(target: TargetState, force: bool, number: int) -> tuple[list[Step], list[BaseException]]:
    """Plan one round and run it; returns its steps and the errors of those that failed."""
    from apps_api.engine.locks import apps_with_supervisor_lock_files
    from apps_api.models import Image

    began = time.monotonic()
    locks = update_locks()
    device = device_context(target)
    current = read_current_state(
        managed_images=Image.objects.values_list("reference", flat=True),
        app_uuids={app.app_id: app.app_uuid for app in target.apps},
    )
    steps = plan(
        current,
        target.apps,
        locks_held=locks.held_apps(),
        config=PlanConfig(device, local_mode=target.source == "local"),
        leftover_locks=apps_with_supervisor_lock_files(Path(device.host_root)),
    )
    if not steps:
        return [], []
    apply_status.set_flags(applying=True, update_pending=True)
    executor = Executor(
        device=device, locks=locks, observer=JournalObserver(), force=force or lock_override(target),
        on_image_fetched=_record_image, on_image_removed=_forget_image, cancelled=_new_request_waiting,
    )  # fmt: skip
    planned = time.monotonic()
    outcomes = executor.run_round(steps)
    logger.info(
        "round %d: %d steps planned in %.0f ms, ran in %.0f ms",
        number, len(steps), (planned - began) * 1000, (time.monotonic() - planned) * 1000,
    )  # fmt: skip
    return steps, [o.error for o in outcomes if o.error is not None]


def _report_failure(number: int, errors: list[BaseException], delay: float) -> None:
    apply_status.set_flags(update_failed=True)
    logger.warning(
        "apply round %d failed (%d errors, retry in %gs): %s", number, len(errors), delay, errors[0]
    )
    locked = next((e for e in errors if isinstance(e, UpdatesLocked)), None)
    if locked is not None:
        system_log(f"Updates are locked, retrying in {delay:g}s. Reason: {locked}", is_stderr=True)
    else:
        system_log(f"Apply failed, retrying in {delay:g}s: {errors[0]}", is_stderr=True)


def _apply_device_config(target: TargetState) -> None:
    """Config steps come before any app step; their failure never stops the apps."""
    from apps_api.engine.device_config_steps import apply_device_config

    try:
        apply_device_config(target)
    except Exception as exc:
        logger.exception("device configuration not applied")
        system_log(f"Could not apply the device configuration due to '{exc}'", is_stderr=True)


def _reboot_if_requested() -> None:
    from apps_api.engine.device_config_steps import reboot_if_requested

    try:
        reboot_if_requested()
    except Exception:
        logger.exception("the reboot a configuration change asked for failed")


JOURNAL_ROWS_KEPT = 10_000


def _prune_journal() -> None:
    """Keep the step journal to its newest rows."""
    from apps_api.models import StepRecord

    newest = StepRecord.objects.order_by("-id").values_list("id", flat=True).first()
    if newest is not None and newest > JOURNAL_ROWS_KEPT:
        StepRecord.objects.filter(id__lte=newest - JOURNAL_ROWS_KEPT).delete()


def _wait_for_retry(seconds: float, record_pk: int) -> None:
    """Sleep before a retry, cut short when a new target or apply request arrives."""
    from apps_api.models import TargetRecord

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        if _new_request_waiting() or _preemption_waiting():
            return
        if TargetRecord.objects.order_by("-id").values_list("id", flat=True).first() != record_pk:
            return


def lock_override(target: TargetState | None) -> bool:
    """Device config SUPERVISOR_OVERRIDE_LOCK (any of its prefixes and legacy names); off
    without a target."""
    from apps_api.engine.device_config_steps import device_config

    return device_config(target).lock_override


def _take_preemption() -> str | None:
    from supervisor_site.redis_connection import redis_client

    value = redis_client().getdel(APPLY_PREEMPT_KEY)
    return value.decode() if isinstance(value, bytes) else None


def _take_request() -> bool:
    """Consume a waiting apply request; returns whether it asked to override locks."""
    from supervisor_site.redis_connection import redis_client

    request = redis_client().getdel(APPLY_REQUEST_KEY)
    return request is not None and bool(json.loads(request).get("force"))  # type: ignore[arg-type]


def _preemption_waiting() -> bool:
    from supervisor_site.redis_connection import redis_client

    return bool(redis_client().exists(APPLY_PREEMPT_KEY))


def _new_request_waiting() -> bool:
    from supervisor_site.redis_connection import redis_client

    return bool(redis_client().exists(APPLY_REQUEST_KEY))


def _forget_image(reference: str) -> None:
    from apps_api.models import Image

    Image.objects.filter(reference=reference).delete()


def _record_image(reference: str, docker_id: str) -> None:
    from apps_api.models import Image

    Image.objects.update_or_create(reference=reference, defaults={"docker_id": docker_id})
    apply_status.set_flags(update_downloaded=True)


def system_log(message: str, *, is_stderr: bool = False) -> None:
    logger.info("%s", message)
    publish_log_record(LogRecord(message=message, timestamp=now_ms(), is_system=True, is_stderr=is_stderr))


# What each step announces (spec: logs-hostconfig-misc.md): (starting, done).
STEP_MESSAGES = {
    "fetch": ("Downloading image '{image}'", "Downloaded image '{image}'"),
    "start": ("Installing service '{service}'", "Started service '{service}'"),
    "kill": ("Killing service '{service}'", "Killed service '{service}'"),
    "stop": ("Stopping service '{service}'", "Stopped service '{service}'"),
    "remove": ("Removing dead container of '{service}'", "Removed dead container of '{service}'"),
    "updateMetadata": ("Updating metadata of service '{service}'", "Updated metadata of service '{service}'"),
    "handover": ("Handing over service '{service}'", "Handed over service '{service}'"),
    "createNetwork": ("Creating network '{network}'", "Created network '{network}'"),
    "removeNetwork": ("Removing network '{network}'", "Removed network '{network}'"),
    "createVolume": ("Creating volume '{volume}'", "Created volume '{volume}'"),
    "removeVolume": ("Removing volume '{volume}'", "Removed volume '{volume}'"),
    "removeImage": ("Deleting image '{image}'", "Deleted image '{image}'"),
    "takeLock": ("Taking update locks", "Took update locks"),
    "releaseLock": ("Releasing update locks", "Released update locks"),
}
STATUS_WHILE = {"fetch": "Downloading", "start": "Installing", "kill": "Stopping", "stop": "Stopping",
                "handover": "Handing over"}  # fmt: skip


def _describe(step: Step) -> dict[str, str]:
    image = step.image or (step.target.image if step.target else "")
    if step.target is not None:
        service_text = f"{step.target.service_name} {step.target.image}"
    elif step.current is not None:
        service_text = f"{step.current.service_name} {step.current.docker_image_id}"
    else:
        service_text = ""
    network = (
        step.network.name if step.network else (step.current_network.name if step.current_network else "")
    )
    volume = step.volume.name if step.volume else (step.current_volume.name if step.current_volume else "")
    return {"service": service_text, "image": image, "network": network, "volume": volume}


class JournalObserver:
    """Journals every step, announces it as a system log message and tracks service status."""

    def started(self, step: Step) -> None:
        if step.kind in STEP_MESSAGES:
            system_log(STEP_MESSAGES[step.kind][0].format(**_describe(step)))
        if step.app_id is not None and step.service_name and step.kind in STATUS_WHILE:
            apply_status.set_service_status(step.app_id, step.service_name, STATUS_WHILE[step.kind])

    def finished(self, step: Step, error: BaseException | None, seconds: float) -> None:
        from apps_api.models import StepRecord

        if step.kind in STEP_MESSAGES:
            if error is None:
                system_log(STEP_MESSAGES[step.kind][1].format(**_describe(step)))
            elif not isinstance(error, UpdatesLocked):
                system_log(
                    f"{STEP_MESSAGES[step.kind][0].format(**_describe(step))} due to '{error}'",
                    is_stderr=True,
                )
        if step.app_id is not None and step.service_name:
            apply_status.set_service_status(step.app_id, step.service_name, None)
        if step.image:
            apply_status.set_image_progress(step.image, None)
        if step.kind == "fetch":
            from supervisor_site.redis_connection import redis_client

            redis_client().incrbyfloat(APPLY_DOWNLOAD_SECONDS_KEY, seconds)
        record_step(step.kind, error is None, seconds)
        StepRecord.objects.create(
            kind=step.kind,
            app_id=step.app_id,
            service_name=step.service_name or "",
            reason=step.reason[:255],
            succeeded=error is None,
            error=str(error) if error else "",
            duration_ms=int(seconds * 1000),
        )

    def progress(self, step: Step, percent: int) -> None:
        if step.image:
            apply_status.set_image_progress(step.image, percent)


def apply_in_progress() -> bool:
    """An apply is requested or running."""
    from supervisor_site.redis_connection import redis_client

    return bool(redis_client().exists(APPLY_REQUEST_KEY, APPLY_LOCK_KEY))
