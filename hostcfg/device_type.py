"""Device type and architecture, from the boot partition's device-type.json."""

from __future__ import annotations

import json
import logging
import platform
from pathlib import Path

logger = logging.getLogger(__name__)

# uname machine → balena architecture names.
ARCHITECTURES = {
    "x86_64": "amd64",
    "aarch64": "aarch64",
    "armv7l": "armv7hf",
    "armv6l": "rpi",
    "i686": "i386",
}


# Device types the balena CLI knows, for a machine without device-type.json.
DEFAULT_DEVICE_TYPES = {"amd64": "genericx86-64-ext", "aarch64": "generic-aarch64", "i386": "generic-x86"}


def machine_arch() -> str:
    machine = platform.machine()
    return ARCHITECTURES.get(machine, machine)


def read_device_type(boot_root: Path) -> tuple[str, str]:
    """(slug, arch) from `<boot_root>/device-type.json`; defaults derived from this machine."""
    arch = machine_arch()
    default = (DEFAULT_DEVICE_TYPES.get(arch, f"generic-{arch}"), arch)
    path = boot_root / "device-type.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as exc:
        logger.warning("%s unreadable (%s); using %s", path, exc, default)
        return default
    if not isinstance(data, dict):
        return default
    return str(data.get("slug") or default[0]), str(data.get("arch") or default[1])
