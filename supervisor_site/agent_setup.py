"""What the agent process does once its web server listens (agent_main.py): Django set
up, the state files checked, the long-lived threads started, then the worker.

Importing this module sets Django up and loads everything the agent runs: it is imported
after the port is bound, so that /ping answers meanwhile.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

import django

django.setup()

import celery.platforms  # noqa: E402
from celery.signals import worker_shutdown, worker_shutting_down  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import DatabaseError, connection, connections  # noqa: E402
from django.db.migrations.executor import MigrationExecutor  # noqa: E402

from apps_api.apikeys import get_or_create_global_key, prepare_device_identity  # noqa: E402
from apps_api.engine.container_config import (  # noqa: E402
    SUPERVISOR0_GATEWAY,
    SUPERVISOR0_SUBNET,
    SUPERVISOR_NETWORK,
)
from apps_api.engine.current import start_watching_the_engine  # noqa: E402
from apps_api.engine.docker import ensure_supervisor_network as ensure_network  # noqa: E402
from apps_api.logs.collection import LogCollection  # noqa: E402
from apps_api.logs.publisher import start_log_publisher  # noqa: E402
from apps_api.watched_threads import spawn  # noqa: E402
from hostcfg.identity import DeviceConfigError  # noqa: E402
from supervisor_site import web_server  # noqa: E402
from supervisor_site.celery import app  # noqa: E402

logger = logging.getLogger("supervisor.agent")

CONFIG_ERROR_EXIT = 78  # EX_CONFIG
NETWORK_RETRY_SECONDS = 10.0


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


# Celery's warm shutdown waits for the running tasks (an apply, a download), and its cold
# shutdown cannot end them on a thread pool (it fails on `terminate_job`, then joins them).
# So the agent gives them this long after a stop signal, then ends the process itself, as
# a power cut would: the next start finishes what they left (docs/operations.md "Restarts
# and faults"). The process ends within 10 s of its SIGTERM, whoever sent it.
STOP_GRACE_SECONDS = 6.0


def end_after_the_grace(**_: Any) -> None:
    def end() -> None:
        logger.warning("tasks still running %.0f s after the stop signal: abandoned, for the next start to "
                       "finish", STOP_GRACE_SECONDS)  # fmt: skip
        os._exit(0)  # the stop that was asked for

    timer = threading.Timer(STOP_GRACE_SECONDS, end)
    timer.daemon = True
    timer.start()


def run_worker() -> int:
    """Celery's worker in this (the main) thread until it is told to stop; its exit code."""
    # Celery would retitle the process after its own name; `ps` shows our role instead.
    celery.platforms._setproctitle = None  # type: ignore[attr-defined]
    os.environ["SUPERVISOR_WORKER_BEAT"] = "1"
    # Django's system checks are for development; on a device they cost start-up time and memory.
    os.environ["CELERY_SKIP_CHECKS"] = "1"
    collection = LogCollection(Path(settings.SUPERVISOR_DATA_DIR))
    worker_shutdown.connect(lambda **_: collection.stop(), weak=False)
    worker_shutting_down.connect(end_after_the_grace, weak=False)
    collection.start()
    # Started directly rather than through `celery worker`: the command line would import a
    # shell (prompt_toolkit, pygments: ~10 MiB) the agent never uses.
    make_worker: Any = app.Worker  # celery-types does not describe its options
    worker = make_worker(pool_cls="threads", concurrency=4, queues=["supervisor"], loglevel="INFO",
                         without_heartbeat=True, without_gossip=True, without_mingle=True)  # fmt: skip
    worker.start()
    return int(worker.exitcode or 0)


def prepare() -> None:
    """The state files checked (one the agent cannot use ends the process with EX_CONFIG,
    naming it, and neither the parent nor the unit starts it again), the supervisor0
    network, the long-lived threads started, the key announced."""
    try:
        check_database()
        migrate_if_needed()
        prepare_device_identity()
    except (StateUnusable, DeviceConfigError) as exc:
        logger.error("cannot start: %s", exc)
        sys.exit(CONFIG_ERROR_EXIT)
    threading.Thread(target=keep_trying_the_network, name="supervisor0", daemon=True).start()
    start_watching_the_engine(spawn)
    start_log_publisher()
    announce()


def close_connections() -> None:
    """Once the API is loaded: the last connection to close writes the migrations and the
    keys from the write-ahead log into the database file; the threads open their own."""
    connections.close_all()
