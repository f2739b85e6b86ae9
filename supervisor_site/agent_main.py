"""The agent process, `supervisor: agent`, which the supervising parent (agent.py) starts:

- the web server: daphne in a thread (the device API, the log streams, the admin);
- the worker: Celery on a pool of 4 threads in the main thread, with the beat scheduler,
  the log collection and the engine's event follower as threads.

Web and worker share one interpreter. Forked from a parent that had imported everything,
two processes shared less than it seems: CPython 3.11 writes to the objects a process uses
(reference counts, the bytecode it specialises), so each child soon held its own copy of
what it ran, and the parent kept the originals (bench/idle_memory.py: 147 MiB for the
agent as three processes, 111 MiB as this one).

Its threads, what each owns and may block on, and how each stops are mapped in
docs/architecture.md "Threads"; the long-lived ones start here, under watch.

Start-up checks the state files first: one the agent cannot use ends the process with
EX_CONFIG (78), naming the file, and the parent does not start it again.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "supervisor_site.settings")

# First: it keeps unused packages out, sets Django up, and installs Twisted's reactor
# before anything imports another.
from supervisor_site import web_server  # noqa: I001

import celery.platforms
from celery.signals import worker_shutdown
from django.conf import settings
from django.core.management import call_command
from django.db import DatabaseError, connection, connections
from django.db.migrations.executor import MigrationExecutor
from setproctitle import setproctitle

from apps_api.apikeys import get_or_create_global_key, prepare_device_identity
from apps_api.engine.container_config import (
    SUPERVISOR0_GATEWAY,
    SUPERVISOR0_SUBNET,
    SUPERVISOR_NETWORK,
)
from apps_api.engine.current import start_watching_the_engine
from apps_api.engine.docker import ensure_supervisor_network as ensure_network
from apps_api.logs.collection import LogCollection
from apps_api.logs.publisher import start_log_publisher
from apps_api.watched_threads import spawn
from hostcfg.identity import DeviceConfigError
from supervisor_site.celery import app

logger = logging.getLogger("supervisor.agent")

CONFIG_ERROR_EXIT = 78  # EX_CONFIG
WEB_FAILED_EXIT = 70  # EX_SOFTWARE
NETWORK_RETRY_SECONDS = 10.0
WEB_START_SECONDS = 10.0
WEB_STOP_SECONDS = 3.0


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
    """The supervisor0 bridge, whose gateway the API listens on for the apps
    (docs/engine.md "The supervisor0 network"); whether it exists now."""
    try:
        ensure_network(SUPERVISOR_NETWORK, subnet=SUPERVISOR0_SUBNET, gateway=SUPERVISOR0_GATEWAY)
    except Exception as exc:  # the engine is down: the API still serves on loopback meanwhile
        logger.warning("could not create the %s network (%s); trying again", SUPERVISOR_NETWORK, exc)
        return False
    return True


def keep_trying_the_network() -> None:
    """In a thread: until the engine answers (the API binds the gateway once it exists)."""
    while not ensure_supervisor_network():
        threading.Event().wait(NETWORK_RETRY_SECONDS)


def announce() -> None:
    key = get_or_create_global_key().key
    addresses = ", ".join(f"http://{a}:{settings.SUPERVISOR_PORT}/" for a in web_server.listen_addresses())
    # The key goes to a terminal only: a journal is read by more people than the device's owner.
    print(f"Supervisor API: {addresses}" + (f"  (global API key: {key})" if sys.stdout.isatty() else ""))


def run_worker() -> int:
    """Celery's worker in this (the main) thread until it is told to stop; its exit code."""
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
    return int(worker.exitcode or 0)


def main() -> None:
    setproctitle("supervisor: agent")
    try:
        check_database()
        migrate_if_needed()
        prepare_device_identity()
    except (StateUnusable, DeviceConfigError) as exc:
        # Named, once: neither the parent nor the unit starts the agent again on this code.
        logger.error("cannot start: %s", exc)
        sys.exit(CONFIG_ERROR_EXIT)
    threading.Thread(target=keep_trying_the_network, name="supervisor0", daemon=True).start()
    start_watching_the_engine(spawn)
    start_log_publisher()
    announce()
    # The last connection to close writes the migrations and the keys from the write-ahead
    # log into the database file; the threads open their own.
    connections.close_all()

    web_failed, listening, stopping = threading.Event(), threading.Event(), threading.Event()

    def web() -> None:
        try:
            web_server.serve(listening)
        except Exception:
            logger.exception("web: the server failed")
        if stopping.is_set():
            return
        logger.error("web: the server stopped; stopping the agent")
        web_failed.set()
        listening.set()  # the main thread may still wait for it
        os.kill(os.getpid(), signal.SIGTERM)  # Celery's warm shutdown ends the worker

    # Until Celery puts its own: a SIGTERM (the parent's, or the web thread's) ends the process.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(WEB_FAILED_EXIT if web_failed.is_set() else 0))
    web_thread = threading.Thread(target=web, name="web", daemon=True)
    web_thread.start()
    # The API first: the worker's start would slow the web server's (one interpreter lock).
    listening.wait(WEB_START_SECONDS)
    if web_failed.is_set():
        sys.exit(WEB_FAILED_EXIT)
    code = run_worker()
    stopping.set()
    web_server.stop()
    web_thread.join(WEB_STOP_SECONDS)
    sys.exit(WEB_FAILED_EXIT if web_failed.is_set() else code)


if __name__ == "__main__":
    main()
