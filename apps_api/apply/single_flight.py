"""One apply at a time, across the worker's threads and every process.

A Redis lock names the one running apply. A request arriving meanwhile is left in Redis
and picked up by that apply before it lets go (`schedule_apply`). An action that must run
alone (restart, purge) pre-empts the running apply at its next round and holds the lock
itself (`exclusive_apply`). Everything below the actions façade asks for an apply through
`schedule_apply`, which sends the Celery task by name, so no module here imports the tasks.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from celery import current_app

from apps_api.apply_status import changing_progress, note_progress_changed
from apps_api.engine.locks import UpdatesLocked
from apps_api.redis_store import (
    APPLY_DOWNLOAD_SECONDS_KEY,
    APPLY_LOCK_KEY,
    APPLY_PREEMPT_KEY,
    APPLY_REQUEST_KEY,
    APPLY_STARTED_KEY,
    Lock,
    LockError,
    lock,
    redis_client,
    take,
)

logger = logging.getLogger(__name__)

APPLY_TASK_NAME = "apps_api.apply_target_state"
REVIEW_TASK_NAME = "apps_api.review_releases"
EXCLUSIVE_WAIT_SECONDS = 60
# Long enough for the longest round (a hand-over waits up to its timeout); renewed each round.
APPLY_LOCK_SECONDS = 600


def schedule_apply(*, force: bool = False) -> None:
    """Ask for the stored target to be applied: the running apply (or the next) sees it."""
    request_apply(force=force)
    current_app.send_task(APPLY_TASK_NAME)


def schedule_review(seconds: float) -> None:
    """Have the releases on probation reviewed in `seconds` (apply/probation.py): an apply
    is asked for then, if one is still on probation."""
    current_app.send_task(REVIEW_TASK_NAME, countdown=seconds)


def request_apply(*, force: bool = False) -> None:
    """Record that the target must be applied, without sending the task (the caller is the
    apply task itself, or sends it). A forced request is never weakened by a plain one."""
    client = redis_client()
    previous: bytes | None = client.getset(APPLY_REQUEST_KEY, json.dumps({"force": force}))  # type: ignore[assignment]
    if previous is not None and json.loads(previous).get("force") and not force:
        client.set(APPLY_REQUEST_KEY, json.dumps({"force": True}))
    note_progress_changed()


def take_request() -> bool | None:
    """Consume a waiting apply request: None when there was none, else whether it asked to
    override locks."""
    request = take(APPLY_REQUEST_KEY)
    if request is not None:
        note_progress_changed()
    return None if request is None else bool(json.loads(request).get("force"))


def request_waiting() -> bool:
    return bool(redis_client().exists(APPLY_REQUEST_KEY))


def apply_in_progress() -> bool:
    """An apply is requested or running."""
    return bool(redis_client().exists(APPLY_REQUEST_KEY, APPLY_LOCK_KEY))


def cancel_running_apply(reason: str = "cancel") -> None:
    """Make the running apply stop at its next round (or retry wait)."""
    if apply_in_progress():
        redis_client().set(APPLY_PREEMPT_KEY, reason, ex=EXCLUSIVE_WAIT_SECONDS)


def take_preemption() -> str | None:
    """Consume a waiting pre-emption: its reason ("cancel" or "exclusive"), or None."""
    value = take(APPLY_PREEMPT_KEY)
    return value.decode() if isinstance(value, bytes) else None


def preemption_waiting() -> bool:
    return bool(redis_client().exists(APPLY_PREEMPT_KEY))


@contextmanager
def holding_apply_lock() -> Iterator[bool]:
    """Try to become the running apply: yields whether the lock was taken; while held it is
    renewed in a thread, however long a round or a backoff lasts."""
    apply_lock = lock(APPLY_LOCK_KEY, timeout=APPLY_LOCK_SECONDS, blocking=False)
    if not apply_lock.acquire():
        yield False
        return
    note_progress_changed()
    renewing = threading.Event()
    renewer = threading.Thread(target=_keep_lock, args=(apply_lock, renewing), daemon=True, name="apply-lock")
    renewer.start()
    try:
        yield True
    finally:
        renewing.set()
        renewer.join()
        try:
            apply_lock.release()
        except LockError:
            logger.warning("the apply lock expired before the apply ended")
        note_progress_changed()


@contextmanager
def exclusive_apply(wait_seconds: float = EXCLUSIVE_WAIT_SECONDS) -> Iterator[None]:
    """Hold the apply lock for an action that must run alone (restart, purge): the running
    apply is pre-empted at its next round; a normal apply is scheduled afterwards."""
    cancel_running_apply("exclusive")
    apply_lock = lock(APPLY_LOCK_KEY, timeout=APPLY_LOCK_SECONDS, blocking_timeout=wait_seconds)
    if not apply_lock.acquire():
        raise UpdatesLocked("Locks for the apply are being held by another supervisor operation")
    note_progress_changed()
    try:
        redis_client().delete(APPLY_PREEMPT_KEY)
        yield
    finally:
        try:
            apply_lock.release()
        except LockError:
            logger.warning("the apply lock expired during an exclusive action")
        note_progress_changed()
        schedule_apply()


def _keep_lock(apply_lock: Lock, stop: threading.Event) -> None:
    while not stop.wait(APPLY_LOCK_SECONDS / 10):
        try:
            apply_lock.reacquire()
        except LockError:
            logger.warning("lost the apply lock; another apply may start")
            return


def forget_the_dead_workers_apply() -> None:
    """At worker start (one worker drives the device): the apply lock a killed worker held
    would block applies for minutes, and its start time would make the engine look stuck."""
    changing_progress(lambda pipe: pipe.delete(APPLY_LOCK_KEY, APPLY_STARTED_KEY, APPLY_DOWNLOAD_SECONDS_KEY))
