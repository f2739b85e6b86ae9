"""What an apply leaves behind: a journal row and a system log line per step, the
service statuses shown while a step runs, and the images the supervisor fetched."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from django.db import connection

from apps_api import apply_status, service_changes
from apps_api.engine.disk_preflight import InsufficientStorage
from apps_api.engine.executor import StepObserver
from apps_api.engine.locks import UpdatesLocked
from apps_api.engine.state import Step, normalise_image_ref
from apps_api.logs.publisher import system_log
from apps_api.metrics import record_step
from apps_api.models import Image, StepRecord
from apps_api.redis_store import APPLY_DOWNLOAD_SECONDS_KEY, redis_client

logger = logging.getLogger(__name__)

JOURNAL_ROWS_KEPT = 10_000


def prune_journal() -> None:
    """Keep the step journal to its newest rows."""
    newest = StepRecord.objects.order_by("-id").values_list("id", flat=True).first()
    if newest is not None and newest > JOURNAL_ROWS_KEPT:
        StepRecord.objects.filter(id__lte=newest - JOURNAL_ROWS_KEPT).delete()


def forget_image(reference: str) -> None:
    Image.objects.filter(reference=reference).delete()


def record_image(reference: str, docker_id: str) -> None:
    Image.objects.update_or_create(reference=reference, defaults={"docker_id": docker_id})
    apply_status.set_flags(update_downloaded=True)


@dataclass(frozen=True)
class StepText:
    """What a step says as it starts, what it says once done (no line for None), and the
    start of its failure line (`… due to '<error>'`): the original's log types
    (src/lib/log-types.ts); docs/logs.md "System messages"."""

    starting: str
    done: str | None
    failed: str


STEP_MESSAGES = {
    "fetch": StepText("Downloading image '{image}'", "Downloaded image '{image}'",
                      "Failed to download image '{image}'"),
    "start": StepText("Installing service '{service}'", "Installed service '{service}'",
                      "Failed to install service '{service}'"),
    "kill": StepText("Killing service '{service}'", "Killed service '{service}'",
                     "Failed to kill service '{service}'"),
    # The original stops a container with its kill, and says so.
    "stop": StepText("Killing service '{service}'", "Killed service '{service}'",
                     "Failed to kill service '{service}'"),
    "remove": StepText("Removing dead container '{service}'", None,
                       "Error removing dead container '{service}'"),
    "handover": StepText("Handing over service '{service}'", "Handed over service '{service}'",
                         "Failed to hand over service '{service}'"),
    "createNetwork": StepText("Creating network '{network}'", None, "Error creating network '{network}'"),
    "removeNetwork": StepText("Removing network '{network}'", None, "Error removing network '{network}'"),
    "createVolume": StepText("Creating volume '{volume}'", None, "Error creating volume '{volume}'"),
    "removeVolume": StepText("Removing volume '{volume}'", None, "Error removing volume '{volume}'"),
    "removeImage": StepText("Deleting image '{image}'", "Deleted image '{image}'",
                            "Failed to delete image '{image}'"),
    "takeLock": StepText("Taking update locks", None, "Failed to take update locks"),
    "releaseLock": StepText("Releasing update locks", None, "Failed to release update locks"),
}  # fmt: skip
# A start step that starts an existing container, rather than creating one.
RESTART_TEXT = StepText(
    "Starting service '{service}'", "Started service '{service}'", "Failed to start service '{service}'"
)


def step_text(step: Step) -> StepText | None:
    if step.kind == "start" and step.current is not None:
        return RESTART_TEXT
    return STEP_MESSAGES.get(step.kind)


def done_lines(step: Step) -> list[str]:
    """The lines of a step that succeeded: a created container that was started is also
    `Started` (one that waits for a reboot, or is not to run, is only `Installed`)."""
    text = step_text(step)
    if text is None or text.done is None:
        return []
    described = _describe(step)
    lines = [text.done.format(**described)]
    target = step.target
    if (
        text is STEP_MESSAGES["start"]
        and target is not None
        and target.running
        and not target.requires_reboot
    ):
        lines.append(RESTART_TEXT.done.format(**described))  # type: ignore[union-attr]
    return lines


STATUS_WHILE = {"fetch": "Downloading", "start": "Installing", "kill": "Stopping", "stop": "Stopping",
                "handover": "Handing over"}  # fmt: skip


# Steps about the container that runs now: their lines name its image, not the target's.
ABOUT_THE_CURRENT_CONTAINER = frozenset({"kill", "stop", "remove"})


def _describe(step: Step) -> dict[str, str]:
    image = step.image or (step.target.image if step.target else "")
    current = step.current
    # A start with a current container starts that one, not a new one.
    if current is not None and (
        step.kind in ABOUT_THE_CURRENT_CONTAINER or step.target is None or step.kind == "start"
    ):
        service_text = f"{current.service_name} {current.image or current.docker_image_id}"
    elif step.target is not None:
        service_text = f"{step.target.service_name} {step.target.image}"
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
        if (text := step_text(step)) is not None:
            system_log(text.starting.format(**_describe(step)))
        if step.app_id is not None and step.service_name and step.kind in STATUS_WHILE:
            apply_status.set_service_status(step.app_id, step.service_name, STATUS_WHILE[step.kind])

    def finished(self, step: Step, error: BaseException | None, seconds: float) -> None:
        if (text := step_text(step)) is not None:
            if error is None:
                for line in done_lines(step):
                    system_log(line)
            elif not isinstance(error, UpdatesLocked):
                system_log(f"{text.failed.format(**_describe(step))} due to '{error}'", is_stderr=True)
        if step.app_id is not None and step.service_name:
            apply_status.set_service_status(step.app_id, step.service_name, None)
        if step.kind == "fetch" and step.app is not None:
            # Every service waiting for this image says why it waits, until a fetch of it ends.
            waiting = str(error) if isinstance(error, InsufficientStorage) else None
            for service in step.app.services:
                if normalise_image_ref(service.image) == step.image:
                    apply_status.set_service_status(step.app.app_id, service.service_name, waiting)
        if step.image:
            apply_status.set_image_progress(step.image, None)
        if step.kind == "fetch":
            redis_client().incrbyfloat(APPLY_DOWNLOAD_SECONDS_KEY, seconds)
        record_step(step.kind, error is None, seconds)
        service_changes.record(
            kind=step.kind,
            app_id=step.app_id,
            service_name=step.service_name or "",
            reason=step.reason,
            cause=step.cause,
            succeeded=error is None,
            error=str(error) if error else "",
            duration_ms=int(seconds * 1000),
        )

    def progress(self, step: Step, percent: int) -> None:
        if step.image:
            apply_status.set_image_progress(step.image, percent)


class BackgroundJournal:
    """A StepObserver that hands every call on to `observer` in one thread of its own, in
    order, so that the journal's Redis and SQLite writes never sit between two engine calls
    of a round's steps. `close()` waits for them all and returns the errors of those that
    failed (a step is never lost silently: the round counts them as failures)."""

    def __init__(self, observer: StepObserver) -> None:
        self._observer = observer
        self._calls: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._write, name="apply-journal", daemon=True)
        self._thread.start()

    def started(self, step: Step) -> None:
        self._calls.put(lambda: self._observer.started(step))

    def finished(self, step: Step, error: BaseException | None, seconds: float) -> None:
        self._calls.put(lambda: self._observer.finished(step, error, seconds))

    def progress(self, step: Step, percent: int) -> None:
        self._calls.put(lambda: self._observer.progress(step, percent))

    def close(self) -> list[BaseException]:
        self._calls.put(None)
        self._thread.join()
        return self._errors

    def _write(self) -> None:
        try:
            while (call := self._calls.get()) is not None:
                try:
                    call()
                except Exception as exc:
                    logger.exception("could not record a step")
                    self._errors.append(exc)
        finally:
            connection.close()  # this thread's own SQLite connection
