"""Update locks: the lock files apps and the supervisor create to block disruptive updates.

Paths and semantics are those of docs/locks.md. A lock file is held by whoever created it:
files owned by uid 65534 are the supervisor's, anything else is a user lock that blocks
updates unless forced. Every function takes the host root (`settings.SUPERVISOR_HOST_ROOT`
in production) so that nothing here depends on Django.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

from hostcfg.owned_dirs import UnsafeDirectory, ensure_owned_directory

logger = logging.getLogger(__name__)

SUPERVISOR_LOCK_UID = 65534
LOCK_FILE_NAMES = ("updates.lock", "resin-updates.lock")
HANDOVER_FILE_NAMES = ("handover-complete", "resin-kill-me")
SERVICES_LOCK_ROOT = Path("tmp", "balena-supervisor", "services")
LOCK_TREE_PARTS = ("balena-supervisor", "services")  # under the host's /tmp
WITH_LOCK_WAIT_SECONDS = 10.0
# A release that finds the app busy with another operation leaves it alone
# (docs/locks.md "Clean locks").
RELEASE_WAIT_SECONDS = 0.01


class UpdatesLocked(Exception):
    """An app's update locks could not be taken; the API answers 423."""


def service_lock_dir(host_root: Path, app_id: int, service_name: str) -> Path:
    """`<host_root>/tmp/balena-supervisor/services/<appId>/<serviceName>`.

    Raises ValueError for a service name that is not a single path component.
    """
    if service_name in {"", ".", ".."} or "/" in service_name or "\0" in service_name:
        raise ValueError(f"Invalid service name for a lock directory: {service_name!r}")
    return _app_lock_dir(host_root, app_id) / service_name


def ensure_service_lock_dir(host_root: Path, app_id: int, service_name: str) -> Path:
    """Create the service's lock directory (mkdir -p) with mode 1777 and return it; raises
    UnsafeDirectory when a directory on the way is a symlink or another user's.

    This is the directory bind-mounted into the service's containers at /tmp/balena and
    /tmp/resin; any container user must be able to create its lock file there.
    """
    service_lock_dir(host_root, app_id, service_name)  # checks the name
    # Walked without following symlinks, each directory above it the agent's own (another
    # local user may have made /tmp/balena-supervisor first). Sticky: users cannot delete
    # the supervisor's locks.
    parts = [*LOCK_TREE_PARTS, str(int(app_id)), service_name]
    return ensure_owned_directory(host_root / "tmp", parts, leaf_mode=0o1777)


def prepare_lock_tree(host_root: Path) -> None:
    """At start: the lock tree's root, the agent's own and 0755, before any app needs it.
    A tree someone else made is refused with a log line and left as it is."""
    try:
        ensure_owned_directory(host_root / "tmp", LOCK_TREE_PARTS)
    except UnsafeDirectory as exc:
        logger.error("update locks: %s; refusing to use it", exc)


def user_lock_holders(host_root: Path, app_id: int) -> list[str]:
    """Names of the app's services that have a lock file not owned by the supervisor, sorted."""
    return [
        name
        for name in _service_dir_names(host_root, app_id) or []
        if any(_is_user_lock(_app_lock_dir(host_root, app_id) / name / f) for f in LOCK_FILE_NAMES)
    ]


def handover_complete(host_root: Path, app_id: int, service_name: str) -> bool:
    """Whether the service signalled the end of a hand-over (`handover-complete` or `resin-kill-me`)."""
    directory = service_lock_dir(host_root, app_id, service_name)
    return any(os.path.lexists(directory / name) for name in HANDOVER_FILE_NAMES)


def apps_with_supervisor_lock_files(host_root: Path) -> frozenset[int]:
    """App ids that have a lock file owned by the supervisor on disk (held now, or left over).

    The engine uses it to emit a `releaseLock` for leftovers of an earlier supervisor run.
    """
    root = host_root / SERVICES_LOCK_ROOT
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return frozenset()
    return frozenset(
        int(entry.name)
        for entry in entries
        if entry.name.isdigit() and _supervisor_lock_files(host_root, int(entry.name))
    )


HoldKind = Literal["engine", "action"]


@dataclass
class _Hold:
    kind: HoldKind
    files: set[Path] = field(default_factory=set)


class UpdateLocks:
    """The supervisor's registry of the update locks it holds, one per worker process.

    `take`/`release` are the engine's `takeLock`/`releaseLock` steps; `locked` is the
    "withLock" of synchronous actions (reboot, shutdown, host-config, stop, restart-service).
    """

    def __init__(self) -> None:
        # Concurrency invariant. Each app has one in-process lock, `_process_locks[app_id]`,
        # and `_holds[app_id]` exists exactly while the registry holds it. Its holder is either
        # - the engine ("engine" hold): from its first successful `take` until `release`, across
        #   apply rounds and runs and whichever worker thread runs them. The apply is
        #   single-flight (restart/purge pre-empt it), so a later `take` for an engine-held
        #   app belongs to the same operation and re-enters without waiting; or
        # - one `locked()` block ("action" hold), only for the duration of the action; nothing
        #   re-enters it, so the engine waits for it and it waits for the engine.
        # The process lock is a plain Lock, not an RLock: it is released by whichever thread
        # runs `release`, not necessarily the one that took it. `_guard` only protects the two
        # dicts and is never held while waiting for an app or touching the filesystem.
        self._guard = threading.Lock()
        self._process_locks: dict[int, threading.Lock] = {}
        self._holds: dict[int, _Hold] = {}

    def held_apps(self) -> frozenset[int]:
        """Apps whose locks the engine holds now (from `take` until `release`).

        A `locked()` block's short hold is not included: the engine must still take the
        lock itself (and wait for the action) before anything disruptive.
        """
        with self._guard:
            return frozenset(app_id for app_id, hold in self._holds.items() if hold.kind == "engine")

    def take(
        self,
        host_root: Path,
        app_id: int,
        service_names: Iterable[str],
        *,
        force: bool = False,
        wait_seconds: float = 0.0,
    ) -> tuple[str, ...]:
        """Hold the app's update locks for the given services until `release`; returns the
        services whose user locks `force` removed.

        Waits up to `wait_seconds` for another supervisor operation on the app, then raises
        UpdatesLocked. Creates both lock files in each service's directory as uid 65534,
        reusing supervisor-owned leftovers. A user lock (file, directory or symlink) raises
        UpdatesLocked naming the service, after every supervisor lock of the app is released;
        with `force` user locks are deleted instead. Taking again for an app the engine
        already holds only adds the files still missing.
        """
        return self._take(
            host_root, app_id, list(service_names), kind="engine", force=force, wait=wait_seconds
        )

    def release(self, host_root: Path, app_id: int) -> None:
        """Delete the app's supervisor lock files (held or left over) and free the app.

        Idempotent. An app that a `locked()` action holds right now is left alone.
        """
        with self._guard:
            hold = self._holds.get(app_id)
        if hold is not None and hold.kind == "engine":
            self._release_hold(host_root, app_id, clean_leftovers=True)
            return
        process_lock = self._process_lock(app_id)
        if not process_lock.acquire(timeout=RELEASE_WAIT_SECONDS):
            logger.debug("Not cleaning locks of app %s: another supervisor operation holds them", app_id)
            return
        try:
            _remove_lock_paths(_supervisor_lock_files(host_root, app_id))
        finally:
            process_lock.release()

    @contextmanager
    def locked(
        self,
        host_root: Path,
        app_ids: Iterable[int],
        *,
        force: bool = False,
        wait_seconds: float = WITH_LOCK_WAIT_SECONDS,
    ) -> Iterator[dict[int, tuple[str, ...]]]:
        """Hold the update locks of the given apps for the duration of a synchronous action;
        yields, by app, the services whose user locks `force` removed.

        Covers the services that have a lock directory now; an app without a directory is
        skipped. Waits up to `wait_seconds` (10 s) per app for another supervisor operation.
        Raises UpdatesLocked, after releasing the apps already taken, if any app is locked.
        Everything taken is released on exit, also when the action raises.
        """
        taken: list[int] = []
        overridden: dict[int, tuple[str, ...]] = {}
        try:
            for app_id in dict.fromkeys(app_ids):
                services = _service_dir_names(host_root, app_id)
                if services is None:
                    continue
                removed = self._take(
                    host_root, app_id, services, kind="action", force=force, wait=wait_seconds
                )
                taken.append(app_id)
                if removed:
                    overridden[app_id] = removed
            yield overridden
        finally:
            for app_id in reversed(taken):
                self._release_hold(host_root, app_id, clean_leftovers=False)

    def _process_lock(self, app_id: int) -> threading.Lock:
        with self._guard:
            return self._process_locks.setdefault(app_id, threading.Lock())

    def _take(
        self,
        host_root: Path,
        app_id: int,
        service_names: list[str],
        *,
        kind: HoldKind,
        force: bool,
        wait: float,
    ) -> tuple[str, ...]:
        with self._guard:
            existing = self._holds.get(app_id)
            process_lock = self._process_locks.setdefault(app_id, threading.Lock())
        if kind == "engine" and existing is not None and existing.kind == "engine":
            hold = existing
        else:
            if not process_lock.acquire(timeout=max(wait, 0.0)):
                raise UpdatesLocked(f"Locks for app {app_id} are being held by another supervisor operation")
            hold = _Hold(kind)
            with self._guard:
                self._holds[app_id] = hold

        overridden: list[str] = []
        try:
            for name in dict.fromkeys(service_names):
                directory = ensure_service_lock_dir(host_root, app_id, name)
                for file_name in LOCK_FILE_NAMES:
                    path = directory / file_name
                    # A held file that vanished (an app running as root deleted it) is recreated.
                    if path in hold.files and os.path.lexists(path):
                        continue
                    if _is_supervisor_lock(path):
                        hold.files.add(path)
                        continue
                    if force and os.path.lexists(path):
                        _remove_lock_paths([path])
                        overridden.append(name)
                    if not _create_supervisor_lock(path):
                        raise UpdatesLocked(f"Lockfile exists for {{ appId: {app_id}, service: {name} }}")
                    hold.files.add(path)
        except BaseException:
            self._release_hold(host_root, app_id, clean_leftovers=True)
            raise
        return tuple(dict.fromkeys(overridden))

    def _release_hold(self, host_root: Path, app_id: int, *, clean_leftovers: bool) -> None:
        with self._guard:
            hold = self._holds.pop(app_id, None)
            process_lock = self._process_locks.get(app_id)
        if hold is None or process_lock is None:
            return
        try:
            paths = set(hold.files)
            if clean_leftovers:
                paths.update(_supervisor_lock_files(host_root, app_id))
            _remove_lock_paths(sorted(paths))
        finally:
            process_lock.release()


def _app_lock_dir(host_root: Path, app_id: int) -> Path:
    return host_root / SERVICES_LOCK_ROOT / str(int(app_id))


def _service_dir_names(host_root: Path, app_id: int) -> list[str] | None:
    """Sorted names of the real sub-directories (not symlinks) of the app's lock dir; None without one."""
    try:
        entries = list(os.scandir(_app_lock_dir(host_root, app_id)))
    except (FileNotFoundError, NotADirectoryError):
        return None
    return sorted(entry.name for entry in entries if entry.is_dir(follow_symlinks=False))


def _lock_owner(path: Path) -> int | None:
    try:
        return os.lstat(path).st_uid
    except FileNotFoundError:
        return None


def _is_supervisor_lock(path: Path) -> bool:
    return _lock_owner(path) == SUPERVISOR_LOCK_UID


def _is_user_lock(path: Path) -> bool:
    owner = _lock_owner(path)
    return owner is not None and owner != SUPERVISOR_LOCK_UID


def _supervisor_lock_files(host_root: Path, app_id: int) -> list[Path]:
    """The app's lock files owned by uid 65534, whether this process holds them or not."""
    app_dir = _app_lock_dir(host_root, app_id)
    return [
        app_dir / name / file_name
        for name in _service_dir_names(host_root, app_id) or []
        for file_name in LOCK_FILE_NAMES
        if _is_supervisor_lock(app_dir / name / file_name)
    ]


def _create_supervisor_lock(path: Path) -> bool:
    """Create `path` exclusively, owned by 65534; False if anything (even a dangling symlink) is there."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o444)
    except FileExistsError:
        return False
    try:
        os.fchown(fd, SUPERVISOR_LOCK_UID, SUPERVISOR_LOCK_UID)
    except PermissionError as exc:
        # Only root may give a file away; unprivileged (development) runs keep their own uid.
        logger.warning("Could not give lock file %s to uid %s: %s", path, SUPERVISOR_LOCK_UID, exc)
    finally:
        os.close(fd)
    return True


def _remove_lock_paths(paths: Iterable[Path]) -> None:
    """Delete lock files, directories and symlinks; a path already gone is not an error.

    Other failures are logged and the rest are still removed: a lock left behind shows up
    again as a leftover (ours) or as a user lock (blocks, as it should).
    """
    for path in paths:
        try:
            if stat.S_ISDIR(os.lstat(path).st_mode):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            logger.warning("Could not remove lock %s: %s", path, exc)


@cache
def update_locks() -> UpdateLocks:
    """The process's registry of held update locks (engine and synchronous actions share it)."""
    return UpdateLocks()
