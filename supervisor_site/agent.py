"""The agent's supervising parent: `python -m supervisor_site.agent` (the systemd unit) and
`make run` (through supervisor_site.launcher) start the agent this way.

The parent loads neither Django nor the project (the few settings it needs come from
environment.py), so that it stays small, and keeps two children running:

- `supervisor: agent` (agent_main.py): the web server and the Celery worker, its beat
  scheduler, the log collector and the cloud log uploader, in one process;
- `redis-server`, when the agent runs its own (REDIS_URL a unix socket: the default).

A child that exits is started again after 1 s, doubling to 30 s while it keeps dying (a
child that ran for a minute starts from 1 s again), with one log line naming it and why
it ended. An agent process that ends with EX_CONFIG (78) found a state file it cannot use
and named it: the parent then stops and exits 78 too. SIGTERM or SIGINT stops the agent
process gracefully, then Redis, and exits within 10 s. App containers are Docker's: they
run on while the agent is down and are adopted, not recreated, when it comes back.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from setproctitle import setproctitle

from apps_api.backoff import backoff_delay
from supervisor_site import environment

logger = logging.getLogger("supervisor.agent")

RESTART_BASE_SECONDS = 1.0
RESTART_MAX_SECONDS = 30.0
HEALTHY_RUN_SECONDS = 60.0
# SIGTERM (the agent process ends by itself at most 6 s later, agent_setup.py), then
# SIGKILL: all within 10 s.
STOP_KILL_SECONDS = 8.5
PR_SET_PDEATHSIG = 1
CONFIG_ERROR_EXIT = 78  # EX_CONFIG, as agent_main ends on a state file it cannot use


class Child:
    """A process the parent keeps running. A plain class: dataclasses would load inspect and
    ast into the parent (about 1.3 MiB)."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.argv = argv  # the program the forked process executes
        self.pid = 0
        self.started_at = 0.0
        self.failures = 0
        self.start_at = 0.0


def exit_cause(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with {os.waitstatus_to_exitcode(status)}"


# --- set-up, in the parent -------------------------------------------------------------


def private_redis_socket(redis_url: str, data_dir: Path) -> Path | None:
    """The socket of the agent's own Redis, when REDIS_URL names a unix socket."""
    if not redis_url.startswith("unix://"):
        return None
    path = Path(redis_url.removeprefix("unix://").partition("?")[0])
    return path if path.is_absolute() else data_dir / path


def redis_child(socket_path: Path, log_dir: Path) -> Child:
    """redis-server on a unix socket only (no TCP port), the socket 0700, nothing on disk."""
    argv = ["redis-server", "--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700",
            "--save", "", "--appendonly", "no", "--dir", str(socket_path.parent), "--logfile",
            str(log_dir / "redis.log")]  # fmt: skip

    return Child("redis", argv)


def agent_child() -> Child:
    return Child("agent", [sys.executable, "-m", "supervisor_site.agent_main"])


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the signal was asked for
        os._exit(1)


def start(child: Child) -> None:
    parent = os.getpid()
    pid = os.fork()
    if pid:
        child.pid, child.started_at = pid, time.monotonic()
        logger.info("started %s (pid %d)", child.name, pid)
        return
    code = 1
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        os.setsid()  # a Ctrl-C reaches the parent only, which stops the children in order
        _die_with_parent(parent)
        search_path = [str(environment.BASE_DIR), os.getenv("PYTHONPATH")]
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, search_path))
        os.execvp(child.argv[0], child.argv)  # noqa: S606 - the argument list is ours
    except BaseException:
        logger.exception("could not start %s", child.name)
    finally:
        os._exit(code)


# --- supervision ------------------------------------------------------------------------


SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}


def reap(children: list[Child]) -> Iterator[tuple[Child, int]]:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        for child in children:
            if child.pid == pid:
                child.pid = 0
                yield child, status


def supervise(children: list[Child]) -> int:
    """Keep every child running until SIGTERM or SIGINT (0), or until the agent process ends
    on a state file it cannot use (78); then stop them all. Returns that exit code."""
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    for child in children:
        if not child.pid:
            start(child)
    code = 0
    while not code:
        due = [c.start_at for c in children if not c.pid]
        timeout = max(0.05, min(due) - time.monotonic()) if due else 60.0
        received = signal.sigtimedwait(SIGNALS, timeout)
        if received is not None and received.si_signo in (signal.SIGTERM, signal.SIGINT):
            break
        for child, status in reap(children):
            if child.name == "agent" and os.WIFEXITED(status) and os.WEXITSTATUS(status) == CONFIG_ERROR_EXIT:
                code = CONFIG_ERROR_EXIT  # named in its log; starting it again cannot help
                continue
            lived = time.monotonic() - child.started_at
            child.failures = 1 if lived >= HEALTHY_RUN_SECONDS else child.failures + 1
            delay = backoff_delay(child.failures, base=RESTART_BASE_SECONDS, cap=RESTART_MAX_SECONDS)
            child.start_at = time.monotonic() + delay
            logger.warning("%s %s after %.0f s; starting it again in %.0f s", child.name, exit_cause(status),
                           lived, delay)  # fmt: skip
        for child in children:
            if not child.pid and child.start_at <= time.monotonic() and not code:
                start(child)
    stop(children)
    return code


def stop(children: list[Child]) -> None:
    """The agent process first (its worker may need Redis to end cleanly), then Redis."""
    began = time.monotonic()
    apps = [c for c in children if c.name != "redis"]
    _signal(apps, signal.SIGTERM)
    killed = False
    while any(c.pid for c in apps):
        list(reap(children))
        waited = time.monotonic() - began
        if waited >= STOP_KILL_SECONDS and not killed:
            _signal(apps, signal.SIGKILL)
            killed = True
        time.sleep(0.05)
    rest = [c for c in children if c.pid]
    _signal(rest, signal.SIGTERM)
    deadline = time.monotonic() + 1.0
    while any(c.pid for c in rest):
        list(reap(children))
        if time.monotonic() > deadline:
            _signal(rest, signal.SIGKILL)
        time.sleep(0.02)
    logger.info("agent stopped in %.1f s", time.monotonic() - began)


def _signal(children: list[Child], signum: int) -> None:
    for child in children:
        if child.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)


def run() -> int:
    """Set up, then supervise the children until asked to stop. Returns the exit code."""
    setproctitle("supervisor: parent")
    # Secrets live in the data dir (API keys, the database, Redis): nothing the agent creates
    # is readable by other users.
    os.umask(0o077)
    logging.basicConfig(format=environment.LOG_FORMAT, level=environment.SUPERVISOR_LOG_LEVEL)
    data_dir = environment.SUPERVISOR_DATA_DIR
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir.chmod(0o700)  # before Redis puts its socket in it; the agent process tightens the rest
    log_dir = data_dir / "log"
    log_dir.mkdir(mode=0o700, exist_ok=True)
    children: list[Child] = []
    redis_socket = private_redis_socket(environment.REDIS_URL, data_dir)
    if redis_socket is not None:
        children.append(redis_child(redis_socket, log_dir))  # first: up by the time the agent connects
    children.append(agent_child())
    return supervise(children)


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
