"""Device identity kept in config.json: uuid, device API key and cloud settings.

config.json is the device's own file (the boot partition's on a real device): we add
what is missing and never rewrite a file we could not parse.
"""

from __future__ import annotations

import fcntl
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from hostcfg.atomic_file import write_file_atomically


class DeviceConfigError(Exception):
    """config.json exists but cannot be used; the message names the file."""


@dataclass(frozen=True)
class DeviceIdentity:
    uuid: str
    device_api_key: str
    api_endpoint: str | None
    config_path: Path
    registry_endpoint: str = ""
    """config.json `registryEndpoint`: the cloud's registry, the one host the device's key
    is sent to when pulling."""

    @property
    def managed(self) -> bool:
        """A device without an API endpoint is unmanaged (and so in local mode)."""
        return bool(self.api_endpoint)


def new_device_secret() -> str:
    """32 lowercase hex characters, the shape balena uses for uuids and keys."""
    return uuid.uuid4().hex


def read_config_json(path: Path) -> dict[str, Any]:
    """The parsed config.json; {} when the file does not exist."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise DeviceConfigError(f"{path}: cannot be read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise DeviceConfigError(
            f"{path}: not text ({exc.reason} at byte {exc.start}); fix or remove it"
        ) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DeviceConfigError(f"{path}: not valid JSON ({exc}); fix or remove it") from exc
    if not isinstance(data, dict):
        raise DeviceConfigError(f"{path}: must hold a JSON object, not {type(data).__name__}")
    return data


def write_config_json(path: Path, data: dict[str, Any]) -> None:
    """Replace config.json atomically: a crash leaves the old or the new file, whole."""
    # 0600: config.json holds the device API key.
    write_file_atomically(path, json.dumps(data, indent=2, sort_keys=True) + "\n", mode=0o600)


@contextmanager
def _config_json_lock(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of config.json across the supervisor's processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def update_config_json(path: Path, change: Callable[[dict[str, Any]], None]) -> bool:
    """Apply `change` to config.json's object under the lock, and write it back (atomically)
    only if it changed; returns whether it did."""
    with _config_json_lock(path):
        data = read_config_json(path)
        before = json.dumps(data, sort_keys=True)
        change(data)
        if json.dumps(data, sort_keys=True) == before:
            return False
        write_config_json(path, data)
        return True


def load_device_identity(path: Path | None = None) -> DeviceIdentity:
    """Read the identity, first adding a fresh uuid and deviceApiKey where missing."""
    config_path = Path(path or settings.SUPERVISOR_CONFIG_JSON)
    data = read_config_json(config_path)
    if not (data.get("uuid") and data.get("deviceApiKey")):

        def add_missing(data: dict[str, Any]) -> None:
            for field in ("uuid", "deviceApiKey"):
                data[field] = data.get(field) or new_device_secret()

        update_config_json(config_path, add_missing)
        data = read_config_json(config_path)
    return DeviceIdentity(
        uuid=str(data["uuid"]),
        device_api_key=str(data["deviceApiKey"]),
        api_endpoint=data.get("apiEndpoint") or None,
        config_path=config_path,
        registry_endpoint=str(data.get("registryEndpoint") or ""),
    )


_cached: tuple[tuple[Path, int, int, int], DeviceIdentity] | None = None


def current_device_identity() -> DeviceIdentity:
    """The identity for per-request use: config.json is parsed again only when it changed
    (inode, mtime or size: it is replaced by rename), or when it does not exist yet."""
    global _cached
    path = Path(settings.SUPERVISOR_CONFIG_JSON)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return load_device_identity(path)
    key = (path, stat.st_ino, stat.st_mtime_ns, stat.st_size)
    if _cached is None or _cached[0] != key:
        _cached = (key, load_device_identity(path))
    return _cached[1]
