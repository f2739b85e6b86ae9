"""The last state report the cloud accepted, kept on the host at
`/tmp/balena-supervisor/state-report-cache` (docs/cloud.md "State report"), so that an
agent restart sends only what changed since, even when Redis lost its data.

The file is `{"<uuid>": {…the whole report…}}`: it holds the API secret, so it is written
0600 in the agent's own `/tmp/balena-supervisor` (see owned_dirs: never in a directory
another user made), replaced atomically. /tmp is cleared at boot, as in the original.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from hostcfg.atomic_file import write_file_atomically
from hostcfg.owned_dirs import UnsafeDirectory, ensure_owned_directory, owned_directory

logger = logging.getLogger(__name__)

CACHE_DIRECTORY = ("balena-supervisor",)
CACHE_NAME = "state-report-cache"
CACHE_MODE = 0o600


def report_cache_path(host_root: Path) -> Path:
    return host_root / "tmp" / Path(*CACHE_DIRECTORY) / CACHE_NAME


def save_report_cache(host_root: Path, uuid: str, report: dict[str, Any]) -> None:
    """Keep `report` as the last one the cloud accepted from device `uuid`. A failure is
    logged, not raised: the cache only saves traffic."""
    try:
        directory = ensure_owned_directory(host_root / "tmp", CACHE_DIRECTORY)
        write_file_atomically(directory / CACHE_NAME, json.dumps({uuid: report}), mode=CACHE_MODE)
    except (OSError, UnsafeDirectory) as exc:
        logger.warning("could not cache the last state report: %s", exc)


def load_report_cache(host_root: Path, uuid: str) -> dict[str, Any]:
    """The last report cached for device `uuid`; {} when there is none, when it was another
    device's, or when the file cannot be read as one (it is then ignored)."""
    try:
        with owned_directory(host_root / "tmp", CACHE_DIRECTORY, create=False) as directory:
            fd = os.open(CACHE_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
            with os.fdopen(fd, encoding="utf-8") as handle:
                cached = json.loads(handle.read())
    except FileNotFoundError:
        return {}
    except (OSError, UnsafeDirectory, ValueError) as exc:
        logger.info("ignoring the cached state report: %s", exc)
        return {}
    report = cached.get(uuid) if isinstance(cached, dict) else None
    if not isinstance(report, dict):
        logger.info("ignoring the cached state report: not a report of device %s", uuid)
        return {}
    return report
