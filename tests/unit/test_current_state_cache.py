"""apps_api.engine.current.CurrentStateCache: readers share one engine read and never wait
on the lock while Docker is being asked. Real threads, driven by events; the engine read
is a stand-in (this test is about the cache, tests/integration reads a real engine)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from apps_api.engine import current
from apps_api.engine.current import CurrentStateCache
from apps_api.engine.state import CurrentState

WAIT = 10.0


class HeldRead:
    """read_current_state: counts calls; each waits until let go, then returns or raises."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls = 0
        self.entered = threading.Event()
        self.go = threading.Event()
        self.error = error

    def __call__(self) -> CurrentState:
        self.calls += 1
        self.entered.set()
        assert self.go.wait(WAIT)
        if self.error is not None:
            raise self.error
        return CurrentState()


def in_thread(call: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("error", [None, ConnectionError("the engine hung up")], ids=["read", "failed"])
def test_readers_that_arrive_during_a_read_share_its_outcome(
    monkeypatch: pytest.MonkeyPatch, error: Exception | None
) -> None:
    read = HeldRead(error)
    monkeypatch.setattr(current, "read_current_state", read)
    cache = CurrentStateCache()
    first, first_outcome = in_thread(cache.get)
    assert read.entered.wait(WAIT)
    second, second_outcome = in_thread(cache.get)
    # The second reader is waiting for the first one's read, not for the lock.
    assert wait_for(lambda: cache._reading is not None and cache._reading.waiters == 1)
    read.go.set()
    first.join(WAIT)
    second.join(WAIT)
    assert read.calls == 1
    assert first_outcome == second_outcome
    assert len(first_outcome) == 1
    if error is None:
        assert isinstance(first_outcome[0], CurrentState)
    else:
        assert first_outcome[0] is error


def wait_for(condition: Callable[[], bool]) -> bool:
    event = threading.Event()
    for _ in range(int(WAIT / 0.01)):
        if condition():
            return True
        event.wait(0.01)
    return False


def test_a_state_read_again_after_max_age_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = 0

    def read() -> CurrentState:
        nonlocal reads
        reads += 1
        return CurrentState()

    monkeypatch.setattr(current, "read_current_state", read)
    cache = CurrentStateCache(max_age=60)
    cache._watching.set()  # as with the engine's events followed
    cache.get()
    cache.get()
    assert reads == 1
    cache._state_read_at -= 61  # older than max_age, and no event since
    cache.get()
    cache.get()
    assert reads == 2
