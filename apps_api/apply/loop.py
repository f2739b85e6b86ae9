"""The apply loop: plan a round, run it, repeat until the target is reached.

Runs in the worker, one at a time (apply/single_flight.py). The target is re-read every
round, so a new target changes course at the next round boundary.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.conf import settings

from apps_api import apply_status
from apps_api.apply.device_context import device_context
from apps_api.apply.journal import (
    BackgroundJournal,
    JournalObserver,
    forget_image,
    prune_journal,
    record_image,
)
from apps_api.apply.planning import read_round_inputs
from apps_api.apply.probation import Review, review_releases
from apps_api.apply.refusals import record_removals, refusals_for_target
from apps_api.apply.single_flight import (
    holding_apply_lock,
    preemption_waiting,
    request_waiting,
    schedule_review,
    take_preemption,
    take_request,
)
from apps_api.backoff import backoff_delay
from apps_api.device_settings import lock_override, poll_interval_seconds
from apps_api.engine.disk_preflight import INSUFFICIENT_STORAGE, MB, DiskPreflight
from apps_api.engine.executor import Executor, StepOutcome
from apps_api.engine.locks import UpdatesLocked, update_locks
from apps_api.engine.planner import plan, unused_images
from apps_api.engine.state import Step, TargetState
from apps_api.host_ops.device_config import (
    apply_device_config,
    ask_reboot_for_service,
    reboot_if_requested,
)
from apps_api.logs.publisher import system_log
from apps_api.metrics import record_apply
from apps_api.models import TargetRecord
from apps_api.redis_store import APPLY_DOWNLOAD_SECONDS_KEY, APPLY_STARTED_KEY, redis_client
from apps_api.service_changes import record_lock_override
from apps_api.target.store import load_target

logger = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 0.5
MAX_IDENTICAL_ROUNDS = 5
PROBATION_RETRY_SECONDS = 5.0
PROBATION_MARGIN_SECONDS = 0.5


def run_requested_applies() -> bool:
    """Apply while requests are pending, unless another apply runs (it will see them).

    Returns whether this call did the applying.
    """
    client = redis_client()
    ran = False
    while request_waiting():
        with holding_apply_lock() as held:
            if not held:
                return ran
            ran = True
            client.set(APPLY_STARTED_KEY, time.time())
            client.delete(APPLY_DOWNLOAD_SECONDS_KEY)
            try:
                preempted = converge().preempted
            finally:
                client.delete(APPLY_STARTED_KEY)
                apply_status.set_flags(applying=False)
        if preempted == "exclusive":
            return ran  # the pre-empting action requests an apply when it is done
    return ran


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
    failures, rounds = 0, 0
    began = time.monotonic()
    seen_record: int | None = None
    repeats, last_signature = 0, None
    requested_force = force
    while max_rounds is None or rounds < max_rounds:
        # This round plans from the newest target, so it answers any request waiting now;
        # only a request arriving during the round cuts the round short.
        if preemption := take_preemption():
            return ConvergeResult(rounds, False, preempted=preemption)
        request_force = bool(take_request())
        loaded = load_target()
        if loaded is None:
            return ConvergeResult(rounds, True)
        target, record = loaded
        if record.pk != seen_record:
            failures, seen_record, requested_force = 0, record.pk, force
            refusals_for_target(record.pk)
            _apply_device_config(target)
        requested_force = requested_force or request_force
        rounds += 1
        try:
            steps, errors = _run_round(target, record.force or requested_force, rounds)
        except Exception as exc:  # reading the state failed (engine restarting, Redis down…)
            logger.exception("apply round %d could not run", rounds)
            steps, errors = [], [exc]
        if not steps and not errors:
            if _review_releases(target):
                continue  # an app rolls back to its previous release
            apply_status.set_flags(
                applying=False, update_pending=False, update_failed=False, update_downloaded=False
            )
            # A target changed back to images on disk leaves no fetch to clear the refusal.
            apply_status.forget_service_statuses(INSUFFICIENT_STORAGE)
            if rounds > 1:
                record_apply(True, time.monotonic() - began)
                prune_journal()
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
        delay = backoff_delay(failures + 1, base=BACKOFF_BASE_SECONDS, cap=poll_interval_seconds(target))
        _report_failure(rounds, errors, delay)
        _wait_for_retry(delay, record.pk)
    return ConvergeResult(rounds, False)


def _run_round(target: TargetState, force: bool, number: int) -> tuple[list[Step], list[BaseException]]:
    """Plan one round and run it; returns its steps and the errors of those that failed."""
    began = time.monotonic()
    locks = update_locks()
    device = device_context(target)
    inputs = read_round_inputs(target, device, locks)
    steps = plan(
        inputs.current,
        target.apps,
        locks_held=inputs.locks_held,
        config=inputs.config,
        leftover_locks=inputs.leftover_locks,
    )
    if not steps:
        return [], []
    apply_status.set_flags(applying=True, update_pending=True)
    journal = BackgroundJournal(JournalObserver())
    preflight = DiskPreflight(
        reserve_bytes=settings.SUPERVISOR_DISK_RESERVE_MB * MB, device_arch=device.arch,
        host_root=device.host_root, on_image_removed=forget_image, log=system_log,
        # Local mode keeps the images it no longer uses, even to make room.
        removable_images=[] if target.source == "local"
        else unused_images(inputs.current, target.apps, inputs.config.images_on_hold),
    )  # fmt: skip
    executor = Executor(
        device=device, locks=locks, observer=journal, force=force or lock_override(target),
        on_image_fetched=record_image, on_image_removed=forget_image, cancelled=request_waiting,
        on_reboot_needed=ask_reboot_for_service, make_room=preflight.room_for,
        on_locks_overridden=record_lock_override,
    )  # fmt: skip
    planned = time.monotonic()
    try:
        outcomes = executor.run_round(steps)
    finally:
        journal_errors = journal.close()
    logger.info(
        "round %d: %d steps planned in %.0f ms, ran in %.0f ms",
        number, len(steps), (planned - began) * 1000, (time.monotonic() - planned) * 1000,
    )  # fmt: skip
    # A removal given up on in this round is no failure of it: the next one plans without it.
    given_up = set(record_removals(outcomes))
    failed = [o for o in outcomes if o.error is not None and not _removal_of(o, given_up)]
    return steps, [o.error for o in failed if o.error is not None] + journal_errors


def _removal_of(outcome: StepOutcome, networks: set[str]) -> bool:
    network = outcome.step.current_network
    return outcome.step.kind == "removeNetwork" and network is not None and network.docker_name in networks


def _report_failure(number: int, errors: list[BaseException], delay: float) -> None:
    apply_status.set_flags(update_failed=True)
    logger.warning(
        "apply round %d failed (%d errors, retry in %gs): %s", number, len(errors), delay, errors[0]
    )
    locked = next((e for e in errors if isinstance(e, UpdatesLocked)), None)
    if locked is not None:
        # The original's words and its compact duration (pretty-ms: the first unit only).
        system_log(f"Updates are locked, retrying in {compact_duration(delay)}. Reason: {locked}")
    else:
        system_log(f"Apply failed, retrying in {compact_duration(delay)}: {errors[0]}", is_stderr=True)


def compact_duration(seconds: float) -> str:
    """`250ms`, `12s`, `2m`, `1h`, `3d`: the largest unit, the rest dropped."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds * 1000)}ms"


def _apply_device_config(target: TargetState) -> None:
    """Config steps come before any app step; their failure never stops the apps."""
    try:
        apply_device_config(target)
    except Exception as exc:
        logger.exception("device configuration not applied")
        system_log(f"Could not apply the device configuration due to '{exc}'", is_stderr=True)


def _review_releases(target: TargetState) -> bool:
    """Judge the releases on probation now that the target is reached; returns whether one
    was rolled back. A review that cannot run (engine restarting) is retried later."""
    try:
        review = review_releases(target)
    except Exception:
        logger.exception("releases on probation not reviewed")
        review = Review(recheck_in=PROBATION_RETRY_SECONDS)
    if review.recheck_in is not None:
        # A moment past the window's end, so that the review then can give its verdict.
        schedule_review(review.recheck_in + PROBATION_MARGIN_SECONDS)
    return review.rolled_back


def _reboot_if_requested() -> None:
    try:
        reboot_if_requested()
    except Exception:
        logger.exception("the reboot a configuration change asked for failed")


def _wait_for_retry(seconds: float, record_pk: int) -> None:
    """Sleep before a retry, cut short when a new target or apply request arrives. The
    wait's end is published for GET /v2/plan while it lasts."""
    deadline = time.monotonic() + seconds
    apply_status.set_retry_at(time.time() + seconds)
    try:
        while time.monotonic() < deadline:
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
            if request_waiting() or preemption_waiting():
                return
            if TargetRecord.objects.order_by("-id").values_list("id", flat=True).first() != record_pk:
                return
    finally:
        apply_status.set_retry_at(None)
