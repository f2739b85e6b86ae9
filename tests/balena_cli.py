"""The balena CLI, the real local-mode client, installed from npm into a cache folder once.

The install recipe and the environment that keeps the CLI offline are those of
spec/balena-cli.md. Tests skip only when npm itself is missing; any other install
problem is a failure.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent
BALENA_CLI_VERSION = "22.5.5"
CACHE_DIR = PROJECT_DIR / ".cache" / "balena-cli"
INSTALL_TIMEOUT = 900.0

# unbzip2-stream would otherwise come from a git host, unreachable from this machine.
PACKAGE_JSON = {
    "name": "balena-cli-for-tests",
    "private": True,
    "dependencies": {"balena-cli": BALENA_CLI_VERSION},
    "overrides": {"unbzip2-stream": "1.4.3"},
}


@dataclass(frozen=True)
class BalenaCli:
    """The `balena` executable and the environment to run it in."""

    executable: Path
    env: dict[str, str]

    def command(self, *args: str) -> list[str]:
        return [str(self.executable), *args]


def installed_executable(cache_dir: Path = CACHE_DIR) -> Path:
    """The `balena` executable in `cache_dir`, installed with npm unless it is there already.

    Skips the test when npm is unavailable; fails it when the install fails.
    """
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip(
            "npm is not installed: the balena CLI tests install balena-cli from npm (apt install npm)"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    executable = cache_dir / "node_modules" / ".bin" / "balena"
    marker = cache_dir / f".installed-{BALENA_CLI_VERSION}"
    # One install at a time, should two test sessions start together.
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and executable.exists():
            return executable
        marker.unlink(missing_ok=True)
        (cache_dir / "package.json").write_text(json.dumps(PACKAGE_JSON, indent=2) + "\n")
        try:
            result = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
                cwd=cache_dir,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"npm install balena-cli@{BALENA_CLI_VERSION} took over {INSTALL_TIMEOUT:.0f} s")
        if result.returncode != 0 or not executable.exists():
            pytest.fail(
                f"npm install balena-cli@{BALENA_CLI_VERSION} failed ({result.returncode}) in {cache_dir}:\n"
                f"{result.stderr[-4000:]}"
            )
        marker.touch()
    return executable


def offline_environment(data_dir: Path) -> dict[str, str]:
    """The CLI's environment: no Sentry, analytics, update check or self-update, and an empty
    data directory (no balenaCloud login), so that it reaches nothing but the device.
    BALENARC_OFFLINE_MODE stays unset: push and device logs refuse to run under it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BALENARC_", "BALENA_", "DOCKER_"))}
    env.update(
        BALENARC_NO_SENTRY="1",
        BALENARC_NO_ANALYTICS="1",
        BALENARC_UNSUPPORTED="1",
        BALENARC_DATA_DIRECTORY=str(data_dir),
        NO_UPDATE_NOTIFIER="1",
        BALENA_DISABLE_AUTOUPDATE="1",
    )
    return env


def balena_cli(data_dir: Path, cache_dir: Path = CACHE_DIR) -> BalenaCli:
    """The installed CLI with an offline environment whose data directory is `data_dir`."""
    return BalenaCli(installed_executable(cache_dir), offline_environment(data_dir))
