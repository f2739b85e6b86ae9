"""Whole-file replacement for files other processes (or the OS, after a power cut) read.

A crash leaves either the old or the new content, never a mix: the new text goes to a
temporary file in the same directory, is fsynced, renamed over the target, and the
directory is fsynced so the rename itself survives.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_file_atomically(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Replace `path` with `text` (UTF-8; parent directories created), all or nothing.

    The file gets `mode` whatever it had before (mkstemp alone would leave 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def remove_file_durably(path: Path) -> bool:
    """Delete `path` if it exists, making the removal durable; True when it existed."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    _fsync_directory(path.parent)
    return True


def _fsync_directory(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
