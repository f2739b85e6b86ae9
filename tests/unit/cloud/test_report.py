"""The state report's two-level diff (docs/cloud.md "State report": only what changed is sent) and its
`apps` section (the update_status of each release, docs/engine.md "Update status")."""

from __future__ import annotations

from typing import Any

import pytest

from apps_api.cloud.report import apps_report, release_report, report_diff
from apps_api.engine.state import AppSpec, CurrentState, TargetState
from apps_api.engine.status import ServiceStatus
from apps_api.snapshot import DeviceSnapshot
from tests.unit.engine.state_builders import svc


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


# --- the apps section: what the dashboard shows per release ------------------------------


def _snapshot(
    *statuses: tuple[str, str, int | None], applying: bool = False, failed: bool = False
) -> DeviceSnapshot:
    """A target of one app (uuid "appuuid", commit "c2") whose services have these
    (name, status, download progress)."""
    services = tuple(svc(name, commit="c2", release=2) for name, _, _ in statuses)
    app = AppSpec(app_id=1, app_uuid="appuuid", name="app", services=services, commit="c2", release_id=2)
    return DeviceSnapshot(
        target=TargetState(name="device", config={}, apps=(app,)),
        current=CurrentState(),
        statuses=tuple(ServiceStatus(1, name, status, progress) for name, status, progress in statuses),
        flags={"update_failed": failed},
        image_progress={},
        applying=applying,
    )


@pytest.mark.parametrize(
    ("snapshot", "expected"),
    [
        (_snapshot(("main", "Running", None), ("db", "Running", None)), "done"),
        (_snapshot(("main", "Downloading", 40), ("db", "Downloaded", None)), "downloading"),
        (_snapshot(("main", "Downloaded", None), ("db", "Running", None)), "downloaded"),
        (_snapshot(("main", "Installing", None), ("db", "Running", None)), "applying changes"),
        (_snapshot(("main", "Installed", None)), "applying changes"),
        (_snapshot(("main", "Awaiting handover", None)), "applying changes"),
        (_snapshot(("main", "Handing over", None)), "applying changes"),
        (_snapshot(("main", "Downloading", 40), applying=True, failed=True), "aborted"),
        (_snapshot(("main", "Downloading", 40), failed=True), "downloading"),  # the failed apply is over
    ],
    ids=[
        "all-running",
        "one-downloading",
        "downloaded",
        "installing",
        "installed",
        "awaiting-handover",
        "handing-over",
        "failed-while-applying",
        "failed-earlier",
    ],
)
def test_each_release_reports_its_update_status(snapshot: DeviceSnapshot, expected: str) -> None:
    release = apps_report(snapshot)["appuuid"]["releases"]["c2"]
    assert release["update_status"] == expected


def test_a_release_reports_image_status_and_download_progress_of_each_service() -> None:
    snapshot = _snapshot(("main", "Downloading", 40), ("db", "Running", None))
    assert apps_report(snapshot) == {
        "appuuid": {
            "releases": {
                "c2": {
                    "update_status": "downloading",
                    "services": {
                        "main": {"image": "img-main", "status": "Downloading", "download_progress": 40},
                        "db": {"image": "img-db", "status": "Running"},
                    },
                }
            }
        }
    }


def test_a_rejected_release_reports_no_services() -> None:
    services = {"main": {"image": "img-main", "status": "Downloading"}}
    assert release_report("rejected", services) == {"update_status": "rejected", "services": {}}
    assert release_report("done", services) == {"update_status": "done", "services": services}
