"""Apps preloaded into the device image (docs/target-state.md "Preloaded apps").

A preloaded device boots with its release's images already in the engine and an
`apps.json` describing them: `{config, apps, pinDevice?}`, the apps in the v3 form (keyed
by app uuid), the v2 one (keyed by numeric app id, whose uuid the cloud tells) or the
legacy array of single-container apps. It is the device's target until the cloud sends
one: loaded when the device is not provisioned or has no target yet, then renamed
`apps.json.preloaded`. With `pinDevice`, the device is pinned to the preloaded release
once it is provisioned.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from django.conf import settings

from apps_api.cloud.client import PinRefused, cloud_device, fetch_application_uuid, pin_device_to_release
from apps_api.engine.state import InvalidTargetState, TargetState
from apps_api.logs.publisher import system_log
from apps_api.redis_store import PRELOAD_REFUSED_KEY, redis_client
from apps_api.target.documents import parse_cloud_target, parse_local_target
from apps_api.target.intake import accept_target
from apps_api.target.store import load_target
from hostcfg.atomic_file import write_file_atomically
from hostcfg.identity import current_device_identity

logger = logging.getLogger(__name__)

PRELOADED_SUFFIX = ".preloaded"
PIN_FILE = "preloaded-release-pin.json"


def preloaded_target(
    document: object, *, device_uuid: str, app_uuid: Callable[[int], str]
) -> tuple[TargetState, int | None]:
    """The target an apps.json describes, and the release to pin the device to (None
    without `pinDevice`). `app_uuid` gives the uuid of a v2 app from its id. Raises
    InvalidTargetState (paths as in the file: `apps.<key>...`)."""

    if isinstance(document, list):
        document = _from_legacy_array(document)
    if not isinstance(document, dict):
        raise InvalidTargetState("", "must be an object (or the legacy array)")
    apps = document.get("apps", {})
    if not isinstance(apps, dict):
        raise InvalidTargetState("apps", "must be an object")
    config = document.get("config", {})
    v3 = any(isinstance(app, dict) and "releases" in app for app in apps.values())
    v2 = bool(apps) and not v3 and all(key.isdigit() for key in apps)
    try:
        if v2:
            local = parse_local_target({"local": {"config": config, "apps": apps}})
            named = tuple(replace(app, app_uuid=app_uuid(app.app_id)) for app in local.apps)
            target = replace(local, apps=named, source="cloud")
        else:
            wrapped = {device_uuid: {"config": config, "apps": apps}}
            target = parse_cloud_target(wrapped, device_uuid=device_uuid, reject_unreadable_releases=False)
    except InvalidTargetState as exc:
        # The parsers name paths from their own roots ("local.apps.1", "<uuid>.apps.x").
        path = exc.path.removeprefix("local.").removeprefix(f"{device_uuid}.")
        raise InvalidTargetState(path, exc.problem) from exc
    pin = document.get("pinDevice") is True
    release = next((app.release_id for app in target.apps if app.release_id is not None), None)
    return target, (release if pin else None)


"""The version (mtime, size) of the apps.json last refused: it is said once, not at every tick."""


LEGACY_DATA_VOLUME = "resin-data"
LEGACY_LABELS = {
    "io.resin.features.kernel-modules": "1",
    "io.resin.features.firmware": "1",
    "io.resin.features.dbus": "1",
    "io.resin.features.supervisor-api": "1",
    "io.resin.features.resin-api": "1",
    "io.resin.legacy-container": "1",
}


def _from_legacy_array(apps: list[object]) -> dict[str, Any]:
    """The v2 form of a legacy apps.json (`[{appId, commit, imageId, name?, env?, config?}]`,
    one container per app): each app becomes one privileged host-networked service "main"
    with its data in the `resin-data` volume, as single-container apps ran then. Config
    variables of all the apps are merged; `RESIN_*` environment variables are dropped
    (they were the supervisor's to set). Its release ids are placeholders: no pinning."""
    config: dict[str, Any] = {}
    converted: dict[str, Any] = {}
    for index, app in enumerate(apps):
        if not isinstance(app, dict):
            raise InvalidTargetState(str(index), "expected an object")
        app_config = app.get("config") or {}
        if not isinstance(app_config, dict):
            raise InvalidTargetState(f"{index}.config", "expected an object")
        config.update(app_config)
        environment = app.get("env") or {}
        if not isinstance(environment, dict):
            raise InvalidTargetState(f"{index}.env", "expected an object")
        strategy = app_config.get("RESIN_SUPERVISOR_UPDATE_STRATEGY", "download-then-kill")
        service = {
            "serviceName": "main",
            "image": app.get("imageId"),
            "imageId": 1,
            "environment": {k: v for k, v in environment.items() if not str(k).startswith("RESIN_")},
            "labels": {
                **LEGACY_LABELS,
                "io.balena.update.strategy": strategy,
                "io.balena.update.handover-timeout": app_config.get("RESIN_SUPERVISOR_HANDOVER_TIMEOUT", ""),
            },
            "privileged": True,
            "network_mode": "host",
            "volumes": [f"{LEGACY_DATA_VOLUME}:/data"],
            "restart": app_config.get("RESIN_APP_RESTART_POLICY", "always"),
        }
        converted[str(app.get("appId"))] = {
            "name": app.get("name") or str(app.get("appId")),
            "commit": app.get("commit"),
            "releaseId": 1,
            "services": {"1": service},
            "volumes": {LEGACY_DATA_VOLUME: {}},
        }
    return {"config": config, "apps": converted}


def load_preloaded_apps() -> bool:
    """Make apps.json the target if there is one and the device has no target from its
    cloud yet; returns whether it did. A file that cannot be read or does not validate is
    left in place and logged (as a system log line too) once. Raises CloudError when the
    cloud must name the apps of a v2 file and cannot now."""

    path = Path(settings.SUPERVISOR_APPS_JSON)
    if not path.exists():
        return False
    device = cloud_device()
    if device is not None and device.provisioned and load_target() is not None:
        return False

    def app_uuid(app_id: int) -> str:
        return fetch_application_uuid(device, app_id) if device is not None else str(app_id)

    try:
        document = json.loads(path.read_text())
        uuid = current_device_identity().uuid
        target, pin = preloaded_target(document, device_uuid=uuid, app_uuid=app_uuid)
    except (OSError, ValueError) as exc:  # InvalidTargetState is a ValueError
        version = _file_version(path)
        if redis_client().getset(PRELOAD_REFUSED_KEY, version) != version.encode():
            system_log(f"Ignoring the preloaded apps in {path}: {exc}", is_stderr=True)
        return False
    # Renamed first: of the worker's start and a cloud tick, only one loads it.
    preloaded = path.with_name(path.name + PRELOADED_SUFFIX)
    try:
        os.rename(path, preloaded)
    except FileNotFoundError:
        return False
    try:
        accept_target(target)
    except BaseException:
        os.rename(preloaded, path)
        raise
    if pin is not None:
        write_file_atomically(Path(settings.SUPERVISOR_DATA_DIR) / PIN_FILE, json.dumps({"release": pin}))
    system_log(f"Preloaded apps loaded from {path}")
    return True


def _file_version(path: Path) -> str:
    try:
        stat = path.stat()
    except OSError:
        return ""
    return f"{stat.st_mtime_ns}:{stat.st_size}"


def pin_to_preloaded_release() -> None:
    """Once the device is provisioned, pin it to the preloaded release if apps.json asked
    to; raises CloudError to be tried again on the next tick."""

    path = Path(settings.SUPERVISOR_DATA_DIR) / PIN_FILE
    if not path.exists():
        return
    device = cloud_device()
    if device is None or not device.provisioned:
        return
    try:
        release = int(json.loads(path.read_text())["release"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("ignoring unreadable %s (%s)", path, exc)
        path.unlink(missing_ok=True)
        return
    try:
        pin_device_to_release(device, release)
    except PinRefused as exc:
        logger.warning("not pinned to the preloaded release: %s; not asked again", exc)
    else:
        logger.info("pinned to the preloaded release %s", release)
    path.unlink(missing_ok=True)
