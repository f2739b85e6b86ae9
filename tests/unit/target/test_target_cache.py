"""The cached target is read by many API threads at once: one that finds its version cached
must get it even when another, reading a newer version, empties the cache meanwhile
(maintainability review: a KeyError, answered 503). Driven by events, not sleeps."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from apps_api.target import store

CHECKED, CLEARED = threading.Event(), threading.Event()


class ReaderPausesAfterLooking(dict):  # type: ignore[type-arg]
    """The cache, pausing the thread named "reader" once it has looked its version up."""

    def _pause(self) -> None:
        if threading.current_thread().name == "reader":
            CHECKED.set()
            assert CLEARED.wait(5)

    def __contains__(self, key: object) -> bool:
        found = super().__contains__(key)
        self._pause()
        return found

    def get(self, key: Any, default: Any = None) -> Any:
        found = super().get(key, default)
        self._pause()
        return found


def test_a_reader_of_a_cached_version_gets_it_while_another_empties_the_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cached = object()
    monkeypatch.setattr(store, "_parsed", ReaderPausesAfterLooking({1: cached}))
    monkeypatch.setattr(store, "load_target", lambda: (object(), None))
    got: list[Any] = []

    reader = threading.Thread(target=lambda: got.append(store.load_target_cached(1)), name="reader")
    reader.start()
    assert CHECKED.wait(5)
    store.load_target_cached(2)  # a newer version: the cache is emptied and refilled
    CLEARED.set()
    reader.join(5)

    assert got == [cached]
