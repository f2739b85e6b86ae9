"""Directories the agent keeps under the host's world-writable /tmp (the update-lock tree,
the reboot breadcrumb), walked one component at a time without following symlinks.

Another local user can create `/tmp/balena-supervisor` first (it is created again after
every boot), with symlinks or directories of their own in it: the agent, running as root,
would then chmod or write whatever they point at. Each component below the trusted start
must be a real directory owned by the agent's user and writable by nobody else; the leaf may
be given a mode of its own (the lock directories are 1777, by design).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
OWNED_MODE = 0o755


class UnsafeDirectory(Exception):
    """A component of an owned tree is a symlink, not a directory, or another user's."""


def _open_owned(parent: int, name: str, path: Path, *, create: bool, mode: int, leaf_mode: int | None) -> int:
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise UnsafeDirectory(f"{path}: not a single path component")
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, mode, dir_fd=parent)
    try:
        fd = os.open(name, DIRECTORY_FLAGS, dir_fd=parent)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) and not create:
            raise
        raise UnsafeDirectory(f"{path}: not a directory of the agent's ({exc.strerror})") from exc
    info = os.fstat(fd)
    writable_by_others = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if info.st_uid != os.geteuid() or (writable_by_others and leaf_mode is None):
        os.close(fd)
        raise UnsafeDirectory(f"{path}: owned by uid {info.st_uid} or writable by other users")
    if leaf_mode is not None and stat.S_IMODE(info.st_mode) != leaf_mode:
        os.fchmod(fd, leaf_mode)
    return fd


@contextlib.contextmanager
def owned_directory(
    start: Path, parts: Sequence[str], *, create: bool = True, leaf_mode: int | None = None
) -> Iterator[int]:
    """An fd of `start`/`parts…`, each part created (mode 0755) when missing and checked
    as above; `start` itself is trusted (the host's /tmp). Raises UnsafeDirectory, and
    FileNotFoundError when `create` is false and a part is missing."""
    fds = [os.open(start, DIRECTORY_FLAGS)]
    try:
        path = start
        for index, name in enumerate(parts):
            path = path / name
            last = index == len(parts) - 1
            fds.append(_open_owned(fds[-1], name, path, create=create, mode=OWNED_MODE,
                                   leaf_mode=leaf_mode if last else None))  # fmt: skip
        yield fds[-1]
    finally:
        for fd in fds:
            os.close(fd)


def ensure_owned_directory(start: Path, parts: Sequence[str], *, leaf_mode: int | None = None) -> Path:
    """Create and check `start`/`parts…` (see owned_directory); returns its path, which
    stays what was checked: no one else can write in the directories above it."""
    start.mkdir(parents=True, exist_ok=True)
    with owned_directory(start, parts, leaf_mode=leaf_mode):
        return start.joinpath(*parts)


def touch_in_owned_directory(start: Path, parts: Sequence[str], name: str) -> None:
    """Create or touch the file `name` in an owned directory, never through a symlink."""
    start.mkdir(parents=True, exist_ok=True)
    with owned_directory(start, parts) as directory:
        try:
            fd = os.open(
                name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=directory
            )
        except OSError as exc:
            raise UnsafeDirectory(f"{start.joinpath(*parts, name)}: {exc.strerror}") from exc
        try:
            os.utime(fd)
        finally:
            os.close(fd)
