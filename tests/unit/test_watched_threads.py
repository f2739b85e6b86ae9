"""apps_api.watched_threads: a long-lived thread that dies is logged, reported and started
again; one told to stop is left stopped. Real threads, driven by events."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from apps_api import watched_threads
from apps_api.watched_threads import STEADY_SECONDS, ThreadWatch

WAIT = 10.0


class Restarts:
    """The watch's sleep before a restart: records the delay, then waits to be let go (once
    per restart)."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.asked = threading.Event()
        self.go = threading.Semaphore(0)

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.asked.set()
        assert self.go.acquire(timeout=WAIT)


def test_a_thread_that_raises_is_reported_then_started_again(caplog: pytest.LogCaptureFixture) -> None:
    restarts = Restarts()
    watch = ThreadWatch(sleep=restarts)
    runs = 0
    fail, second_run, finish, done = (
        threading.Event(),
        threading.Event(),
        threading.Event(),
        threading.Event(),
    )

    def run() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            assert fail.wait(WAIT)
            raise RuntimeError("boom")
        second_run.set()
        assert finish.wait(WAIT)

    caplog.set_level(logging.ERROR, logger=watched_threads.__name__)
    thread = watch.spawn("doomed", run, stopped=done.is_set)
    assert watch.problems() == {}
    fail.set()
    assert restarts.asked.wait(WAIT)
    assert watch.problems() == {"doomed": "died (RuntimeError: boom); starting it again"}
    assert restarts.delays == [1.0]
    assert "thread doomed died (RuntimeError: boom); starting it again in 1 s" in caplog.messages
    assert any(record.exc_info for record in caplog.records)  # the traceback is logged

    restarts.asked.clear()
    restarts.go.release()
    assert second_run.wait(WAIT)
    assert watch.problems() == {"doomed": "died (RuntimeError: boom); running again since the restart"}
    assert watch.problems(now=time.monotonic() + STEADY_SECONDS) == {}
    finish.set()  # this time it returns: a death too
    assert restarts.asked.wait(WAIT)
    assert watch.problems() == {"doomed": "died (it returned); starting it again"}
    assert restarts.delays == [1.0, 2.0]  # two deaths in a row: the backoff doubles
    done.set()
    restarts.go.release()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert runs == 2


def test_a_thread_told_to_stop_is_not_a_death() -> None:
    restarts = Restarts()
    watch = ThreadWatch(sleep=restarts)
    stopping = threading.Event()

    def run() -> None:
        stopping.wait(WAIT)

    thread = watch.spawn("stoppable", run, stopped=stopping.is_set)
    stopping.set()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert restarts.delays == []
    assert watch.problems() == {}


def test_a_thread_is_known_to_the_os_by_its_name() -> None:
    named, release = threading.Event(), threading.Event()
    native: list[int] = []

    def run() -> None:
        native.append(threading.get_native_id())
        named.set()
        release.wait(WAIT)

    ThreadWatch().spawn("a-rather-long-thread-name", run, stopped=release.is_set)
    assert named.wait(WAIT)
    try:
        with open(f"/proc/self/task/{native[0]}/comm") as comm:
            assert comm.read().strip() == "a-rather-long-t"  # the kernel keeps 15 bytes
    finally:
        release.set()
