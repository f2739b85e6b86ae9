"""The last accepted state report kept under a temporary host root: readable back by its
device only, by no other local user, and never written where another user could reach it."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from hostcfg.report_cache import load_report_cache, report_cache_path, save_report_cache

NOBODY = 65534
REPORT = {"api_secret": "secret", "api_port": 48484, "apps": {"a": {"releases": {}}}}


def test_a_saved_report_is_read_back_by_its_device_and_only_the_agent_can_read_it(host_root: Path) -> None:
    save_report_cache(host_root, "uuid-1", REPORT)
    path = report_cache_path(host_root)
    assert path == host_root / "tmp/balena-supervisor/state-report-cache"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"uuid-1": REPORT}
    assert load_report_cache(host_root, "uuid-1") == REPORT
    assert load_report_cache(host_root, "uuid-2") == {}  # another device (a new identity)


@pytest.mark.parametrize(
    "content",
    [b"", b"{not json", b"\xff\xfe", b"[1, 2]", b'{"uuid-1": "not a report"}', b"null"],
    ids=["empty", "truncated", "not-utf8", "a-list", "not-an-object", "null"],
)
def test_a_rotten_cache_is_ignored(host_root: Path, content: bytes) -> None:
    save_report_cache(host_root, "uuid-1", REPORT)
    report_cache_path(host_root).write_bytes(content)
    assert load_report_cache(host_root, "uuid-1") == {}


def test_without_a_cache_there_is_nothing(host_root: Path, tmp_path: Path) -> None:
    assert load_report_cache(host_root, "uuid-1") == {}
    assert load_report_cache(tmp_path / "no-host", "uuid-1") == {}


def test_a_directory_another_user_made_first_is_neither_written_nor_read(host_root: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("making a directory another user's takes root")
    planted = host_root / "tmp" / "balena-supervisor"
    planted.mkdir()
    (planted / "state-report-cache").write_text(json.dumps({"uuid-1": {"api_secret": "planted"}}))
    os.chown(planted, NOBODY, NOBODY)
    save_report_cache(host_root, "uuid-1", REPORT)
    assert json.loads((planted / "state-report-cache").read_text())["uuid-1"] == {"api_secret": "planted"}
    assert load_report_cache(host_root, "uuid-1") == {}


def test_a_symlink_planted_as_the_cache_is_replaced_not_followed(host_root: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    save_report_cache(host_root, "uuid-1", REPORT)
    path = report_cache_path(host_root)
    path.unlink()
    path.symlink_to(victim)
    assert load_report_cache(host_root, "uuid-1") == {}
    save_report_cache(host_root, "uuid-1", REPORT)
    assert victim.read_text() == "keep me"
    assert not path.is_symlink()
    assert load_report_cache(host_root, "uuid-1") == REPORT
