"""Django's signing key, generated once and kept in the data dir (it signs admin sessions)."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path


def new_key() -> str:
    return secrets.token_urlsafe(50)


def kept_secret_key(key_file: Path, *, generate: Callable[[], str] = new_key) -> str:
    """The key in `key_file`, made when missing or unusable. Processes that start together
    agree on one: the first to link its key into place wins, the others read it."""
    while True:
        try:
            kept: str | None = key_file.read_bytes().decode("ascii").strip()
        except FileNotFoundError:
            kept = None
        except (OSError, UnicodeDecodeError):
            kept = ""
        if kept and kept.isprintable() and len(kept) >= 32:
            return kept
        key = generate()
        temporary = key_file.with_name(f".{key_file.name}.{os.getpid()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key)
        try:
            if kept is None:
                os.link(temporary, key_file)  # complete when it appears; fails if another won
            else:
                # It only signs admin sessions: a new one logs the admin out, nothing more.
                print(f"warning: {key_file} is unreadable or corrupt; writing a new key", file=sys.stderr)
                os.replace(temporary, key_file)
            return key
        except FileExistsError:
            continue  # another process made it first: use that one
        finally:
            temporary.unlink(missing_ok=True)
