"""CollectorPositions.save from two threads at once (the publisher's after a send, the
collector's when it stops): real threads and files; the pause is driven by events."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import pytest

from apps_api.logs import collector
from apps_api.logs.collector import CollectorPositions

WAIT = 10.0


def test_two_saves_at_once_both_succeed_and_the_newest_positions_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    positions = CollectorPositions(tmp_path / "positions.json")
    first_paused, let_first_go = threading.Event(), threading.Event()
    real_replace = os.replace

    def replace(source: Path, destination: Path) -> None:
        if threading.current_thread().name == "first":
            first_paused.set()
            assert let_first_go.wait(WAIT)
        real_replace(source, destination)

    monkeypatch.setattr(collector.os, "replace", replace)
    monkeypatch.setattr(collector, "POSITIONS_SAVE_SECONDS", 1e12)  # only the saves below
    caplog.set_level(logging.WARNING, logger=collector.__name__)
    positions.published([(b"", 1, ("aaaaaaaaaaaa:out", 100))])
    first = threading.Thread(target=positions.save, name="first")
    first.start()
    assert first_paused.wait(WAIT)  # its snapshot is written, not yet in place

    positions.published([(b"", 2, ("aaaaaaaaaaaa:out", 200))])
    second = threading.Thread(target=positions.save, name="second")
    second.start()
    second.join(0.5)  # it may finish now, or wait for the first: both are right
    let_first_go.set()
    first.join(WAIT)
    second.join(WAIT)

    assert not [r for r in caplog.records if "could not save" in r.getMessage()]
    assert json.loads((tmp_path / "positions.json").read_text()) == {"aaaaaaaaaaaa:out": 200}
