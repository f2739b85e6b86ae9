"""The one retry rule every retry loop uses."""

from __future__ import annotations

import pytest

from apps_api.backoff import backoff_delay


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(0, 15.0), (1, 15.0), (2, 30.0), (3, 60.0), (4, 120.0), (5, 200.0), (50, 200.0)],
)
def test_the_delay_doubles_from_the_base_up_to_the_cap(failures: int, expected: float) -> None:
    assert backoff_delay(failures, base=15.0, cap=200.0) == expected
