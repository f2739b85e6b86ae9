"""The one way to run a long-lived thread: `spawn()` starts it under watch. A thread that
ends (or raises) while its owner has not told it to stop has died: the cause is logged,
`/v1/healthy` fails (health check "threads") until it has run again for
`STEADY_SECONDS`, and it is started again after the backoff rule's delay.

The map of the agent's threads is in docs/architecture.md "Threads".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from setproctitle import setthreadtitle

from apps_api.backoff import backoff_delay

logger = logging.getLogger(__name__)

RESTART_BASE_SECONDS = 1.0
RESTART_CAP_SECONDS = 60.0
# A restarted thread counts as healthy again, and its failures in a row start from zero,
# once it has run this long.
STEADY_SECONDS = 30.0


@dataclass
class _Watched:
    name: str
    run: Callable[[], None]
    stopped: Callable[[], bool]
    running: bool = False
    started_at: float = 0.0
    deaths: int = 0
    last_cause: str = ""
    died_at: float | None = None


class ThreadWatch:
    """The watched threads of one process, by name."""

    def __init__(self, *, sleep: Callable[[float], object] = time.sleep) -> None:
        """`sleep(seconds)`: the wait before a restart (tests drive it with events)."""
        self._lock = threading.Lock()
        self._sleep = sleep
        self._watched: list[_Watched] = []

    def spawn(self, name: str, run: Callable[[], None], *, stopped: Callable[[], bool]) -> threading.Thread:
        """Run `run` in a daemon thread named `name` (also its OS name, as `top -H` shows
        it), again whenever it returns or raises while `stopped()` is false."""
        watched = _Watched(name, run, stopped)
        with self._lock:
            self._watched.append(watched)
        thread = threading.Thread(target=self._supervise, args=(watched,), name=name, daemon=True)
        thread.start()
        return thread

    def _supervise(self, watched: _Watched) -> None:
        setthreadtitle(watched.name[:15])  # the kernel keeps 15 bytes
        failures = 0
        while True:
            watched.started_at, watched.running = time.monotonic(), True
            try:
                watched.run()
                cause = "it returned"
            except BaseException as exc:  # a thread's death, whatever killed it
                cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if not watched.stopped():
                    logger.error("thread %s raised", watched.name, exc_info=True)
            watched.running = False
            if watched.stopped():
                return
            failures = 1 if time.monotonic() - watched.started_at >= STEADY_SECONDS else failures + 1
            delay = backoff_delay(failures, base=RESTART_BASE_SECONDS, cap=RESTART_CAP_SECONDS)
            with self._lock:
                watched.deaths += 1
                watched.last_cause, watched.died_at = cause, time.monotonic()
            logger.error("thread %s died (%s); starting it again in %.0f s", watched.name, cause, delay)
            self._sleep(delay)
            if watched.stopped():
                return

    def problems(self, *, now: float | None = None) -> dict[str, str]:
        """Thread name -> what is wrong, for each thread that is down or was restarted less
        than STEADY_SECONDS ago."""
        moment = time.monotonic() if now is None else now
        found: dict[str, str] = {}
        with self._lock:
            for watched in self._watched:
                if watched.died_at is None or (not watched.running and watched.stopped()):
                    continue
                if not watched.running:
                    found[watched.name] = f"died ({watched.last_cause}); starting it again"
                elif moment - watched.started_at < STEADY_SECONDS:
                    found[watched.name] = f"died ({watched.last_cause}); running again since the restart"
        return found

    def names(self) -> list[str]:
        with self._lock:
            return sorted({watched.name for watched in self._watched})


_watch = ThreadWatch()


def spawn(name: str, run: Callable[[], None], *, stopped: Callable[[], bool]) -> threading.Thread:
    """Start a long-lived thread of this process under watch (see ThreadWatch.spawn)."""
    return _watch.spawn(name, run, stopped=stopped)


def thread_problems() -> dict[str, str]:
    return _watch.problems()
