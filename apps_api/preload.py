"""Apps preloaded into the device image (target-state.md "apps.json preload").

A preloaded device boots with its release's images already in the engine and an
`apps.json` describing them: `{config, apps, pinDevice?}`, the apps in the v3 form (keyed
by app uuid) or the v2 one (keyed by numeric app id, whose uuid the cloud tells). It is
the device's target until the cloud sends one: loaded when the device is not provisioned
or has no target yet, then renamed `apps.json.preloaded`. With `pinDevice`, the device
is pinned to the preloaded release once it is provisioned.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from apps_api.engine.state import InvalidTargetState, TargetState

logger = logging.getLogger(__name__)

PRELOADED_SUFFIX = ".preloaded"
PIN_FILE = "preloaded-release-pin.json"


def preloaded_target(
    document: object, *, device_uuid: str, app_uuid: Callable[[int], str]
) -> tuple[TargetState, int | None]:
    """The target an apps.json describes, and the release to pin the device to (None
    without `pinDevice`). `app_uuid` gives the uuid of a v2 app from its id. Raises
    InvalidTargetState (paths as in the file: `apps.<key>...`)."""
    from apps_api.target import parse_cloud_target, parse_local_target

    if not isinstance(document, dict):
        raise InvalidTargetState("", "must be an object")
    apps = document.get("apps", {})
    if isinstance(apps, list):
        raise InvalidTargetState("apps", "the legacy array form is not supported; preload a v2 or v3 release")
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
            target = parse_cloud_target(wrapped, device_uuid=device_uuid)
    except InvalidTargetState as exc:
        # The parsers name paths from their own roots ("local.apps.1", "<uuid>.apps.x").
        path = exc.path.removeprefix("local.").removeprefix(f"{device_uuid}.")
        raise InvalidTargetState(path, exc.problem) from exc
    pin = document.get("pinDevice") is True
    release = next((app.release_id for app in target.apps if app.release_id is not None), None)
    return target, (release if pin else None)


_refused_version: tuple[int, int] | None = None


def _file_version(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def load_preloaded_apps() -> bool:
    """Make apps.json the target if there is one and the device has no target from its
    cloud yet; returns whether it did. A file that cannot be read or does not validate is
    left in place and logged (as a system log line too)."""
    from django.conf import settings

    from apps_api.actions import set_target_state
    from apps_api.cloud import CloudError, cloud_device, fetch_application_uuid
    from apps_api.engine.apply import system_log
    from apps_api.target_store import load_target
    from hostcfg.atomic_file import write_file_atomically
    from hostcfg.identity import current_device_identity

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
        global _refused_version
        version = _file_version(path)
        if version != _refused_version:  # said once, not at every tick
            _refused_version = version
            system_log(f"Ignoring the preloaded apps in {path}: {exc}", is_stderr=True)
        return False
    except CloudError as exc:
        logger.warning("preloaded apps: %s; trying again later", exc)
        return False
    # Renamed first: of the worker's start and a cloud tick, only one loads it.
    preloaded = path.with_name(path.name + PRELOADED_SUFFIX)
    try:
        os.rename(path, preloaded)
    except FileNotFoundError:
        return False
    try:
        set_target_state(target)
    except BaseException:
        os.rename(preloaded, path)
        raise
    if pin is not None:
        write_file_atomically(Path(settings.SUPERVISOR_DATA_DIR) / PIN_FILE, json.dumps({"release": pin}))
    system_log(f"Preloaded apps loaded from {path}")
    return True


def pin_to_preloaded_release() -> None:
    """Once the device is provisioned, pin it to the preloaded release if apps.json asked
    to; raises CloudError to be tried again on the next tick."""
    from django.conf import settings

    from apps_api.cloud import cloud_device, pin_device_to_release

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
    pin_device_to_release(device, release)
    path.unlink(missing_ok=True)
    logger.info("pinned to the preloaded release %s", release)
