"""The hardware facts of the state report, read from fixture files under a host root laid
out as the boards lay them out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hostcfg.hardware import cpu_id, read_hardware_metrics, storage_block_device, undervoltage_detected


def put(root: Path, relative: str, content: bytes | str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


# --- cpu_id ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "content", "serial"),
    [
        pytest.param("proc/device-tree/serial-number", b"10000000e3c2d5f1\0", "10000000e3c2d5f1",
                     id="raspberry pi serial loses its trailing nul"),
        pytest.param("proc/device-tree/product-sn", b"1421019012345\0", "1421019012345",
                     id="jetson product serial without a serial number"),
        pytest.param("sys/devices/soc0/serial_number", b"0x12345678\n", "0x12345678",
                     id="soc serial from sysfs loses its newline"),
        pytest.param("sys/class/dmi/id/board_serial", b"PF2ABCDE\n", "PF2ABCDE",
                     id="x86 board gives its baseboard serial"),
    ],
)  # fmt: skip
def test_each_serial_source_alone_gives_the_cpu_id(
    tmp_path: Path, source: str, content: bytes, serial: str
) -> None:
    put(tmp_path, source, content)
    assert cpu_id(tmp_path) == serial


def test_the_device_tree_comes_before_sysfs(tmp_path: Path) -> None:
    put(tmp_path, "proc/device-tree/serial-number", b"from-device-tree\0")
    put(tmp_path, "sys/devices/soc0/serial_number", "from-sysfs\n")
    assert cpu_id(tmp_path) == "from-device-tree"


def test_an_empty_serial_is_skipped_and_none_found_is_none(tmp_path: Path) -> None:
    put(tmp_path, "proc/device-tree/serial-number", b"\0")
    assert cpu_id(tmp_path) is None


# --- storage_block_device -----------------------------------------------------------------------


def test_the_data_partition_is_found_by_its_device_number(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    device = os.stat(data).st_dev
    entry = tmp_path / "host" / "sys/dev/block" / f"{os.major(device)}:{os.minor(device)}"
    entry.parent.mkdir(parents=True)
    entry.symlink_to("../../devices/platform/emmc2bus/mmc_host/mmc0/mmc0:0001/block/mmcblk0/mmcblk0p6")
    assert storage_block_device(tmp_path / "host", data) == "/dev/mmcblk0p6"


def test_without_sysfs_the_longest_mount_holding_the_data_dir_names_it(tmp_path: Path) -> None:
    data = tmp_path / "data dir" / "supervisor"
    data.mkdir(parents=True)
    mounts = [
        "/dev/root / ext4 ro,relatime 0 0",
        f"/dev/sda6 {str(tmp_path / 'data dir').replace(' ', chr(92) + '040')} ext4 rw,relatime 0 0",
        f"/dev/sda7 {tmp_path / 'data dir2'} ext4 rw,relatime 0 0",
        "tmpfs /tmp tmpfs rw 0 0",
    ]
    put(tmp_path / "host", "proc/self/mounts", "\n".join(mounts) + "\n")
    assert storage_block_device(tmp_path / "host", data) == "/dev/sda6"


def test_a_data_dir_on_no_block_device_has_none(tmp_path: Path) -> None:
    put(tmp_path / "host", "proc/self/mounts", f"overlay / overlay rw 0 0\ntmpfs {tmp_path} tmpfs rw 0 0\n")
    assert storage_block_device(tmp_path / "host", tmp_path) == ""
    assert storage_block_device(tmp_path / "nothing", tmp_path) == ""


# --- undervoltage_detected ------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "4,1022,58611126,-;Under-voltage detected! (0x00050005)",
        "2,1022,58611126,-;hwmon hwmon1: Undervoltage detected!",
    ],
)
def test_an_undervoltage_line_in_the_kernel_log_is_reported(tmp_path: Path, line: str) -> None:
    put(tmp_path, "dev/kmsg", f"6,1,1,-;Booting Linux\n{line}\n6,3,3,-;eth0: renamed from veth3aa11ca\n")
    assert undervoltage_detected(tmp_path)


def test_a_kernel_log_without_it_is_not(tmp_path: Path) -> None:
    put(tmp_path, "dev/kmsg", "6,1023,569378450,-;eth0: renamed from veth3aa11ca\n" * 20000)
    assert not undervoltage_detected(tmp_path)


def test_a_line_across_two_reads_is_still_found(tmp_path: Path) -> None:
    padding = "6,1,1,-;" + "x" * (65536 - 8 - 5) + "\n"
    put(tmp_path, "dev/kmsg", padding + "2,2,2,-;Under-voltage detected!\n")
    assert undervoltage_detected(tmp_path)


@pytest.mark.parametrize(("flags", "expected"), [("0x50005", True), ("0x50000", True), ("0x0", False),
                                                 ("0xe0000", False), ("garbage", False)])  # fmt: skip
def test_the_raspberry_pi_firmware_flags_say_it_without_a_kernel_log(
    tmp_path: Path, flags: str, expected: bool
) -> None:
    put(tmp_path, "sys/devices/platform/soc/soc:firmware/get_throttled", flags + "\n")
    assert undervoltage_detected(tmp_path) is expected


def test_the_raspberry_pi_voltage_sensor_alarm_says_it(tmp_path: Path) -> None:
    put(tmp_path, "sys/class/hwmon/hwmon0/name", "cpu_thermal\n")
    put(tmp_path, "sys/class/hwmon/hwmon0/in0_lcrit_alarm", "1\n")  # not the voltage sensor
    put(tmp_path, "sys/class/hwmon/hwmon1/name", "rpi_volt\n")
    put(tmp_path, "sys/class/hwmon/hwmon1/in0_lcrit_alarm", "0\n")
    assert not undervoltage_detected(tmp_path)
    put(tmp_path, "sys/class/hwmon/hwmon1/in0_lcrit_alarm", "1\n")
    assert undervoltage_detected(tmp_path)


def test_a_board_that_exposes_none_of_these_has_no_undervoltage(tmp_path: Path) -> None:
    (tmp_path / "sys/class/hwmon").mkdir(parents=True)
    assert not undervoltage_detected(tmp_path)


# --- all together ------------------------------------------------------------------------------


def test_the_metrics_name_the_data_partition_and_the_serial(tmp_path: Path) -> None:
    put(tmp_path / "host", "proc/device-tree/serial-number", b"10000000e3c2d5f1\0")
    put(tmp_path / "host", "proc/self/mounts", f"/dev/mmcblk0p6 {tmp_path} ext4 rw 0 0\n")
    metrics = read_hardware_metrics(tmp_path / "host", tmp_path)
    assert metrics.cpu_id == "10000000e3c2d5f1"
    assert metrics.storage_block_device == "/dev/mmcblk0p6"
    assert 0 < metrics.storage_usage <= metrics.storage_total
    assert 0 < metrics.memory_usage <= metrics.memory_total
    assert 0 <= metrics.cpu_usage <= 100
