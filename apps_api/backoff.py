"""The one retry rule: wait `base` after the first failure in a row, doubling with each
further failure, never more than `cap`. Every retry loop of the agent (apply rounds, cloud
requests, the log stream, log publication) uses it with its own base and cap."""

from __future__ import annotations


def backoff_delay(failures: int, *, base: float, cap: float) -> float:
    """Seconds to wait after `failures` failures in a row (1 → `base`, 2 → twice `base`, …)."""
    return min(base * 2 ** max(failures - 1, 0), cap)
