"""Health-gated releases: a cloud release, once applied, is on probation until it proves
itself (engine/release_health.py judges), then committed or rolled back.

Per app, a `ReleaseTrial` row keeps the last committed release (its whole app, so it can
be applied again), the release on probation with its start time and its containers'
restart counts then, and the release that failed. A failed release is replaced by the
committed one wherever the target is read (target/store.py), so rolling back is an
ordinary apply: the same planner, the same update locks, volumes untouched. Local-mode
targets are development pushes: they are never put on probation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from apps_api.apply_status import bump_target_version
from apps_api.engine.current import read_current_state
from apps_api.engine.docker import inspect_container
from apps_api.engine.release_health import (
    ServiceHealth,
    Verdict,
    health_window_seconds,
    judge_release,
    restart_limit,
)
from apps_api.engine.state import AppSpec, CurrentService, TargetState, normalise_image_ref
from apps_api.logs.publisher import system_log
from apps_api.models import ReleaseTrial

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Review:
    rolled_back: bool = False
    """An app now has its previous release as target: the apply must go on."""
    recheck_in: float | None = None
    """Seconds until a release on probation can be judged; None when none is."""


def review_releases(target: TargetState, *, now: float | None = None) -> Review:
    """Judge the releases of `target` that are on probation, starting the probation of
    those just reached. Called by the apply loop when the target is reached, so what
    runs is what the target says."""
    if target.source != "cloud":
        return Review()
    now = time.time() if now is None else now
    apps = [a for a in target.apps if a.commit and not a.rejected and not a.failed_commit]
    trials = {t.app_id: t for t in ReleaseTrial.objects.filter(app_id__in=[a.app_id for a in apps])}
    trials = {a.app_id: trials.get(a.app_id) or ReleaseTrial(app_id=a.app_id) for a in apps}
    apps = [a for a in apps if trials[a.app_id].committed_commit != a.commit]
    if not apps:
        return Review()
    containers = _containers_by_app(read_current_state().services)
    rolled_back, waits = False, []
    for app in apps:
        trial = trials[app.app_id]
        running = containers.get(app.app_id, {})
        if trial.trial_commit != app.commit:
            _start_trial(trial, app, running, now)
        verdict = judge_release(
            _health(app, running, trial.trial_restarts),
            window=health_window_seconds(app.services),
            elapsed=now - trial.trial_started_at,
        )
        if verdict.decision == "wait":
            waits.append(verdict.recheck_in)
        elif verdict.decision == "commit":
            _commit(trial, app)
        else:
            rolled_back = _fail(trial, app, verdict) or rolled_back
    return Review(rolled_back=rolled_back, recheck_in=min(waits) if waits else None)


def trial_pending() -> bool:
    """A release is on probation (a review is due sooner or later)."""
    return ReleaseTrial.objects.exclude(trial_commit="").exists()


def images_on_hold() -> frozenset[str]:
    """The images of each app's committed release: kept while a newer release is applied
    and on probation (until it commits), so that rolling back needs no download."""
    held: set[str] = set()
    for trial in ReleaseTrial.objects.exclude(committed_app=None):
        held.update(normalise_image_ref(s["image"]) for s in (trial.committed_app or {})["services"])
    return frozenset(held)


def _containers_by_app(services: Iterable[CurrentService]) -> dict[int, dict[str, CurrentService]]:
    """The newest container of each service, per app."""
    found: dict[int, dict[str, CurrentService]] = {}
    for service in sorted(services, key=lambda s: (s.created_at, s.container_id)):
        found.setdefault(service.app_id, {})[service.service_name] = service
    return found


def _start_trial(trial: ReleaseTrial, app: AppSpec, running: dict[str, CurrentService], now: float) -> None:
    trial.trial_commit = app.commit or ""
    trial.trial_started_at = now
    # Restarts count from here: a release that only relabels containers keeps their history.
    trial.trial_restarts = {
        c.container_id: _inspect(c.container_id)[1] for c in running.values() if c.commit == app.commit
    }
    trial.save()
    logger.info("release %s of app %s on probation", app.commit, app.name)


def _health(
    app: AppSpec, running: dict[str, CurrentService], baseline: dict[str, int]
) -> list[ServiceHealth]:
    health = []
    for service in app.services:
        container = running.get(service.service_name)
        if container is None:
            continue
        status, restarts = _inspect(container.container_id)
        restarts -= baseline.get(container.container_id, 0)
        health.append(ServiceHealth(service.service_name, status, restarts, restart_limit(service)))
    return health


def _inspect(container_id: str) -> tuple[str | None, int]:
    """The container's healthcheck status (None without one) and restart count."""
    details = inspect_container(container_id) or {}
    state = details.get("State") or {}
    return (state.get("Health") or {}).get("Status"), int(details.get("RestartCount") or 0)


def _commit(trial: ReleaseTrial, app: AppSpec) -> None:
    trial.committed_commit, trial.committed_app = app.commit or "", asdict(app)
    trial.trial_commit, trial.trial_restarts = "", {}
    trial.save()
    system_log(f"Release {app.commit} of app '{app.name}' committed")


def _fail(trial: ReleaseTrial, app: AppSpec, verdict: Verdict) -> bool:
    """Mark the release failed; returns whether there is a previous release to go back to."""
    trial.failed_commit, trial.failed_reason = app.commit or "", verdict.reason
    trial.trial_commit, trial.trial_restarts = "", {}
    trial.save()
    bump_target_version()
    if trial.committed_app is None:
        system_log(
            f"Release {app.commit} of app '{app.name}' failed: {verdict.reason}; "
            "there is no previous release to roll back to",
            is_stderr=True,
        )
        return False
    system_log(f"Rolling back release {app.commit} of app '{app.name}': {verdict.reason}", is_stderr=True)
    return True
