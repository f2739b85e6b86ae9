"""The whole agent as a device runs it (`python -m supervisor_site.agent`: the supervising
parent, its agent process (web and worker) and its own redis-server), in a data dir of its own,
for the runtime and fault tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from supervisor_site.system_services import wait_until
from tests.route_coverage import record_route

PROJECT_DIR = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def process_title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (state first, then ppid)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def processes() -> dict[int, str]:
    """pid → title of every process."""
    return {int(entry.name): process_title(int(entry.name)) for entry in Path("/proc").iterdir()
            if entry.name.isdigit()}  # fmt: skip


def children_of(pid: int) -> dict[int, str]:
    """pid → title of the processes whose parent is `pid`."""
    found = {}
    for child, title in processes().items():
        try:
            ppid = int(_stat_fields(child)[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found[child] = title
    return found


def process_alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie waiting for its parent is not)."""
    try:
        return _stat_fields(pid)[0] != "Z"
    except (OSError, IndexError):
        return False


STARTED: list[Agent] = []
"""Every agent started, for the tests' teardown to stop whatever a failed test left running."""


@dataclass
class Agent:
    """One agent started as `make run` starts it: the supervising parent in a session of its
    own, with a data dir, host root and port of its own."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    address: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    host_root: Path | None = None
    log_file: Path | None = None
    project_dir: Path = PROJECT_DIR
    """The checkout whose agent runs (another release's, for the upgrade test)."""
    entry: str = "supervisor_site.agent"
    """The module run: the parent itself, or `make run`'s launcher in front of it in the same
    process (supervisor_site.launcher, which first starts the system services missing)."""

    @property
    def log_path(self) -> Path:
        return self.log_file or self.data_dir.parent / f"{self.data_dir.name}-agent.log"

    @property
    def base_url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def environment(self) -> dict[str, str]:
        """The environment the agent runs with: the unit's, plus this agent's paths and port."""
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("SUPERVISOR_", "REDIS_URL", "DJANGO_SETTINGS"))}  # fmt: skip
        env.update(
            SUPERVISOR_DATA_DIR=str(self.data_dir),
            SUPERVISOR_HOST_ROOT=str(self.host_root or self.data_dir.parent / "host"),
            SUPERVISOR_PORT=str(self.port),
            SUPERVISOR_LED_FILE=str(self.data_dir.parent / "led0"),
            PYTHONUNBUFFERED="1",
        )
        if self.address != "127.0.0.1":  # else the default: loopback and the supervisor0 gateway
            env["SUPERVISOR_LISTEN_ADDRESS"] = self.address
        # Never the host's own bus or firewall: the tests' private bus and network namespace.
        for name in ("SUPERVISOR_DBUS_ADDRESS", "SUPERVISOR_FIREWALL_NETNS"):
            if name in os.environ:
                env[name] = os.environ[name]
        env.update(self.extra_env)
        return env

    @property
    def env(self) -> dict[str, str]:
        return self.environment()

    def start(self, *, wait: bool = True) -> None:
        if self not in STARTED:
            STARTED.append(self)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.entry], cwd=self.project_dir, env=self.environment(),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        assert self.process is not None
        process = self.process
        if not wait_until(lambda: self.ready() or process.poll() is not None, timeout):
            raise AssertionError(f"the agent is not ready after {timeout:.0f} s; see {self.log_path}")
        assert process.poll() is None, f"the agent exited with {process.returncode}; see {self.log_path}"

    def stop(self, timeout: float = 30) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise

    def restart(self, **env: str) -> None:
        """Stop the whole agent and start it again, with `env` changed (a value of "" unsets)."""
        self.stop()
        for name, value in env.items():
            if value:
                self.extra_env[name] = value
            else:
                self.extra_env.pop(name, None)
        self.start()

    def kill_agent(self, *, wait: bool = True, signum: int = signal.SIGKILL) -> int:
        """Signal the agent process (SIGKILL: as after a crash; SIGTERM: a graceful end) and
        let the parent start it again, as it does on a device; waits until the new one is
        ready. Returns the pid that ended."""
        pid = self.child("agent")
        assert pid is not None, "no agent process to kill"
        os.kill(pid, signum)
        assert wait_until(lambda: not process_alive(pid), 15)
        if wait:
            assert wait_until(lambda: self.child("agent") not in (None, pid), 30), (
                "the agent did not come back"
            )
            self.wait_ready()
        return pid

    def children(self) -> dict[int, str]:
        assert self.process is not None
        return children_of(self.process.pid)

    def child(self, role: str) -> int | None:
        """The pid of the child whose title names `role` (agent, redis)."""
        name = "redis-server" if role == "redis" else f"supervisor: {role}"
        return next((pid for pid, title in self.children().items() if title.startswith(name)), None)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.url(path), timeout=10, **kwargs)

    def output(self) -> str:
        """What the agent printed so far (its parent, redis-server's start, the agent process)."""
        return self.log_text()

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url("/ping"), timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def ready(self) -> bool:
        """The agent process runs, its web server answers and its worker is ready."""
        pid = self.child("agent")
        return pid is not None and self.answers() and self.worker_ready(pid)

    def worker_ready(self, pid: int) -> bool:
        """The agent process `pid` has said its worker is ready (Celery's `celery@host ready.`)."""
        text = self.log_text()
        started = text.rfind(f"started agent (pid {pid})")
        return started >= 0 and text.find(" ready.", started) > started

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        record_route(method, path)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url(path), data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")
