"""The agent's supervising parent: `python -m supervisor_site.agent` (the systemd unit) and
`make run` (through supervisor_site.launcher) start the agent this way.

The parent imports Django and the whole project once, freezes it out of the garbage
collector's sight and forks its children, which so share that memory copy-on-write:

- `supervisor: web`: daphne in-process (the device API, the log streams, the admin);
- `supervisor: worker`: Celery on the threads pool with the beat scheduler in a thread,
  and the log collector and the cloud log uploader as threads;
- `redis-server`, when the agent runs its own (REDIS_URL a unix socket: the default).

A child that exits is started again after 1 s, doubling to 30 s while it keeps dying (a
child that ran for a minute starts from 1 s again), with one log line naming it and why
it ended. SIGTERM or SIGINT stops the web process and the worker gracefully, then Redis,
and exits within 10 s. App containers are Docker's: they run on while the agent is down
and are adopted, not recreated, when it comes back.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import logging
import os
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Secrets live in the data dir (API keys, the database, Redis): nothing the agent creates is
# readable by other users. Set before Django creates the data dir.
os.umask(0o077)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "supervisor_site.settings")

import django  # noqa: E402

django.setup()

import celery.platforms  # noqa: E402
from celery.signals import worker_shutdown  # noqa: E402
from daphne.endpoints import build_endpoint_description_strings  # noqa: E402

# Importing daphne's server installs the asyncio reactor that the web child runs.
from daphne.server import Server  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import DatabaseError, connection, connections  # noqa: E402
from django.db.migrations.executor import MigrationExecutor  # noqa: E402
from setproctitle import setproctitle  # noqa: E402
from twisted.internet import reactor, task  # noqa: E402
from twisted.internet.endpoints import serverFromString  # noqa: E402

from apps_api.apikeys import get_or_create_global_key, prepare_device_identity  # noqa: E402
from apps_api.backoff import backoff_delay  # noqa: E402
from apps_api.engine.container_config import (  # noqa: E402
    SUPERVISOR0_GATEWAY,
    SUPERVISOR0_SUBNET,
    SUPERVISOR_NETWORK,
)
from apps_api.engine.docker import ensure_supervisor_network as ensure_network  # noqa: E402
from apps_api.logs.collection import LogCollection  # noqa: E402
from hostcfg.identity import DeviceConfigError  # noqa: E402
from supervisor_site.celery import app  # noqa: E402

logger = logging.getLogger("supervisor.agent")

RESTART_BASE_SECONDS = 1.0
RESTART_MAX_SECONDS = 30.0
HEALTHY_RUN_SECONDS = 60.0
# SIGTERM, then (the worker) Celery's cold shutdown, then SIGKILL: all within 10 s.
STOP_GRACE_SECONDS = 6.0
STOP_KILL_SECONDS = 8.5
PR_SET_PDEATHSIG = 1
LISTEN_RETRY_SECONDS = 10.0
NETWORK_RETRY_SECONDS = 10.0
CONFIG_ERROR_EXIT = 78  # EX_CONFIG


@dataclass
class Child:
    name: str
    run: Callable[[], None]
    """Runs in the forked process; returning ends the child with exit code 0."""
    pid: int = 0
    started_at: float = 0.0
    failures: int = 0
    start_at: float = 0.0


def exit_cause(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with {os.waitstatus_to_exitcode(status)}"


# --- set-up, in the parent -------------------------------------------------------------


def tighten_data_dir(data_dir: Path) -> None:
    """An install made before modes were enforced: the data dir 0700, what is in it 0600
    (directories 0700). Symlinks are not followed; other users' files are left alone."""
    for root, directories, files in os.walk(data_dir, followlinks=False):
        for name, mode in [(d, 0o700) for d in directories] + [(f, 0o600) for f in files]:
            path = Path(root) / name
            with contextlib.suppress(OSError):
                info = path.lstat()
                if not stat.S_ISLNK(info.st_mode) and info.st_uid == os.getuid():
                    path.chmod(mode | (info.st_mode & 0o100))  # a file's owner-execute bit is kept
    data_dir.chmod(0o700)


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

    def run() -> None:
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()  # a killed server's socket: the new one binds the same path
        os.execvp(argv[0], argv)  # noqa: S606 - the argument list is ours

    return Child("redis", run)


class StateUnusable(Exception):
    """A file the agent keeps its state in cannot be used; the message names it."""


def check_database() -> None:
    """The database is whole (a power cut or a full disk can leave it malformed)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA quick_check")
            verdict = cursor.fetchone()[0]
    except DatabaseError as exc:
        raise StateUnusable(f"{settings.SUPERVISOR_DATABASE}: {exc}") from exc
    if verdict != "ok":
        raise StateUnusable(f"{settings.SUPERVISOR_DATABASE}: {verdict}")


def migrate_if_needed() -> None:
    executor = MigrationExecutor(connection)
    if executor.migration_plan(executor.loader.graph.leaf_nodes()):
        call_command("migrate", interactive=False, verbosity=0)


def ensure_supervisor_network() -> bool:
    """The supervisor0 bridge, whose gateway the API listens on for the apps (engine.md);
    whether it exists now."""
    try:
        ensure_network(SUPERVISOR_NETWORK, subnet=SUPERVISOR0_SUBNET, gateway=SUPERVISOR0_GATEWAY)
    except Exception as exc:  # the engine is down: the API still serves on loopback meanwhile
        logger.warning("could not create the %s network (%s); trying again", SUPERVISOR_NETWORK, exc)
        return False
    return True


def listen_addresses() -> list[str]:
    return [a.strip() for a in settings.SUPERVISOR_LISTEN_ADDRESS.split(",") if a.strip()]


def bindable(address: str) -> bool:
    """Whether this host has `address` (or it is a wildcard), so that a listener can bind it."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address.strip("[]"), 0))
    except OSError:
        return False
    return True


# --- the children ---------------------------------------------------------------------


def run_web() -> None:
    # Imported by the parent (SHARED_IMPORTS), after the device identity was checked: the
    # module prepares it at import, as daphne's command line needs.
    application = importlib.import_module("supervisor_site.asgi").application
    port = settings.SUPERVISOR_PORT
    waiting = [a for a in listen_addresses() if not bindable(a)]
    endpoints = [e for a in listen_addresses() if a not in waiting
                 for e in build_endpoint_description_strings(host=a, port=port)]  # fmt: skip
    for address in waiting:
        logger.warning("web: %s is not an address of this host yet; listening there once it is", address)
    server = Server(application=application, endpoints=endpoints, action_logger=None, verbosity=0,
                    application_close_timeout=5)  # fmt: skip

    def listen_where_possible() -> None:
        for address in [a for a in waiting if bindable(a)]:
            waiting.remove(address)
            for description in build_endpoint_description_strings(host=address, port=port):
                serverFromString(reactor, description).listen(server.http_factory)
            logger.info("web: listening on %s:%d", address, port)

    retry = task.LoopingCall(listen_where_possible)
    server.ready_callable = lambda: waiting and retry.start(LISTEN_RETRY_SECONDS, now=False)
    server.run()


def run_worker() -> None:
    # Celery would retitle the process after its own name; `ps` shows our role instead.
    celery.platforms._setproctitle = None  # type: ignore[attr-defined]
    os.environ["SUPERVISOR_WORKER_BEAT"] = "1"
    # Django's system checks are for development; on a device they cost start-up time and memory.
    os.environ["CELERY_SKIP_CHECKS"] = "1"
    collection = LogCollection(Path(settings.SUPERVISOR_DATA_DIR))
    worker_shutdown.connect(lambda **_: collection.stop(), weak=False)
    collection.start()
    # Started directly rather than through `celery worker`: the command line would import a
    # shell (prompt_toolkit, pygments: ~10 MiB) the agent never uses.
    make_worker: Any = app.Worker  # celery-types does not describe its options
    worker = make_worker(pool_cls="threads", concurrency=4, queues=["supervisor"], loglevel="INFO",
                         without_heartbeat=True, without_gossip=True, without_mingle=True)  # fmt: skip
    worker.start()
    sys.exit(worker.exitcode)


# Everything the children run, imported here once so that they share it (what a child
# imports after the fork is its own: found by diffing sys.modules in each child).
SHARED_IMPORTS = (
    "supervisor_site.asgi",
    "channels_redis.core",
    "docker",
    "apps_api.tasks",
    "apps_api.logs.collection",
    "celery.apps.worker",
    "celery.worker.consumer",
    "celery.worker.components",
    "celery.worker.control",
    "celery.worker.strategy",
    "celery.concurrency.thread",
    "celery.backends.redis",
    "celery.beat",
    "celery.contrib.django.task",
    "kombu.transport.redis",
)


def import_for_the_children() -> None:
    for module in SHARED_IMPORTS:
        importlib.import_module(module)


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start(child: Child) -> None:
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
        _die_with_parent()
        setproctitle(f"supervisor: {child.name}")
        child.run()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:
        logger.exception("%s failed", child.name)
    finally:
        logging.shutdown()
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


def supervise(children: list[Child], *, until_true: Callable[[], bool] | None = None) -> None:
    """Keep every child running until SIGTERM or SIGINT; then stop them all. `until_true` is
    called every NETWORK_RETRY_SECONDS until it returns True."""
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    for child in children:
        if not child.pid:
            start(child)
    retry_at = time.monotonic() + NETWORK_RETRY_SECONDS
    while True:
        if until_true is not None and time.monotonic() >= retry_at:
            until_true = None if until_true() else until_true
            retry_at = time.monotonic() + NETWORK_RETRY_SECONDS
        due = [c.start_at for c in children if not c.pid] + ([retry_at] if until_true else [])
        timeout = max(0.05, min(due) - time.monotonic()) if due else 60.0
        received = signal.sigtimedwait(SIGNALS, timeout)
        if received is not None and received.si_signo in (signal.SIGTERM, signal.SIGINT):
            break
        for child, status in reap(children):
            lived = time.monotonic() - child.started_at
            child.failures = 1 if lived >= HEALTHY_RUN_SECONDS else child.failures + 1
            delay = backoff_delay(child.failures, base=RESTART_BASE_SECONDS, cap=RESTART_MAX_SECONDS)
            child.start_at = time.monotonic() + delay
            logger.warning("%s %s after %.0f s; starting it again in %.0f s", child.name, exit_cause(status),
                           lived, delay)  # fmt: skip
        for child in children:
            if not child.pid and child.start_at <= time.monotonic():
                start(child)
    stop(children)


def stop(children: list[Child]) -> None:
    """Web and worker first (the worker may need Redis to end cleanly), then Redis."""
    began = time.monotonic()
    apps = [c for c in children if c.name != "redis"]
    _signal(apps, signal.SIGTERM)
    escalated = killed = False
    while any(c.pid for c in apps):
        list(reap(children))
        waited = time.monotonic() - began
        if waited >= STOP_GRACE_SECONDS and not escalated:
            _signal(apps, signal.SIGQUIT)  # Celery's cold shutdown: the current step is abandoned
            escalated = True
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


def run(*, announce: Callable[[str], None] = print) -> int:
    """Set up, then supervise the children until asked to stop. Returns the exit code."""
    setproctitle("supervisor: parent")
    data_dir = Path(settings.SUPERVISOR_DATA_DIR)
    tighten_data_dir(data_dir)
    log_dir = data_dir / "log"
    log_dir.mkdir(mode=0o700, exist_ok=True)
    children: list[Child] = []
    redis_socket = private_redis_socket(settings.REDIS_URL, data_dir)
    if redis_socket is not None:
        redis = redis_child(redis_socket, log_dir)
        start(redis)  # now: it is up by the time the worker connects
        children.append(redis)

    try:
        check_database()
        migrate_if_needed()
        prepare_device_identity()
    except (StateUnusable, DeviceConfigError) as exc:
        # Named, once: the unit does not restart on this code (RestartPreventExitStatus).
        logger.error("cannot start: %s", exc)
        stop(children)
        return CONFIG_ERROR_EXIT
    import_for_the_children()
    network_ready = ensure_supervisor_network()
    key = get_or_create_global_key().key
    connections.close_all()  # each child opens its own
    addresses = ", ".join(f"http://{a}:{settings.SUPERVISOR_PORT}/" for a in listen_addresses())
    # The key goes to a terminal only: a journal is read by more people than the device's owner.
    announce(f"Supervisor API: {addresses}" + (f"  (global API key: {key})" if sys.stdout.isatty() else ""))
    gc.collect()
    gc.freeze()
    children += [Child("web", run_web), Child("worker", run_worker)]
    supervise(children, until_true=None if network_ready else ensure_supervisor_network)
    return 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
