"""Update-lock files on disk (docs/locks.md), under a temporary host root.

The tests run as root, so a file the test creates is a user lock (uid 0) and a file the
supervisor creates is owned by uid 65534.
"""

from __future__ import annotations

import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from apps_api.engine.locks import (
    HANDOVER_FILE_NAMES,
    LOCK_FILE_NAMES,
    SUPERVISOR_LOCK_UID,
    UpdateLocks,
    UpdatesLocked,
    apps_with_supervisor_lock_files,
    ensure_service_lock_dir,
    handover_complete,
    service_lock_dir,
    user_lock_holders,
)

APP = 1001
HELD_BY_OTHER_OPERATION = f"Locks for app {APP} are being held by another supervisor operation"


@pytest.fixture
def locks() -> UpdateLocks:
    return UpdateLocks()


def app_dir(root: Path, app_id: int = APP) -> Path:
    return root / "tmp" / "balena-supervisor" / "services" / str(app_id)


def supervisor_files(root: Path) -> list[Path]:
    """Every file or directory under the host root owned by the supervisor's uid."""
    return sorted(p for p in root.rglob("*") if os.lstat(p).st_uid == SUPERVISOR_LOCK_UID)


def lock_files(root: Path, service: str, app_id: int = APP) -> list[Path]:
    """The service's two lock paths, sorted as `supervisor_files` sorts them."""
    return sorted(service_lock_dir(root, app_id, service) / name for name in LOCK_FILE_NAMES)


def make_user_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")


def make_user_dir(path: Path) -> None:
    path.mkdir(parents=True)
    (path / "inside").write_text("")


def make_dangling_symlink(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(path.parent / "nowhere")


def make_leftover(path: Path) -> None:
    make_user_file(path)
    os.chown(path, SUPERVISOR_LOCK_UID, SUPERVISOR_LOCK_UID)


USER_LOCK_KINDS: dict[str, Callable[[Path], None]] = {
    "file": make_user_file,
    "directory": make_user_dir,
    "dangling symlink": make_dangling_symlink,
}


class Background:
    """Threads started by a test; `stop` tells long-running ones to finish."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, target: Callable[[], None]) -> threading.Thread:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        self.threads.append(thread)
        return thread


@pytest.fixture
def background() -> Iterator[Background]:
    """Background threads, stopped and joined at the end of the test; one left alive fails it."""
    threads = Background()
    yield threads
    threads.stop.set()
    for thread in threads.threads:
        thread.join(timeout=10)
        assert not thread.is_alive()


# --- paths -------------------------------------------------------------------------------


def test_service_lock_dir_is_under_the_host_root_by_numeric_app_id(tmp_path: Path) -> None:
    assert service_lock_dir(tmp_path, APP, "main") == tmp_path / "tmp/balena-supervisor/services/1001/main"


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../main"])
def test_service_lock_dir_rejects_names_that_are_not_one_path_component(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="Invalid service name"):
        service_lock_dir(tmp_path, APP, name)


def test_ensure_service_lock_dir_creates_it_sticky_and_world_writable(tmp_path: Path) -> None:
    path = ensure_service_lock_dir(tmp_path, APP, "main")

    assert path.is_dir()
    assert stat.S_IMODE(path.stat().st_mode) == 0o1777


def test_ensure_service_lock_dir_fixes_the_mode_of_an_existing_dir(tmp_path: Path) -> None:
    path = service_lock_dir(tmp_path, APP, "main")
    path.mkdir(parents=True, mode=0o700)

    ensure_service_lock_dir(tmp_path, APP, "main")

    assert stat.S_IMODE(path.stat().st_mode) == 0o1777


# --- take and release --------------------------------------------------------------------


def test_take_creates_both_lock_files_per_service_owned_by_nobody(tmp_path: Path, locks: UpdateLocks) -> None:
    locks.take(tmp_path, APP, ["main", "worker"])

    for service in ("main", "worker"):
        assert stat.S_IMODE(service_lock_dir(tmp_path, APP, service).stat().st_mode) == 0o1777
        for path in lock_files(tmp_path, service):
            info = os.lstat(path)
            assert stat.S_ISREG(info.st_mode)
            assert (info.st_uid, info.st_gid) == (SUPERVISOR_LOCK_UID, SUPERVISOR_LOCK_UID)
    assert locks.held_apps() == frozenset({APP})
    assert user_lock_holders(tmp_path, APP) == []


def test_release_deletes_the_supervisor_files_and_frees_the_app(tmp_path: Path, locks: UpdateLocks) -> None:
    locks.take(tmp_path, APP, ["main"])

    locks.release(tmp_path, APP)

    assert supervisor_files(tmp_path) == []
    assert service_lock_dir(tmp_path, APP, "main").is_dir()
    assert locks.held_apps() == frozenset()
    locks.take(tmp_path, APP, ["main"])  # no wait needed: the in-process lock is free again


def test_release_is_idempotent(tmp_path: Path, locks: UpdateLocks) -> None:
    locks.take(tmp_path, APP, ["main"])

    locks.release(tmp_path, APP)
    locks.release(tmp_path, APP)
    locks.release(tmp_path, 4242)

    assert supervisor_files(tmp_path) == []
    assert locks.held_apps() == frozenset()


def test_release_ignores_held_files_someone_else_already_deleted(tmp_path: Path, locks: UpdateLocks) -> None:
    locks.take(tmp_path, APP, ["main"])
    for path in lock_files(tmp_path, "main"):
        path.unlink()

    locks.release(tmp_path, APP)

    assert locks.held_apps() == frozenset()


@pytest.mark.parametrize("lock_name", LOCK_FILE_NAMES)
@pytest.mark.parametrize("kind", USER_LOCK_KINDS)
def test_user_lock_blocks_take_and_leaves_no_supervisor_lock_behind(
    tmp_path: Path, locks: UpdateLocks, kind: str, lock_name: str
) -> None:
    user_lock = service_lock_dir(tmp_path, APP, "worker") / lock_name
    USER_LOCK_KINDS[kind](user_lock)

    with pytest.raises(UpdatesLocked) as raised:
        locks.take(tmp_path, APP, ["main", "worker", "zzz"])

    assert str(raised.value) == f"Lockfile exists for {{ appId: {APP}, service: worker }}"
    assert supervisor_files(tmp_path) == []
    assert os.path.lexists(user_lock)
    assert os.lstat(user_lock).st_uid == 0
    assert locks.held_apps() == frozenset()
    assert user_lock_holders(tmp_path, APP) == ["worker"]


def test_failed_take_frees_the_app_for_the_next_attempt(tmp_path: Path, locks: UpdateLocks) -> None:
    user_lock = lock_files(tmp_path, "main")[0]
    make_user_file(user_lock)
    with pytest.raises(UpdatesLocked):
        locks.take(tmp_path, APP, ["main"])

    user_lock.unlink()
    locks.take(tmp_path, APP, ["main"])

    assert supervisor_files(tmp_path) == lock_files(tmp_path, "main")


def test_failed_take_also_releases_locks_of_earlier_rounds_and_leftovers(
    tmp_path: Path, locks: UpdateLocks
) -> None:
    locks.take(tmp_path, APP, ["main"])
    make_leftover(lock_files(tmp_path, "old")[0])
    make_user_file(lock_files(tmp_path, "new")[1])

    with pytest.raises(UpdatesLocked, match=re.escape(f"{{ appId: {APP}, service: new }}")):
        locks.take(tmp_path, APP, ["main", "new"])

    assert supervisor_files(tmp_path) == []
    assert locks.held_apps() == frozenset()


@pytest.mark.parametrize("kind", USER_LOCK_KINDS)
def test_force_deletes_the_user_lock_and_takes(tmp_path: Path, locks: UpdateLocks, kind: str) -> None:
    for path in lock_files(tmp_path, "main"):
        USER_LOCK_KINDS[kind](path)

    locks.take(tmp_path, APP, ["main"], force=True)

    assert supervisor_files(tmp_path) == lock_files(tmp_path, "main")
    assert all(path.is_file() for path in lock_files(tmp_path, "main"))
    assert user_lock_holders(tmp_path, APP) == []


def test_leftover_supervisor_locks_are_adopted_silently_and_removed_by_release(
    tmp_path: Path, locks: UpdateLocks
) -> None:
    leftovers = lock_files(tmp_path, "main")
    for path in leftovers:
        make_leftover(path)
    inodes = [os.lstat(path).st_ino for path in leftovers]

    locks.take(tmp_path, APP, ["main"])

    assert [os.lstat(path).st_ino for path in leftovers] == inodes
    assert locks.held_apps() == frozenset({APP})
    locks.release(tmp_path, APP)
    assert supervisor_files(tmp_path) == []


def test_release_of_an_app_not_held_cleans_leftovers_but_never_user_locks(
    tmp_path: Path, locks: UpdateLocks
) -> None:
    make_leftover(lock_files(tmp_path, "main")[0])
    make_leftover(lock_files(tmp_path, "worker")[1])
    user_lock = lock_files(tmp_path, "other")[0]
    make_user_file(user_lock)
    assert apps_with_supervisor_lock_files(tmp_path) == frozenset({APP})

    locks.release(tmp_path, APP)

    assert supervisor_files(tmp_path) == []
    assert user_lock.is_file()
    assert apps_with_supervisor_lock_files(tmp_path) == frozenset()


def test_taking_again_for_a_held_app_adds_only_the_missing_files(tmp_path: Path, locks: UpdateLocks) -> None:
    locks.take(tmp_path, APP, ["main"])
    first_round = [os.lstat(path).st_ino for path in lock_files(tmp_path, "main")]

    locks.take(tmp_path, APP, ["main", "worker"])

    assert [os.lstat(path).st_ino for path in lock_files(tmp_path, "main")] == first_round
    assert supervisor_files(tmp_path) == sorted(lock_files(tmp_path, "main") + lock_files(tmp_path, "worker"))
    locks.release(tmp_path, APP)
    assert supervisor_files(tmp_path) == []


def test_a_later_apply_round_in_another_thread_reenters_the_held_app(
    tmp_path: Path, locks: UpdateLocks, background: Background
) -> None:
    locks.take(tmp_path, APP, ["main"])
    errors: list[BaseException] = []

    def next_round() -> None:
        try:
            locks.take(tmp_path, APP, ["main", "worker"], wait_seconds=0)
        except BaseException as exc:
            errors.append(exc)

    background.start(next_round).join(timeout=10)

    assert errors == []
    assert len(supervisor_files(tmp_path)) == 4


def test_a_held_file_that_vanished_is_recreated_on_the_next_take(tmp_path: Path, locks: UpdateLocks) -> None:
    locks.take(tmp_path, APP, ["main"])
    lock_files(tmp_path, "main")[0].unlink()

    locks.take(tmp_path, APP, ["main"])

    assert supervisor_files(tmp_path) == lock_files(tmp_path, "main")


def test_take_for_another_app_is_independent(tmp_path: Path, locks: UpdateLocks) -> None:
    locks.take(tmp_path, APP, ["main"])

    locks.take(tmp_path, 2002, ["main"])
    locks.release(tmp_path, APP)

    assert locks.held_apps() == frozenset({2002})
    assert supervisor_files(tmp_path) == lock_files(tmp_path, "main", app_id=2002)


# --- concurrency between the engine and synchronous actions ------------------------------


def hold_in_locked_block(locks: UpdateLocks, root: Path, background: Background) -> None:
    """Hold APP in a `locked()` block in another thread until `background.stop` is set."""
    entered = threading.Event()

    def action() -> None:
        with locks.locked(root, [APP]):
            entered.set()
            background.stop.wait(timeout=10)

    background.start(action)
    assert entered.wait(timeout=10)


def test_take_waits_for_a_synchronous_action_then_fails(
    tmp_path: Path, locks: UpdateLocks, background: Background
) -> None:
    ensure_service_lock_dir(tmp_path, APP, "main")
    hold_in_locked_block(locks, tmp_path, background)

    began = time.monotonic()
    with pytest.raises(UpdatesLocked) as raised:
        locks.take(tmp_path, APP, ["main"], wait_seconds=0.3)
    waited = time.monotonic() - began
    background.stop.set()

    assert str(raised.value) == HELD_BY_OTHER_OPERATION
    assert waited >= 0.29  # the lock timeout, give or take clock granularity
    assert locks.held_apps() == frozenset()


def test_take_proceeds_when_the_action_finishes_within_the_wait(
    tmp_path: Path, locks: UpdateLocks, background: Background
) -> None:
    ensure_service_lock_dir(tmp_path, APP, "main")
    hold_in_locked_block(locks, tmp_path, background)
    finish_action = threading.Timer(0.1, background.stop.set)
    finish_action.start()

    locks.take(tmp_path, APP, ["main"], wait_seconds=10)

    finish_action.join()
    assert locks.held_apps() == frozenset({APP})
    assert supervisor_files(tmp_path) == lock_files(tmp_path, "main")


def test_locked_waits_for_the_engine_then_fails(tmp_path: Path, locks: UpdateLocks) -> None:
    locks.take(tmp_path, APP, ["main"])

    began = time.monotonic()
    with pytest.raises(UpdatesLocked) as raised, locks.locked(tmp_path, [APP], wait_seconds=0.2):
        pytest.fail("the action must not run while the engine holds the app")

    assert str(raised.value) == HELD_BY_OTHER_OPERATION
    assert time.monotonic() - began >= 0.19  # the wait, give or take clock granularity
    assert locks.held_apps() == frozenset({APP})
    assert supervisor_files(tmp_path) == lock_files(tmp_path, "main")


def test_release_leaves_an_app_held_by_a_synchronous_action_alone(
    tmp_path: Path, locks: UpdateLocks, background: Background
) -> None:
    ensure_service_lock_dir(tmp_path, APP, "main")
    hold_in_locked_block(locks, tmp_path, background)

    locks.release(tmp_path, APP)

    assert supervisor_files(tmp_path) == lock_files(tmp_path, "main")
    background.stop.set()


# --- locked (synchronous actions) --------------------------------------------------------


def test_locked_covers_only_the_service_dirs_present(tmp_path: Path, locks: UpdateLocks) -> None:
    ensure_service_lock_dir(tmp_path, APP, "main")
    ensure_service_lock_dir(tmp_path, APP, "worker")
    (app_dir(tmp_path) / "alias").symlink_to(app_dir(tmp_path) / "main")
    (app_dir(tmp_path) / "notes").write_text("")

    with locks.locked(tmp_path, [APP]):
        assert supervisor_files(tmp_path) == sorted(
            lock_files(tmp_path, "main") + lock_files(tmp_path, "worker")
        )
        assert locks.held_apps() == frozenset()

    assert supervisor_files(tmp_path) == []
    assert (app_dir(tmp_path) / "alias").is_symlink()


def test_locked_releases_when_the_action_raises(tmp_path: Path, locks: UpdateLocks) -> None:
    ensure_service_lock_dir(tmp_path, APP, "main")

    with pytest.raises(RuntimeError, match="action failed"), locks.locked(tmp_path, [APP]):
        raise RuntimeError("action failed")

    assert supervisor_files(tmp_path) == []
    locks.take(tmp_path, APP, ["main"])


def test_locked_skips_apps_without_a_lock_dir(tmp_path: Path, locks: UpdateLocks) -> None:
    ensure_service_lock_dir(tmp_path, APP, "main")

    with locks.locked(tmp_path, [APP, 2002]):
        assert supervisor_files(tmp_path) == lock_files(tmp_path, "main")

    assert not app_dir(tmp_path, 2002).exists()


def test_locked_fails_on_a_user_lock_and_releases_the_apps_already_taken(
    tmp_path: Path, locks: UpdateLocks
) -> None:
    ensure_service_lock_dir(tmp_path, APP, "main")
    user_lock = lock_files(tmp_path, "main", app_id=2002)[0]
    make_user_file(user_lock)

    with pytest.raises(UpdatesLocked) as raised, locks.locked(tmp_path, [APP, 2002]):
        pytest.fail("the action must not run while a user lock exists")

    assert str(raised.value) == "Lockfile exists for { appId: 2002, service: main }"
    assert supervisor_files(tmp_path) == []
    assert user_lock.is_file()
    locks.take(tmp_path, APP, ["main"])
    locks.take(tmp_path, 2002, ["other"])


def test_locked_with_force_deletes_user_locks(tmp_path: Path, locks: UpdateLocks) -> None:
    for path in lock_files(tmp_path, "main"):
        make_user_file(path)

    with locks.locked(tmp_path, [APP], force=True):
        assert supervisor_files(tmp_path) == lock_files(tmp_path, "main")

    assert not any(os.path.lexists(path) for path in lock_files(tmp_path, "main"))


# --- status helpers ----------------------------------------------------------------------


def test_user_lock_holders_lists_services_locked_by_the_app_not_the_supervisor(
    tmp_path: Path, locks: UpdateLocks
) -> None:
    make_user_file(lock_files(tmp_path, "worker")[1])
    make_user_dir(lock_files(tmp_path, "db")[0])
    locks.take(tmp_path, APP, ["main"])

    assert user_lock_holders(tmp_path, APP) == ["db", "worker"]
    assert user_lock_holders(tmp_path, 2002) == []


@pytest.mark.parametrize("marker", HANDOVER_FILE_NAMES)
def test_handover_complete_sees_either_marker_file(tmp_path: Path, marker: str) -> None:
    directory = ensure_service_lock_dir(tmp_path, APP, "main")
    assert not handover_complete(tmp_path, APP, "main")

    (directory / marker).write_text("")

    assert handover_complete(tmp_path, APP, "main")


def test_handover_is_not_complete_for_a_service_without_a_dir(tmp_path: Path) -> None:
    assert not handover_complete(tmp_path, APP, "main")
