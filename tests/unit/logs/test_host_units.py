"""The host units' journal lines as system log records, with journalctl replaced by
tests/fake_journalctl.py (no systemd-journald runs in CI)."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from apps_api.logs.host_units import HostUnitLogs, journal_entry_record
from apps_api.logs.records import LogRecord
from hostcfg.journal import HOST_UNITS
from supervisor_site.system_services import wait_until

FAKE_JOURNALCTL = Path(__file__).resolve().parents[2] / "fake_journalctl.py"


def entry(
    message: Any, *, priority: int = 6, cursor: str = "c1", micros: int = 1_700_000_000_123_456
) -> dict[str, Any]:
    return {
        "MESSAGE": message,
        "PRIORITY": str(priority),
        "__REALTIME_TIMESTAMP": str(micros),
        "__CURSOR": cursor,
        "_SYSTEMD_UNIT": "os-power-mode.service",
    }


class FakeJournal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def plan(self, *runs: tuple[list[dict[str, Any]], int | None]) -> None:
        runs_json = [{"entries": entries, "exit": code} for entries, code in runs]
        (self.directory / "plan.json").write_text(json.dumps(runs_json))

    @property
    def calls(self) -> list[list[str]]:
        path = self.directory / "argv"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def journal(tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch) -> FakeJournal:
    settings.SUPERVISOR_JOURNALCTL = str(FAKE_JOURNALCTL)
    directory = tmp_path / "journal"
    directory.mkdir()
    monkeypatch.setenv("FAKE_JOURNAL_DIR", str(directory))
    return FakeJournal(directory)


class Stopper:
    """The pause between journalctl runs, recorded; stops the follower after `runs` runs."""

    def __init__(self, runs: int) -> None:
        self.delays: list[float] = []
        self.runs = runs
        self.follower: HostUnitLogs | None = None

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if len(self.delays) >= self.runs and self.follower is not None:
            self.follower.stop()


def run_until_stopped(runs: int, **options: Any) -> tuple[list[LogRecord], Stopper]:
    published: list[LogRecord] = []
    stopper = Stopper(runs)
    follower = HostUnitLogs(publish=published.append, wait=stopper, **options)
    stopper.follower = follower
    thread = threading.Thread(target=follower.run, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the follower did not stop"
    return published, stopper


def test_journal_entries_become_system_records_with_their_time_and_priority() -> None:
    assert journal_entry_record(entry("Power mode applied", priority=6)) == LogRecord(
        message="Power mode applied", timestamp=1_700_000_000_123, is_system=True, is_stderr=False
    )
    assert journal_entry_record(entry("no such mode", priority=3)).is_stderr is True  # type: ignore[union-attr]
    assert journal_entry_record(entry(list(b"caf\xc3\xa9 \xff"))).message == "café \ufffd"  # type: ignore[union-attr]
    assert journal_entry_record(entry(None)) is None


def test_the_host_units_lines_are_published_and_journalctl_is_followed_again_after_the_last(
    journal: FakeJournal, tmp_path: Path
) -> None:
    journal.plan(
        ([entry("mode set", cursor="s=1"), entry("fan failed", priority=2, cursor="s=2")], 0),
        ([entry("update done", cursor="s=3")], 0),
    )
    published, _ = run_until_stopped(2, cursor_path=tmp_path / "cursor")

    assert [(r.message, r.is_system, r.is_stderr) for r in published] == [
        ("mode set", True, False),
        ("fan failed", True, True),
        ("update done", True, False),
    ]
    first, second = journal.calls[:2]
    assert first[:5] == ["--no-pager", "--all", "--follow", "--output=json", "--boot"]
    assert first[5:] == [f"_SYSTEMD_UNIT={unit}" for unit in HOST_UNITS]
    assert "--after-cursor=s=2" in second
    assert "--boot" not in second
    assert (tmp_path / "cursor").read_text() == "s=3"


def test_a_new_process_resumes_after_the_saved_cursor(journal: FakeJournal, tmp_path: Path) -> None:
    (tmp_path / "cursor").write_text("s=41")
    journal.plan(([entry("later", cursor="s=42")], 0))
    run_until_stopped(1, cursor_path=tmp_path / "cursor")
    assert "--after-cursor=s=41" in journal.calls[0]


def test_an_unreadable_journal_is_logged_once_and_tried_again_less_and_less_often(
    journal: FakeJournal, caplog: pytest.LogCaptureFixture
) -> None:
    # journalctl's answer when it can read no journal file.
    journal.plan(([], 1))
    with caplog.at_level(logging.WARNING, logger="apps_api.logs.host_units"):
        published, stopper = run_until_stopped(4)

    assert published == []
    assert len(journal.calls) == 4
    assert stopper.delays == sorted(stopper.delays)
    assert stopper.delays[0] < stopper.delays[-1]
    assert len(caplog.records) == 1
    assert "journalctl exited (1" in caplog.records[0].getMessage()


def test_a_cursor_the_journal_refuses_is_dropped(journal: FakeJournal, tmp_path: Path) -> None:
    (tmp_path / "cursor").write_text("s=rotated-away")
    journal.plan(([], 1), ([entry("this boot", cursor="s=1")], 0))
    published, _ = run_until_stopped(2, cursor_path=tmp_path / "cursor")
    assert "--boot" in journal.calls[1]
    assert [r.message for r in published] == ["this boot"]


def test_without_journalctl_one_line_is_logged_and_nothing_runs(
    settings: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings.SUPERVISOR_JOURNALCTL = str(tmp_path / "no-journalctl")
    with caplog.at_level(logging.WARNING, logger="apps_api.logs.host_units"):
        published, stopper = run_until_stopped(1)
    assert published == []
    assert stopper.delays == []
    assert [r.getMessage() for r in caplog.records] == [
        f"host unit logs: not followed: {tmp_path / 'no-journalctl'} is not available on this host"
    ]


def test_stop_ends_a_journalctl_that_follows(journal: FakeJournal) -> None:
    journal.plan(([entry("following")], None))
    published: list[LogRecord] = []
    follower = HostUnitLogs(publish=published.append)
    thread = threading.Thread(target=follower.run, daemon=True)
    thread.start()
    assert wait_until(lambda: len(published) == 1, 20)
    follower.stop()
    thread.join(30)
    assert not thread.is_alive()
