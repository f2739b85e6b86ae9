"""The balena CLI, the real local-mode client, installed from npm into a cache folder once.

The install recipe and the environment that keeps the CLI offline are those of
docs/local-mode.md "Installing the balena CLI". npm and the CLI run on the Node that `make test-node` puts in
.cache/node/bin (the system's when it is recent enough, else one from the npm registry),
or else on PATH's node if that one is in range. Tests skip only when no such Node or no
npm is found, and fail instead under CI=true; any other install problem is a failure.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent
BALENA_CLI_VERSION = "22.5.5"
CACHE_DIR = PROJECT_DIR / ".cache" / "balena-cli"
NODE_BIN_DIR = PROJECT_DIR / ".cache" / "node" / "bin"
# The `engines.node` of balena-cli 22.5.5: >= 20.6.0, < 23.
NODE_MIN = (20, 6)
NODE_MAX = (23, 0)
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


def missing_tool(message: str) -> NoReturn:
    """Skips the test for a tool this machine lacks; fails it under CI=true, where `make test`
    should have provided the tool and a skip would hide that it did not."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: a missing tool fails the run)")
    pytest.skip(message)


def path_with(bin_dir: Path) -> str:
    """This process's PATH with `bin_dir` first."""
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}"


@dataclass(frozen=True)
class Node:
    """The folder of the Node that runs npm and the CLI, and the npm to run."""

    bin_dir: Path
    npm: str

    def environment(self) -> dict[str, str]:
        """This environment with `bin_dir` first on PATH, where the `#!/usr/bin/env node`
        of npm and of the CLI look."""
        return {**os.environ, "PATH": path_with(self.bin_dir)}


def node_version(node: str) -> tuple[int, int, int] | None:
    """`node --version` as numbers, or None when it does not run."""
    try:
        result = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)\s*", result.stdout)
    if result.returncode != 0 or match is None:
        return None
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def find_node(node_bin_dir: Path = NODE_BIN_DIR) -> Node:
    """The Node of `make test-node` in `node_bin_dir`, else PATH's node if its version is in
    range; with the npm beside it, else PATH's npm (run by that Node, first on PATH).

    Skips the test (fails it under CI=true) when there is no such Node or no npm.
    """
    seen: list[str] = []
    for candidate in (str(node_bin_dir / "node"), shutil.which("node")):
        if candidate is None or not os.access(candidate, os.X_OK):
            continue
        version = node_version(candidate)
        if version is not None and NODE_MIN <= version[:2] < NODE_MAX:
            bin_dir = Path(candidate).parent
            break
        seen.append(f"{candidate} is v{'.'.join(map(str, version))}" if version else f"{candidate} fails")
    else:
        missing_tool(
            f"no Node >= {NODE_MIN[0]}.{NODE_MIN[1]}, < {NODE_MAX[0]} for balena-cli {BALENA_CLI_VERSION}"
            f" ({'; '.join(seen) or 'none found'}): `make test-node` puts one in {node_bin_dir}"
        )
    npm = shutil.which("npm", path=path_with(bin_dir))
    if npm is None:
        missing_tool(
            "npm is not installed: the balena CLI tests install balena-cli from npm"
            f" (`make test-node` puts it in {node_bin_dir})"
        )
    return Node(bin_dir, npm)


def installed_executable(node: Node, cache_dir: Path = CACHE_DIR) -> Path:
    """The `balena` executable in `cache_dir`, installed with `node`'s npm unless it is there already.

    Fails the test when the install fails.
    """
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
                [node.npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
                cwd=cache_dir,
                env=node.environment(),
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


def install_in_background(cache_dir: Path = CACHE_DIR) -> threading.Thread:
    """Start installing the CLI (on a fresh clone npm takes about 40 s, mostly waiting on the
    registry) while other tests run. The tests' own `balena_cli()` then waits for it on the
    install's lock, and reports its failure, if any, by installing again."""

    def install() -> None:
        with contextlib.suppress(BaseException):  # pytest.skip and pytest.fail included
            installed_executable(find_node(), cache_dir)

    thread = threading.Thread(target=install, name="balena-cli-install", daemon=True)
    thread.start()
    return thread


def offline_environment(data_dir: Path, node: Node) -> dict[str, str]:
    """The CLI's environment: `node` first on PATH, no Sentry, analytics, update check or
    self-update, and an empty data directory (no balenaCloud login), so that it reaches
    nothing but the device. BALENARC_OFFLINE_MODE stays unset: push and device logs refuse
    to run under it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        k: v for k, v in node.environment().items() if not k.startswith(("BALENARC_", "BALENA_", "DOCKER_"))
    }
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
    node = find_node()
    return BalenaCli(installed_executable(node, cache_dir), offline_environment(data_dir, node))
