"""Containers stopped only for a while, which the worker starts again when it starts.

Two things stop a container this way: POST /v1/apps/:appId/stop (the balena Supervisor
API reference, v9: "a reboot or supervisor restart will cause the container to start
again"; docs/api.md "Stop and start") and a reboot or shutdown, which stops the apps
before the host goes down. Docker's restart policy alone would leave `unless-stopped` and
`no` services down after a manual stop, so the ids are written to the data dir, which
survives both a worker restart and a reboot. Only the worker uses this.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings

from apps_api.engine import docker as engine
from hostcfg.atomic_file import write_file_atomically

logger = logging.getLogger(__name__)

RECORD_FILE = "temporarily-stopped-containers.json"
_guard = threading.Lock()


def remember_temporary_stops(container_ids: Iterable[str]) -> None:
    with _guard:
        _write(_read() | set(container_ids))


def forget_temporary_stop(container_id: str) -> None:
    """The container was started, restarted or stopped for good: nothing to bring back."""
    with _guard:
        recorded = _read()
        if container_id in recorded:
            _write(recorded - {container_id})


def start_temporarily_stopped() -> list[str]:
    """Start every recorded container that still exists and forget them all; returns the
    ids started."""
    with _guard:
        recorded = sorted(_read())
        started = []
        for container_id in recorded:
            try:
                engine.start_container(container_id)
                started.append(container_id)
            except Exception as exc:  # removed meanwhile, or the engine refused: nothing more to do
                logger.info("not starting %s again: %s", container_id, exc)
        _record_path().unlink(missing_ok=True)
    if started:
        logger.info("started %d temporarily stopped container(s) again", len(started))
    return started


def _record_path() -> Path:
    return Path(settings.SUPERVISOR_DATA_DIR) / RECORD_FILE


def _read() -> set[str]:
    try:
        recorded = json.loads(_record_path().read_text())
    except FileNotFoundError:
        return set()
    except ValueError:
        logger.warning("ignoring unreadable %s", _record_path())
        return set()
    return {str(item) for item in recorded} if isinstance(recorded, list) else set()


def _write(container_ids: set[str]) -> None:
    path = _record_path()
    if not container_ids:
        path.unlink(missing_ok=True)
        return
    write_file_atomically(path, json.dumps(sorted(container_ids)))
