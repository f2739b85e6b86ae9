"""The apply loop's journal runs beside the steps: every call reaches the journal, in
order, and one that fails is reported when the round closes it."""

from __future__ import annotations

import threading

from apps_api.apply.journal import BackgroundJournal
from apps_api.engine.state import Step


class RecordingJournal:
    """Stands in for JournalObserver (which writes to Redis and SQLite)."""

    def __init__(self, failing: str = "") -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.failing = failing

    def started(self, step: Step) -> None:
        self._record("started", step)

    def finished(self, step: Step, error: BaseException | None, seconds: float) -> None:
        self._record("finished", step)

    def progress(self, step: Step, percent: int) -> None:
        self._record(f"progress {percent}", step)

    def _record(self, call: str, step: Step) -> None:
        self.calls.append((call, step.reason, threading.current_thread().name))
        if step.reason == self.failing and call == "finished":
            raise RuntimeError("journal unavailable")


def test_every_call_reaches_the_journal_in_order_off_the_steps_thread() -> None:
    recorded = RecordingJournal()
    journal = BackgroundJournal(recorded)
    one, two = Step("fetch", image="a", reason="one"), Step("start", reason="two")
    journal.started(one)
    journal.progress(one, 50)
    journal.started(two)
    journal.finished(one, None, 0.1)
    journal.finished(two, None, 0.2)

    assert journal.close() == []
    assert [(call, reason) for call, reason, _ in recorded.calls] == [
        ("started", "one"), ("progress 50", "one"), ("started", "two"),
        ("finished", "one"), ("finished", "two"),
    ]  # fmt: skip
    assert {thread for _, _, thread in recorded.calls} == {"apply-journal"}


def test_a_failed_write_is_reported_at_close_and_the_later_ones_still_happen() -> None:
    recorded = RecordingJournal(failing="one")
    journal = BackgroundJournal(recorded)
    journal.finished(Step("start", reason="one"), None, 0.1)
    journal.finished(Step("start", reason="two"), None, 0.1)

    errors = journal.close()

    assert [str(e) for e in errors] == ["journal unavailable"]
    assert [reason for _, reason, _ in recorded.calls] == ["one", "two"]
