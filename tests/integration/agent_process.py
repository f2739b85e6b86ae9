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

from supervisor_site.system_services import wait_until

PROJECT_DIR = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def process_title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def children_of(pid: int) -> dict[int, str]:
    """pid → title of the processes whose parent is `pid`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found[int(entry.name)] = process_title(int(entry.name))
    return found


STARTED: list[Agent] = []
"""Every agent started, for the tests' teardown to stop whatever a failed test left running."""


@dataclass
class Agent:
    data_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}-agent.log"

    def start(self, *, wait: bool = True) -> None:
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("SUPERVISOR_", "REDIS_URL", "DJANGO_SETTINGS"))}  # fmt: skip
        env.update(
            SUPERVISOR_DATA_DIR=str(self.data_dir),
            SUPERVISOR_HOST_ROOT=str(self.data_dir.parent / "host"),
            SUPERVISOR_PORT=str(self.port),
            SUPERVISOR_LED_FILE=str(self.data_dir.parent / "led0"),
            PYTHONUNBUFFERED="1",
            **self.extra_env,
        )
        STARTED.append(self)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "supervisor_site.agent"], cwd=PROJECT_DIR, env=env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        if wait:
            assert wait_until(self.answers, 60), f"the agent did not answer; see {self.log_path}"
            assert wait_until(self.ready, 60)

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

    def children(self) -> dict[int, str]:
        assert self.process is not None
        return children_of(self.process.pid)

    def child(self, role: str) -> int | None:
        """The pid of the child whose title names `role` (agent, redis)."""
        name = "redis-server" if role == "redis" else f"supervisor: {role}"
        return next((pid for pid, title in self.children().items() if title.startswith(name)), None)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url("/ping"), timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def ready(self) -> bool:
        """The agent process runs, its web server answers and its worker is ready."""
        return self.child("agent") is not None and self.answers() and self.worker_ready()

    def worker_ready(self) -> bool:
        """The agent process the parent started last has said its worker is ready (Celery's
        `celery@host ready.`)."""
        text = self.log_text()
        return text.rfind(" ready.") > text.rfind("started agent (pid") >= 0

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
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
