"""The apply lock is held by a real Redis for as long as the apply runs."""

from __future__ import annotations

import logging
import time

import pytest

from apps_api.apply import single_flight
from apps_api.redis_store import APPLY_LOCK_KEY, redis_client


def test_an_apply_longer_than_the_lock_timeout_keeps_its_lock(
    redis_server: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(single_flight, "APPLY_LOCK_SECONDS", 1)
    redis_client().delete(APPLY_LOCK_KEY)
    with caplog.at_level(logging.WARNING), single_flight.holding_apply_lock() as held:
        assert held
        time.sleep(2.5)
        assert redis_client().exists(APPLY_LOCK_KEY), "the lock expired while the apply was running"
        with single_flight.holding_apply_lock() as second:
            assert not second
    assert not redis_client().exists(APPLY_LOCK_KEY)
    assert "expired" not in caplog.text
    assert "lost the apply lock" not in caplog.text
