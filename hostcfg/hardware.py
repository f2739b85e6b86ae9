"""Hardware facts for the state report (docs/cloud.md "State report"): the CPU's serial
number, the block device of the data partition, and whether the board saw under-voltage.

Every path is read under a host root (`settings.SUPERVISOR_HOST_ROOT` in production, a
directory of fixture files in tests). What cannot be read is reported as unknown, never
as an error: the report must go out whatever the board exposes.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Where boards expose a serial number, in the order tried; the last is the SMBIOS
# baseboard serial (what `dmidecode -t baseboard` prints) on x86.
CPU_ID_SOURCES = (
    Path("proc/device-tree/serial-number"),
    Path("proc/device-tree/product-sn"),
    Path("sys/devices/soc0/serial_number"),
    Path("sys/class/dmi/id/board_serial"),
)

KERNEL_LOG = Path("dev/kmsg")
UNDERVOLTAGE_LINE = re.compile(rb"under.*voltage", re.IGNORECASE)
# Raspberry Pi firmware flags (`vcgencmd get_throttled`): bit 0 under-voltage now, bit 16
# under-voltage since boot.
RPI_THROTTLED = Path("sys/devices/platform/soc/soc:firmware/get_throttled")
RPI_UNDERVOLTAGE_BITS = (1 << 0) | (1 << 16)
HWMON = Path("sys/class/hwmon")
RPI_VOLTAGE_SENSOR = "rpi_volt"

KERNEL_LOG_LIMIT = 16 * 1024 * 1024
"""Read at most this much of the kernel log (its ring buffer is far smaller)."""


MIB = 1024 * 1024


@dataclass(frozen=True)
class HardwareMetrics:
    """The metrics of the state report, named as reported; sizes in MiB, usage in percent,
    temperature in °C. `cpu_temp` and `cpu_id` are None when the board does not say."""

    cpu_usage: int
    cpu_temp: int | None
    cpu_id: str | None
    memory_usage: int
    memory_total: int
    storage_usage: int
    storage_total: int
    storage_block_device: str


def read_hardware_metrics(host_root: Path, data_dir: Path) -> HardwareMetrics:
    """The metrics now. Storage is that of the filesystem holding `data_dir` (the data
    partition); CPU usage is since the previous call (0 on the first)."""
    import psutil  # kept lazy: only the state report of a managed device needs it

    memory = psutil.virtual_memory()
    disk = psutil.disk_usage(str(data_dir))
    temperatures: dict[str, list[Any]] = getattr(psutil, "sensors_temperatures", dict)()
    readings = [t.current for sensors in temperatures.values() for t in sensors if t.current]
    return HardwareMetrics(
        cpu_usage=round(psutil.cpu_percent(interval=None)),
        cpu_temp=round(max(readings)) if readings else None,
        cpu_id=cpu_id(host_root),
        memory_usage=(memory.total - memory.available) // MIB,
        memory_total=memory.total // MIB,
        storage_usage=disk.used // MIB,
        storage_total=disk.total // MIB,
        storage_block_device=storage_block_device(host_root, data_dir),
    )


def cpu_id(host_root: Path) -> str | None:
    """The board's serial number from the first source that gives one (NUL bytes and
    surrounding blanks removed); None when none does."""
    for source in CPU_ID_SOURCES:
        try:
            raw = (host_root / source).read_bytes()
        except OSError:
            continue
        value = raw.replace(b"\0", b"").decode("utf-8", "replace").strip()
        if value:
            return value
    return None


def storage_block_device(host_root: Path, path: Path) -> str:
    """The block device (`/dev/mmcblk0p6`) of the filesystem holding `path`: found from
    the device number of `path` in `/sys/dev/block`, else from the longest mount point
    in `/proc/self/mounts` that holds `path` when its source is a /dev node; "" when
    neither says."""
    try:
        device = os.stat(path).st_dev
    except OSError:
        return ""
    sys_entry = host_root / "sys/dev/block" / f"{os.major(device)}:{os.minor(device)}"
    with contextlib.suppress(OSError):
        return "/dev/" + os.path.basename(os.readlink(sys_entry))
    return _mounted_device(host_root / "proc/self/mounts", path.resolve())


def _mounted_device(mounts: Path, path: Path) -> str:
    try:
        lines = mounts.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    best, source = -1, ""
    for line in lines:
        fields = line.split()
        if len(fields) < 2:
            continue
        # /proc/mounts writes a blank in a mount point as \040.
        mount_point = Path(fields[1].replace("\\040", " "))
        if (path == mount_point or mount_point in path.parents) and len(mount_point.parts) > best:
            best, source = len(mount_point.parts), fields[0]
    return source if source.startswith("/dev/") else ""


def undervoltage_detected(host_root: Path) -> bool:
    """Whether the board reported under-voltage since boot: a kernel log line matching
    `under…voltage` (the kernel's "Under-voltage detected!"), or on a Raspberry Pi the
    firmware's throttled flags or the voltage sensor's alarm. False when nothing that
    could say so is readable."""
    return (
        _kernel_log_mentions_undervoltage(host_root / KERNEL_LOG)
        or _rpi_firmware_undervoltage(host_root / RPI_THROTTLED)
        or _rpi_voltage_alarm(host_root / HWMON)
    )


def _kernel_log_mentions_undervoltage(kmsg: Path) -> bool:
    # /dev/kmsg gives one record per read and EAGAIN at the end (opened non-blocking), or
    # EPIPE when a record was overwritten while reading; a plain file just ends.
    try:
        fd = os.open(kmsg, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        logger.debug("kernel log unreadable (%s)", exc)
        return False
    try:
        read, partial = 0, b""
        while read < KERNEL_LOG_LIMIT:
            try:
                record = os.read(fd, 65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    continue
                logger.debug("kernel log unreadable (%s)", exc)
                break
            if not record:
                break
            *lines, partial = (partial + record).split(b"\n")
            if any(UNDERVOLTAGE_LINE.search(line) for line in lines):
                return True
            read += len(record)
        return bool(UNDERVOLTAGE_LINE.search(partial))
    finally:
        os.close(fd)


def _rpi_firmware_undervoltage(throttled: Path) -> bool:
    try:
        flags = int(throttled.read_text().strip(), 16)
    except (OSError, ValueError):
        return False
    return bool(flags & RPI_UNDERVOLTAGE_BITS)


def _rpi_voltage_alarm(hwmon: Path) -> bool:
    try:
        sensors = list(hwmon.iterdir())
    except OSError:
        return False
    for sensor in sensors:
        try:
            if (sensor / "name").read_text().strip() == RPI_VOLTAGE_SENSOR:
                return (sensor / "in0_lcrit_alarm").read_text().strip() == "1"
        except OSError:
            continue
    return False
