"""The Celery app, configured from Django settings (CELERY_* names)."""

import os

from celery import Celery
from celery.beat import Scheduler
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "supervisor_site.settings")

app = Celery("supervisor_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


class DueAtStart(Scheduler):
    """Celery's in-memory beat scheduler, with every entry due as it starts: the cloud tick
    provisions or polls as soon as the agent's worker runs, not one period (5 s) later."""

    def setup_schedule(self) -> None:
        super().setup_schedule()
        for entry in self.schedule.values():  # type: ignore[attr-defined]  # missing from celery-types
            if period := getattr(entry.schedule, "run_every", None):
                entry.last_run_at = entry.default_now() - period


@worker_ready.connect
def run_schedules_in_this_process(sender: object, **_: object) -> None:
    """With SUPERVISOR_WORKER_BEAT=1 (the agent's worker), the beat scheduler runs as a
    thread of the worker: `celery worker --beat` would fork a process of its own for it,
    about 40 MiB more at idle. One worker drives the device, so one scheduler is right."""
    if os.environ.get("SUPERVISOR_WORKER_BEAT") != "1":
        return
    from celery.beat import EmbeddedService  # type: ignore[attr-defined]  # missing from celery-types

    # The embedded service ignores the beat_scheduler setting unless given it.
    EmbeddedService(app, thread=True, scheduler_cls=app.conf.beat_scheduler).start()
