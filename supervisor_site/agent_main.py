"""The agent process, `supervisor: agent`. `make run` starts it under a supervising parent
(agent.py); on a device, systemd runs it directly (supervisor_site/deploy), with Redis as a
unit of its own:

- the web server: daphne in a thread (the device API, the log streams, the admin);
- the worker: Celery on a pool of 4 threads in the main thread, with the beat scheduler,
  the log collection and the engine's event follower as threads.

Web and worker share one interpreter. Forked from a parent that had imported everything,
two processes shared less than it seems: CPython 3.11 writes to the objects a process uses
(reference counts, the bytecode it specialises), so each child soon held its own copy of
what it ran, and the parent kept the originals (bench/idle_memory.py: 147 MiB for the
agent as three processes, 111 MiB as this one).

Its threads, what each owns and may block on, and how each stops are mapped in
docs/architecture.md "Threads"; the long-lived ones start at start-up, under watch.

Start-up binds the port first, with daphne and Twisted only loaded: /ping answers from
then on, and every other request waits while agent_setup.py sets Django up and checks the
state files. One the agent cannot use ends the process with EX_CONFIG (78), naming the
file, and neither the parent nor systemd starts it again.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import logging.config
import os
import signal
import stat
import sys
import threading
from pathlib import Path
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "supervisor_site.settings")

# First: it keeps unused packages out and installs Twisted's reactor before anything
# imports another. It loads no Django: the web server listens before that.
from supervisor_site import web_server  # noqa: I001

from django.conf import settings
from setproctitle import setproctitle

from supervisor_site import environment
from supervisor_site.liveness import DeferredApplication

logger = logging.getLogger("supervisor.agent")

WEB_FAILED_EXIT = 70  # EX_SOFTWARE
WEB_START_SECONDS = 10.0
WEB_STOP_SECONDS = 3.0


def tighten_data_dir(data_dir: Path) -> None:
    """An install made before modes were enforced: the data dir 0700, what is in it 0600
    (directories 0700). Symlinks are not followed; other users' files are left alone."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for root, directories, files in os.walk(data_dir, followlinks=False):
        for name, mode in [(d, 0o700) for d in directories] + [(f, 0o600) for f in files]:
            path = Path(root) / name
            with contextlib.suppress(OSError):
                info = path.lstat()
                if not stat.S_ISLNK(info.st_mode) and info.st_uid == os.getuid():
                    path.chmod(mode | (info.st_mode & 0o100))  # a file's owner-execute bit is kept
    data_dir.chmod(0o700)


def main() -> None:
    setproctitle("supervisor: agent")
    # Secrets live in the data dir (API keys, the database, Redis): nothing the agent creates
    # is readable by other users, whoever started it (the parent, systemd, a shell).
    os.umask(0o077)
    tighten_data_dir(environment.SUPERVISOR_DATA_DIR)
    logging.config.dictConfig(settings.LOGGING)  # django.setup() comes after the listen
    application = DeferredApplication()
    web_failed, listening, stopping = threading.Event(), threading.Event(), threading.Event()

    def web() -> None:
        try:
            web_server.serve(listening, application=application)
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
    # The API first: /ping answers while the rest loads (one interpreter lock).
    listening.wait(WEB_START_SECONDS)
    if web_failed.is_set():
        sys.exit(WEB_FAILED_EXIT)
    try:
        # Only now Django, and everything the agent runs.
        agent_setup: Any = importlib.import_module("supervisor_site.agent_setup")
        agent_setup.prepare()
        application.provide(web_server.load_application())
    except BaseException as exc:  # exit 78 on a state file included: the waiting requests get 503
        application.fail(exc)
        raise
    agent_setup.close_connections()
    code = agent_setup.run_worker()
    stopping.set()
    web_server.stop()
    web_thread.join(WEB_STOP_SECONDS)
    sys.exit(WEB_FAILED_EXIT if web_failed.is_set() else code)


if __name__ == "__main__":
    main()
