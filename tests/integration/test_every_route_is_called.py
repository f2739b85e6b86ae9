"""Every route of the URLconf (device API, local mode, admin, docs, metrics) is called by
some test through an agent as it ships. Runs last (tests/conftest.py), and only when the
whole integration suite ran: a subset cannot call every route."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.route_coverage import CALLED, all_routes

HERE = Path(__file__).parent


def test_every_route_is_called_through_the_shipped_agent(request: pytest.FixtureRequest) -> None:
    ran = {Path(str(item.path)).name for item in request.session.items}
    suite = {path.name for path in HERE.glob("test_*.py")}
    if not suite <= ran:
        pytest.skip(f"only part of the integration suite ran (missing {sorted(suite - ran)[:3]}…)")
    failed = request.session.testsfailed
    uncalled = sorted(all_routes() - CALLED)

    assert uncalled == [], f"routes no test called through an agent ({failed} tests failed before this one)"
