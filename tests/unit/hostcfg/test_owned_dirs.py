"""The lock tree and the reboot breadcrumb under a temporary host root, with what a
hostile local user could plant there first: nothing outside the tree changes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from apps_api.engine.locks import ensure_service_lock_dir, prepare_lock_tree
from hostcfg.device_config import set_reboot_breadcrumb
from hostcfg.owned_dirs import UnsafeDirectory

NOBODY = 65534


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    directory = tmp_path / "victim"
    directory.mkdir(mode=0o755)
    return directory


def test_the_tree_is_made_the_agents_own_with_0755_above_the_1777_lock_dirs(host_root: Path) -> None:
    prepare_lock_tree(host_root)
    lock_dir = ensure_service_lock_dir(host_root, 1, "main")
    tree = host_root / "tmp" / "balena-supervisor"
    for directory in (tree, tree / "services", tree / "services" / "1"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o755, directory
        assert directory.stat().st_uid == os.geteuid()
    assert stat.S_IMODE(lock_dir.stat().st_mode) == 0o1777


@pytest.mark.parametrize(
    "planted", ["balena-supervisor", "balena-supervisor/services/1", "balena-supervisor/services/1/main"]
)
def test_a_planted_symlink_is_refused_and_its_target_left_alone(
    host_root: Path, victim: Path, planted: str
) -> None:
    link = host_root / "tmp" / planted
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(victim)
    with pytest.raises(UnsafeDirectory):
        ensure_service_lock_dir(host_root, 1, "main")
    assert stat.S_IMODE(victim.stat().st_mode) == 0o755
    assert list(victim.iterdir()) == []


def test_a_directory_of_another_user_is_refused(host_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can make a directory another user's")
    theirs = host_root / "tmp" / "balena-supervisor"
    theirs.mkdir(mode=0o777)
    os.chown(theirs, NOBODY, NOBODY)
    prepare_lock_tree(host_root)
    assert "refusing to use it" in caplog.text
    with pytest.raises(UnsafeDirectory, match="owned by uid 65534"):
        ensure_service_lock_dir(host_root, 1, "main")
    assert not (theirs / "services").exists()


def test_the_reboot_breadcrumb_is_never_written_through_a_symlink(host_root: Path, victim: Path) -> None:
    target = victim / "nologin"
    prepare_lock_tree(host_root)
    (host_root / "tmp" / "balena-supervisor" / "reboot-after-apply").symlink_to(target)
    with pytest.raises(UnsafeDirectory):
        set_reboot_breadcrumb(host_root)
    assert not target.exists()


def test_the_reboot_breadcrumb_is_touched(host_root: Path) -> None:
    set_reboot_breadcrumb(host_root)
    assert (host_root / "tmp" / "balena-supervisor" / "reboot-after-apply").is_file()
