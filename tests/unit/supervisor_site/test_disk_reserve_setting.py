"""SUPERVISOR_DISK_RESERVE_MB as the agent reads it at start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[3]


def reserve_setting(value: str) -> subprocess.CompletedProcess[str]:
    """Start Django as the agent does, with the variable set, and print the setting."""
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings; "
         "print(settings.SUPERVISOR_DISK_RESERVE_MB)"],
        cwd=PROJECT_DIR, env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings",
                              "SUPERVISOR_DISK_RESERVE_MB": value},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_whole_number_of_mb_is_the_reserve() -> None:
    started = reserve_setting(" 1024 ")
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "1024"


@pytest.mark.parametrize("value", ["abc", "-5", "1.5", "٣"])
def test_anything_else_stops_the_start_naming_the_variable(value: str) -> None:
    started = reserve_setting(value)
    assert started.returncode != 0
    assert (
        "SUPERVISOR_DISK_RESERVE_MB must be a whole number of MB (10^6 bytes), not " + repr(value)
        in started.stderr
    )
