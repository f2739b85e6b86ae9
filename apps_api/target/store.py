"""The target state in SQLite: stored whole and atomically, read back as plain data.

The `App`/`Service`/`Network`/`Volume` rows are a read-only projection of the stored
document for the admin; the engine reads only `TargetRecord.document`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, fields, replace
from typing import Any

from django.db import transaction

from apps_api import apply_status
from apps_api.apikeys import revoke_service_keys_except
from apps_api.apply.single_flight import schedule_apply
from apps_api.apply_status import bump_target_version
from apps_api.engine.container_config import feature_enabled
from apps_api.engine.state import AppSpec, NetworkSpec, ServiceSpec, TargetState, VolumeSpec
from apps_api.models import App, Network, ReleaseTrial, Service, TargetRecord, Volume

logger = logging.getLogger(__name__)

KEPT_TARGET_RECORDS = 20


# The stored document's schema. 1: the engine's dataclasses as they were, with no `schema`
# key (every release up to 225373c). A change that older documents cannot be read as (a field
# renamed, a meaning changed) raises it and adds a step to _MIGRATIONS; a field added with a
# default needs neither, and a field a newer release added (read after a downgrade) is left
# out. tests/unit/target/test_stored_target_upgrade.py loads documents of older releases.
TARGET_SCHEMA = 2
_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {
    1: lambda document: document,  # 1 → 2: only the `schema` key
}


def target_to_document(target: TargetState) -> dict[str, Any]:
    return {"schema": TARGET_SCHEMA, **asdict(target)}


def migrated_document(document: dict[str, Any]) -> dict[str, Any]:
    """`document` brought to TARGET_SCHEMA, step by step."""
    version = document.get("schema", 1)
    while isinstance(version, int) and version in _MIGRATIONS and version < TARGET_SCHEMA:
        document = _MIGRATIONS[version](document)
        version += 1
    if version != TARGET_SCHEMA:
        logger.warning("stored target of schema %s read as schema %s", version, TARGET_SCHEMA)
    return {**document, "schema": TARGET_SCHEMA}


def _known_fields(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {key: value for key, value in values.items() if key in names}


def app_from_document(app: dict[str, Any]) -> AppSpec:
    services = tuple(
        ServiceSpec(
            **{**_known_fields(ServiceSpec, service), "depends_on": tuple(service.get("depends_on", ()))}
        )
        for service in app["services"]
    )
    return AppSpec(
        **{
            **_known_fields(AppSpec, app),
            "services": services,
            "networks": tuple(NetworkSpec(**_known_fields(NetworkSpec, n)) for n in app["networks"]),
            "volumes": tuple(VolumeSpec(**_known_fields(VolumeSpec, v)) for v in app["volumes"]),
        }
    )


def target_from_document(document: dict[str, Any]) -> TargetState:
    document = migrated_document(document)
    return TargetState(
        name=document["name"],
        config=document["config"],
        apps=tuple(app_from_document(app) for app in document["apps"]),
        source=document["source"],
        unmanaged=tuple(document.get("unmanaged", ())),
    )


@transaction.atomic
def store_target(
    target: TargetState, *, force: bool = False, posted_apps: dict[str, Any] | None = None
) -> TargetRecord:
    """Make `target` the one the engine applies; all or nothing. `posted_apps` is the
    local-mode document's `local.apps` as sent, which GET /v2/local/target-state echoes."""
    record = TargetRecord.objects.create(
        document=target_to_document(target), source=target.source, force=force, posted_apps=posted_apps
    )
    App.objects.all().delete()
    for spec in target.apps:
        app = App.objects.create(
            app_id=spec.app_id,
            uuid=spec.app_uuid,
            name=spec.name,
            commit=spec.commit or "",
            release_id=spec.release_id,
            app_class=spec.app_class,
            source=target.source,
        )
        Service.objects.bulk_create(
            Service(
                app=app,
                service_name=s.service_name,
                service_id=s.service_id,
                image_id=s.image_id,
                image=s.image,
                running=s.running,
                environment=s.environment,
                labels=s.labels,
                composition=s.composition,
            )
            for s in spec.services
        )
        Network.objects.bulk_create(Network(app=app, name=n.name, config=asdict(n)) for n in spec.networks)
        Volume.objects.bulk_create(Volume(app=app, name=v.name, config=asdict(v)) for v in spec.volumes)
    # A key dies with its service's place in the target (or with its supervisor-api label).
    revoke_service_keys_except({(app.app_id, s.service_name) for app in target.apps for s in app.services
                                if feature_enabled(s, "supervisor-api")})  # fmt: skip
    _forget_superseded_trials(target)
    stale = TargetRecord.objects.values_list("id", flat=True)[KEPT_TARGET_RECORDS:]
    TargetRecord.objects.filter(id__in=list(stale)).delete()
    # Readers key their parsed copy by this version: bump it only once the rows are visible.
    transaction.on_commit(bump_target_version)
    return record


def set_target_state(
    target: TargetState, *, force: bool = False, posted_apps: dict[str, Any] | None = None
) -> int:
    """Make `target` the one the device runs: store it, clear a previous failure and have
    it applied (`force` overrides update locks). Returns the target's record id.

    All or nothing: the flag is cleared in Redis before the target is committed, so that
    with Redis unreachable this raises and nothing is stored (an apply could not be asked
    for either)."""
    with transaction.atomic():
        record = store_target(target, force=force, posted_apps=posted_apps)
        apply_status.set_flags(update_failed=False)
    schedule_apply(force=force)
    return record.pk


def load_target() -> tuple[TargetState, TargetRecord] | None:
    """The newest stored target and its record; None before any target was set. An app
    whose target release failed its probation is the release it runs instead (see
    `with_failed_releases_replaced`)."""
    record = TargetRecord.objects.order_by("-id").first()
    if record is None:
        return None
    return with_failed_releases_replaced(target_from_document(record.document)), record


def with_failed_releases_replaced(target: TargetState) -> TargetState:
    """`target` with each app whose release failed its probation (apply/probation.py)
    replaced by its last committed release, or, without one, left as it is; either way
    marked with the failed commit and the reason. The stored document is never changed."""
    trials = {
        t.app_id: t for t in ReleaseTrial.objects.exclude(failed_commit="").filter(
            app_id__in=[app.app_id for app in target.apps])
    }  # fmt: skip
    if not trials:
        return target
    apps = []
    for app in target.apps:
        trial = trials.get(app.app_id)
        if trial is not None and trial.failed_commit == app.commit:
            run = app_from_document(trial.committed_app) if trial.committed_app else app
            app = replace(run, failed_commit=trial.failed_commit, failed_reason=trial.failed_reason)
        apps.append(app)
    return replace(target, apps=tuple(apps))


def _forget_superseded_trials(target: TargetState) -> None:
    """A failed release is not tried again until the app's target release changes; an app
    gone from the target starts afresh if it comes back."""
    commits = {app.app_id: app.commit or "" for app in target.apps}
    ReleaseTrial.objects.exclude(app_id__in=list(commits)).delete()
    for trial in ReleaseTrial.objects.exclude(failed_commit=""):
        if trial.failed_commit != commits[trial.app_id]:
            trial.failed_commit, trial.failed_reason = "", ""
            trial.save(update_fields=["failed_commit", "failed_reason"])


_parsed: dict[int, TargetState | None] = {}
_NOT_READ = object()


def load_target_cached(version: int) -> TargetState | None:
    """The newest target, read from the database once per `version` (apply_status's target
    version, bumped whenever a target is stored): API reads run often, in many threads. One
    lookup: a thread that reads another version may empty the cache between two."""
    cached = _parsed.get(version, _NOT_READ)
    if cached is not _NOT_READ:
        return cached  # type: ignore[return-value]
    loaded = load_target()
    target = loaded[0] if loaded else None
    _parsed.clear()
    _parsed[version] = target
    return target
