"""Entering and leaving local mode on a managed device (docs/local-mode.md "Leaving local mode").

Entering writes down the supervised containers and volumes and the local-build images that
exist; leaving removes those created since (what the developer pushed) and forgets the
local-mode targets, so the device goes back to exactly its fleet's release. Only objects
the supervisor recognises are touched: supervised labels, or the `io.resin.local.image`
label of local builds.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from django.conf import settings

from apps_api.apply_status import bump_target_version
from apps_api.engine import docker as engine
from apps_api.logs.publisher import system_log
from apps_api.models import TargetRecord
from hostcfg.atomic_file import write_file_atomically

logger = logging.getLogger(__name__)

SNAPSHOT_FILE = "local-mode-snapshot.json"


def enter_local_mode() -> None:
    snapshot = {
        "containers": sorted(c["Id"] for c in engine.list_supervised_containers()),
        "volumes": sorted(v["Name"] for v in engine.list_supervised_volumes()),
        "images": sorted(engine.list_local_mode_images()),
    }
    write_file_atomically(_snapshot_path(), json.dumps(snapshot))
    system_log("Entering local mode")


def leave_local_mode() -> None:
    """Remove what local mode created and forget local-mode targets. Without a readable
    snapshot nothing is removed: what is there cannot be told from the fleet's own data."""

    snapshot = _read_snapshot()
    if snapshot is None:
        logger.warning("no snapshot of the state before local mode: nothing cleaned up")
        system_log("Leaving local mode: no snapshot of the state before it, nothing cleaned up")
    else:
        _remove_what_local_mode_made(*snapshot)
        system_log("Leaving local mode: removed what it created")
    TargetRecord.objects.filter(source="local").delete()
    _snapshot_path().unlink(missing_ok=True)
    bump_target_version()


def _read_snapshot() -> tuple[set[str], set[str], set[str]] | None:
    """(containers, volumes, images) as they were when local mode began; None when the
    snapshot is missing or unreadable."""
    try:
        snapshot = json.loads(_snapshot_path().read_bytes())
        kinds = [snapshot[kind] for kind in ("containers", "volumes", "images")]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if not all(isinstance(names, list) and all(isinstance(n, str) for n in names) for names in kinds):
        return None
    containers, volumes, images = (set(names) for names in kinds)
    return containers, volumes, images


def _remove_what_local_mode_made(
    kept_containers: set[str], kept_volumes: set[str], kept_images: set[str]
) -> None:
    for container in engine.list_supervised_containers():
        if container["Id"] not in kept_containers:
            engine.kill_container(container["Id"])
    for volume in engine.list_supervised_volumes():
        if volume["Name"] not in kept_volumes:
            engine.remove_volume(volume["Name"])
    for image_id in engine.list_local_mode_images():
        if image_id not in kept_images:
            engine.remove_image_by_id(image_id)


def _snapshot_path() -> Path:
    return Path(settings.SUPERVISOR_DATA_DIR) / SNAPSHOT_FILE
