"""The two-level diff of state reports (spec/cloud.md: only what changed is sent)."""

from __future__ import annotations

from typing import Any

import pytest

from apps_api.cloud.report import report_diff


@pytest.mark.parametrize(
    ("current", "last", "expected"),
    [
        ({"status": "Idle", "api_port": 48484}, {}, {"status": "Idle", "api_port": 48484}),
        ({"logs_channel": None}, {}, {"logs_channel": None}),  # a new key is sent even when null
        ({"status": "Idle"}, {"status": "Idle"}, {}),
        ({"status": "Updating"}, {"status": "Idle"}, {"status": "Updating"}),
        ({"apps": {"a": 1, "b": 2}}, {"apps": {"a": 1, "b": 3}}, {"apps": {"b": 2}}),
        ({"apps": {"a": {"x": 1}}}, {"apps": {"a": {"x": 2}}}, {"apps": {"a": {"x": 1}}}),  # two levels only
        ({"apps": {"a": 1}}, {"apps": "not an object"}, {"apps": {"a": 1}}),
    ],
    ids=["first", "new-null", "same", "changed", "second-level", "deeper-whole", "type-change"],
)
def test_report_diff(current: dict[str, Any], last: dict[str, Any], expected: dict[str, Any]) -> None:
    assert report_diff(current, last) == expected
