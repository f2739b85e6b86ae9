"""Processes that start at once on a fresh data dir agree on what they create there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]
PRINT_KEY = "from django.conf import settings; print(settings.SECRET_KEY)"


def test_processes_started_together_share_one_secret_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPERVISOR_", "DJANGO_"))}
    env.update(SUPERVISOR_DATA_DIR=str(tmp_path / "data"), DJANGO_SETTINGS_MODULE="supervisor_site.settings")
    starting = [
        subprocess.Popen([sys.executable, "-c", PRINT_KEY], cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE)
        for _ in range(8)
    ]
    keys = {process.communicate(timeout=60)[0].decode().strip() for process in starting}
    assert keys == {(tmp_path / "data" / "secret_key").read_text()}
    assert [p.name for p in (tmp_path / "data").iterdir() if p.name.startswith(".secret_key")] == []
