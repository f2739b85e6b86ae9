"""The settings that the agent's supervising parent and `make run` need, read from the
environment without Django (so that the parent stays small); settings.py takes them from
here. Names and defaults: docs/configuration.md "Environment variables"."""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def project_path(value: str) -> Path:
    """Relative paths are taken from the project directory, not the caller's cwd."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else (BASE_DIR / path).resolve()


SUPERVISOR_DATA_DIR = project_path(os.environ.get("SUPERVISOR_DATA_DIR", "./var"))
# By default the agent runs a Redis of its own on a unix socket in the data dir (mode 0700):
# nothing outside the agent's user can queue tasks.
REDIS_URL = os.environ.get("REDIS_URL", f"unix://{SUPERVISOR_DATA_DIR / 'redis.sock'}?db=0")
DOCKER_HOST = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
SUPERVISOR_LOG_LEVEL = os.environ.get("SUPERVISOR_LOG_LEVEL", "INFO").upper()
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
