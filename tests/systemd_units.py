"""The agent started the way a device's systemd starts it (supervisor_site/deploy): Redis as
the command line of its own unit, then the agent process as the command line of the agent's
unit, each with the unit's environment, working directory and umask, and no supervising
parent. The units are read here as systemd reads them: `Environment=` first, the settings
file over it (here: the test's own settings), `${NAME}` expanded in `ExecStart=`, and the
install directory /opt/balena-supervisor-python replaced by the checkout's."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tests.agent_process import PROJECT_DIR, STARTED, Agent, process_alive

DEPLOY_DIR = PROJECT_DIR / "supervisor_site" / "deploy"
AGENT_UNIT = DEPLOY_DIR / "balena-supervisor-python.service"
REDIS_UNIT = DEPLOY_DIR / "balena-supervisor-python-redis.service"
INSTALL_DIR = "/opt/balena-supervisor-python"


def unit_settings(unit: Path) -> list[tuple[str, str]]:
    """Every `Key=value` of the unit, in order (a key may come more than once)."""
    lines = [line.strip() for line in unit.read_text().splitlines()]
    return [(key, value) for key, _, value in (line.partition("=") for line in lines
            if "=" in line and not line.startswith(("#", ";")))]  # fmt: skip


def unit_setting(unit: Path, key: str, default: str | None = None) -> str:
    """The value systemd takes for `key`: its last one, else `default` (systemd's own)."""
    values = [value for name, value in unit_settings(unit) if name == key]
    assert values or default is not None, f"{unit.name} has no {key}="
    return values[-1] if values else str(default)


def unit_environment(unit: Path, settings_file: dict[str, str]) -> dict[str, str]:
    """The unit's `Environment=` lines, with what its `EnvironmentFile=` holds over them."""
    lines = [value for key, value in unit_settings(unit) if key == "Environment"]
    return {**dict(line.partition("=")[::2] for line in lines), **settings_file}


def unit_command(unit: Path, environment: dict[str, str], install_dir: Path = PROJECT_DIR) -> list[str]:
    """`ExecStart=` split into arguments as systemd splits it, `${NAME}` expanded."""
    text = unit_setting(unit, "ExecStart").replace(INSTALL_DIR, str(install_dir))
    expand = re.compile(r"\$\{(\w+)\}")
    return [expand.sub(lambda match: environment[match.group(1)], word) for word in shlex.split(text)]


def start_unit(unit: Path, settings_file: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """The unit's service process, as systemd starts it (a session of its own, the unit's
    umask and working directory)."""
    environment = unit_environment(unit, settings_file)
    umask = int(unit_setting(unit, "UMask"), 8)
    working_dir = unit_setting(unit, "WorkingDirectory", "/").replace(INSTALL_DIR, str(PROJECT_DIR))
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            unit_command(unit, environment), cwd=working_dir, env=environment, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, umask=umask,
        )  # fmt: skip


def stop_unit(process: subprocess.Popen[bytes], unit: Path) -> int:
    """SIGTERM, then SIGKILL once the unit's TimeoutStopSec has passed, as systemd does.
    Returns the exit status (negative: the signal that ended it)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(float(unit_setting(unit, "TimeoutStopSec", "90")))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    return process.wait()


@dataclass
class UnitsAgent(Agent):
    """An agent as the units run it: `process` is the agent process itself, `redis` its
    Redis. Each is started again `RestartSec=` after it ends (`Restart=always`), unless it
    ended with a status of `RestartPreventExitStatus=` or the agent is being stopped. As
    with `Type=simple`, the agent process starts once Redis has been started, not once it
    listens. Unlike systemd: the environment is the test's own (not systemd's short one)
    and there is no cgroup (a stopped agent's own children end with it by themselves)."""

    redis: subprocess.Popen[bytes] | None = None
    log_offset: int = 0
    """Where the log of the newest agent process begins (for worker_ready)."""
    stopping: threading.Event = field(default_factory=threading.Event)
    """Set by stop(); each start() has its own, so that a stopped generation stays stopped."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, *, wait: bool = True) -> None:
        if self not in STARTED:
            STARTED.append(self)
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # StateDirectory=
        with self.lock:
            self.stopping = threading.Event()
            self.start_unit("redis", self.stopping)
            self.start_unit("agent", self.stopping)
        if wait:
            self.wait_ready()

    def start_unit(self, role: str, stopping: threading.Event) -> None:
        unit = AGENT_UNIT if role == "agent" else REDIS_UNIT
        if role == "agent":
            self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self.process = process = start_unit(unit, self.environment(), self.log_path)
        else:
            self.redis = process = start_unit(unit, self.environment(), self.log_path)
        threading.Thread(target=self.keep_running, args=(role, unit, process, stopping), daemon=True).start()

    def keep_running(
        self, role: str, unit: Path, process: subprocess.Popen[bytes], stopping: threading.Event
    ) -> None:
        code = process.wait()
        prevented = unit_setting(unit, "RestartPreventExitStatus", "").split()
        if str(code) in prevented or stopping.wait(float(unit_setting(unit, "RestartSec"))):
            return
        with self.lock:
            if not stopping.is_set():
                self.start_unit(role, stopping)

    def stop(self, timeout: float = 30) -> int | None:
        """The agent's unit, then Redis's, as at shutdown (the agent is ordered after Redis)."""
        with self.lock:
            self.stopping.set()
        if self.process is None:
            return None
        code = stop_unit(self.process, AGENT_UNIT)
        if self.redis is not None:
            stop_unit(self.redis, REDIS_UNIT)
        return code

    def children(self) -> dict[int, str]:
        started = {"agent": self.process, "redis": self.redis}
        return {p.pid: role for role, p in started.items() if p is not None and process_alive(p.pid)}

    def child(self, role: str) -> int | None:
        return next((pid for pid, name in self.children().items() if name == role), None)

    def worker_ready(self, pid: int) -> bool:
        return b" ready." in self.log_path.read_bytes()[self.log_offset :]
