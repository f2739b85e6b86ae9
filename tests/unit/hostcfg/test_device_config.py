"""Device configuration variables: names, defaults, invalid values, config.txt, reboot breadcrumb."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hostcfg.device_config import (
    BootConfigError,
    DeviceConfig,
    device_config_from,
    filled_target_config,
    initial_config_variables,
    normalise_config,
    reboot_breadcrumb_pending,
    set_reboot_breadcrumb,
    write_boot_config,
)

MANAGED_DEFAULTS = DeviceConfig(
    poll_interval_ms=900_000,
    instant_update_trigger=True,
    local_mode=False,
    connectivity_check=True,
    log_control=True,
    api_request_timeout_ms=59_000,
    delta=False,
    delta_request_timeout_ms=59_000,
    delta_apply_timeout_ms=0,
    delta_retry_count=30,
    delta_retry_interval_ms=10_000,
    delta_version=2,
    lock_override=False,
    persistent_logging=False,
    hardware_metrics=True,
    vpn_control=True,
    firewall_mode="off",
    discoverability=True,
    boot_config={},
)

FILLED_DEFAULTS = {
    "SUPERVISOR_POLL_INTERVAL": "900000",
    "SUPERVISOR_INSTANT_UPDATE_TRIGGER": "true",
    "SUPERVISOR_LOCAL_MODE": "false",
    "SUPERVISOR_CONNECTIVITY_CHECK": "true",
    "SUPERVISOR_LOG_CONTROL": "true",
    "SUPERVISOR_API_REQUEST_TIMEOUT": "59000",
    "SUPERVISOR_DELTA": "false",
    "SUPERVISOR_DELTA_REQUEST_TIMEOUT": "59000",
    "SUPERVISOR_DELTA_APPLY_TIMEOUT": "0",
    "SUPERVISOR_DELTA_RETRY_COUNT": "30",
    "SUPERVISOR_DELTA_RETRY_INTERVAL": "10000",
    "SUPERVISOR_DELTA_VERSION": "2",
    "SUPERVISOR_OVERRIDE_LOCK": "false",
    "SUPERVISOR_PERSISTENT_LOGGING": "false",
    "SUPERVISOR_HARDWARE_METRICS": "true",
    "SUPERVISOR_VPN_CONTROL": "true",
    "HOST_FIREWALL_MODE": "off",
    "HOST_DISCOVERABILITY": "true",
}


def warning_for(key: str) -> str:
    return f"Warning: Ignoring invalid device configuration value for {key}, using default instead"


# --- names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(
            {"SUPERVISOR_DELTA": "0", "RESIN_SUPERVISOR_DELTA": "1", "BALENA_SUPERVISOR_DELTA": "true"},
            {"SUPERVISOR_DELTA": "true"},
            id="balena-beats-resin-and-bare",
        ),
        pytest.param(
            {"RESIN_SUPERVISOR_DELTA": "1", "SUPERVISOR_DELTA": "0"},
            {"SUPERVISOR_DELTA": "1"},
            id="resin-beats-bare-whatever-the-order",
        ),
        pytest.param({"SUPERVISOR_DELTA": "0"}, {"SUPERVISOR_DELTA": "0"}, id="bare-name-kept"),
        pytest.param(
            {"BALENA_HOST_CONFIG_gpu_mem": "16", "RESIN_HOST_FIREWALL_MODE": "on"},
            {"HOST_CONFIG_gpu_mem": "16", "HOST_FIREWALL_MODE": "on"},
            id="host-keys-lose-their-prefix",
        ),
        pytest.param(
            {"OVERRIDE_LOCK": "1"}, {"SUPERVISOR_OVERRIDE_LOCK": "1"}, id="legacy-override-lock-mapped"
        ),
        pytest.param(
            {"RESIN_OVERRIDE_LOCK": "1"},
            {"SUPERVISOR_OVERRIDE_LOCK": "1"},
            id="prefixed-legacy-override-lock-mapped",
        ),
        pytest.param(
            {"BALENA_OVERRIDE_LOCK": "1", "SUPERVISOR_OVERRIDE_LOCK": "false"},
            {"SUPERVISOR_OVERRIDE_LOCK": "false"},
            id="current-name-beats-legacy-name-whatever-the-prefix",
        ),
    ],
)
def test_normalise_config_strips_prefixes_by_precedence(
    raw: dict[str, str], expected: dict[str, str]
) -> None:
    assert normalise_config(raw) == expected


def test_unknown_keys_are_dropped_and_boot_keys_kept() -> None:
    raw = {
        "FOO": "1",
        "BALENA_FOO": "1",
        "SUPERVISOR_NOT_A_SETTING": "1",
        "BALENA_RESIN_SUPERVISOR_DELTA": "1",
        "HOST_CONFIG_": "no name",
        "HOST_CONFIG_dtoverlay": '"i2c-rtc,ds3231","vc4-kms-v3d"',
        "RESIN_HOST_EXTLINUX_isolcpus": "1",
        "HOST_CONFIGFS_ssdt": "spidev1,1",
        "HOST_ODMDATA_configuration": "2",
        "BALENA_HOST_SPLASH_IMAGE": "data:image/png;base64,AAAA",
    }

    assert normalise_config(raw) == {
        "HOST_CONFIG_dtoverlay": '"i2c-rtc,ds3231","vc4-kms-v3d"',
        "HOST_EXTLINUX_isolcpus": "1",
        "HOST_CONFIGFS_ssdt": "spidev1,1",
        "HOST_ODMDATA_configuration": "2",
        "HOST_SPLASH_IMAGE": "data:image/png;base64,AAAA",
    }


# --- typed values ----------------------------------------------------------------------


def test_empty_config_on_a_managed_device_is_all_defaults() -> None:
    assert device_config_from({}, managed=True) == (MANAGED_DEFAULTS, [])


def test_local_mode_defaults_to_true_on_an_unmanaged_device_unless_set() -> None:
    unmanaged, warnings = device_config_from({}, managed=False)
    explicit, _ = device_config_from({"SUPERVISOR_LOCAL_MODE": "false"}, managed=False)

    assert unmanaged.local_mode is True
    assert warnings == []
    assert explicit.local_mode is False


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("on", True),
        (" yes ", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("off", False),
        ("no", False),
        ("", False),
    ],
)
def test_booleans_compare_loosely(value: str, expected: bool) -> None:
    config, warnings = device_config_from({"BALENA_SUPERVISOR_DELTA": value}, managed=True)

    assert (config.delta, warnings) == (expected, [])


def test_valid_values_are_typed() -> None:
    raw = {
        "BALENA_SUPERVISOR_POLL_INTERVAL": "600000",
        "SUPERVISOR_INSTANT_UPDATE_TRIGGER": "false",
        "SUPERVISOR_LOCAL_MODE": "1",
        "SUPERVISOR_CONNECTIVITY_CHECK": "0",
        "SUPERVISOR_LOG_CONTROL": "off",
        "SUPERVISOR_API_REQUEST_TIMEOUT": "30000",
        "SUPERVISOR_DELTA": "true",
        "SUPERVISOR_DELTA_REQUEST_TIMEOUT": "30000",
        "SUPERVISOR_DELTA_APPLY_TIMEOUT": "5000",
        "SUPERVISOR_DELTA_RETRY_COUNT": "3",
        "SUPERVISOR_DELTA_RETRY_INTERVAL": "1000",
        "SUPERVISOR_DELTA_VERSION": "3",
        "RESIN_OVERRIDE_LOCK": "1",
        "SUPERVISOR_PERSISTENT_LOGGING": "true",
        "SUPERVISOR_HARDWARE_METRICS": "false",
        "SUPERVISOR_VPN_CONTROL": "false",
        "HOST_FIREWALL_MODE": "AUTO",
        "HOST_DISCOVERABILITY": "false",
        "BALENA_HOST_CONFIG_gpu_mem": "16",
        "HOST_CONFIG_gpio": '"2=op","3=op"',
        "HOST_CONFIG_power_mode": "low",
        "HOST_CONFIG_fan_profile": "quiet",
        "HOST_EXTLINUX_isolcpus": "1",
        "HOST_SPLASH_IMAGE": "data:image/png;base64,AAAA",
    }

    assert device_config_from(raw, managed=True) == (
        DeviceConfig(
            poll_interval_ms=600_000,
            instant_update_trigger=False,
            local_mode=True,
            connectivity_check=False,
            log_control=False,
            api_request_timeout_ms=30_000,
            delta=True,
            delta_request_timeout_ms=30_000,
            delta_apply_timeout_ms=5_000,
            delta_retry_count=3,
            delta_retry_interval_ms=1_000,
            delta_version=3,
            lock_override=True,
            persistent_logging=True,
            hardware_metrics=False,
            vpn_control=False,
            firewall_mode="auto",
            discoverability=False,
            boot_config={"gpu_mem": "16", "gpio": '"2=op","3=op"'},
            os_settings={"power_mode": "low", "fan_profile": "quiet"},
            unsupported_boot_keys=("HOST_EXTLINUX_isolcpus", "HOST_SPLASH_IMAGE"),
        ),
        [],
    )


@pytest.mark.parametrize(
    ("key", "value", "attribute"),
    [
        ("SUPERVISOR_POLL_INTERVAL", "often", "poll_interval_ms"),
        ("SUPERVISOR_POLL_INTERVAL", "9999", "poll_interval_ms"),
        ("SUPERVISOR_POLL_INTERVAL", "-60000", "poll_interval_ms"),
        ("SUPERVISOR_POLL_INTERVAL", "60000.5", "poll_interval_ms"),
        ("SUPERVISOR_INSTANT_UPDATE_TRIGGER", "maybe", "instant_update_trigger"),
        ("SUPERVISOR_LOCAL_MODE", "2", "local_mode"),
        ("SUPERVISOR_CONNECTIVITY_CHECK", "enabled", "connectivity_check"),
        ("SUPERVISOR_LOG_CONTROL", "nope", "log_control"),
        ("SUPERVISOR_API_REQUEST_TIMEOUT", "1e3", "api_request_timeout_ms"),
        ("SUPERVISOR_DELTA", "yes please", "delta"),
        ("SUPERVISOR_DELTA_REQUEST_TIMEOUT", "", "delta_request_timeout_ms"),
        ("SUPERVISOR_DELTA_APPLY_TIMEOUT", "-1", "delta_apply_timeout_ms"),
        ("SUPERVISOR_DELTA_RETRY_COUNT", "three", "delta_retry_count"),
        ("SUPERVISOR_DELTA_RETRY_INTERVAL", "0x10", "delta_retry_interval_ms"),
        ("SUPERVISOR_DELTA_VERSION", "1", "delta_version"),
        ("SUPERVISOR_DELTA_VERSION", "4", "delta_version"),
        ("SUPERVISOR_OVERRIDE_LOCK", "force", "lock_override"),
        ("SUPERVISOR_PERSISTENT_LOGGING", "always", "persistent_logging"),
        ("SUPERVISOR_HARDWARE_METRICS", "y", "hardware_metrics"),
        ("SUPERVISOR_VPN_CONTROL", "disabled", "vpn_control"),
        ("HOST_FIREWALL_MODE", "strict", "firewall_mode"),
        ("HOST_DISCOVERABILITY", "hidden", "discoverability"),
    ],
)
def test_invalid_value_falls_back_to_default_with_a_warning_naming_the_key(
    key: str, value: str, attribute: str
) -> None:
    config, warnings = device_config_from({f"BALENA_{key}": value}, managed=True)

    assert getattr(config, attribute) == getattr(MANAGED_DEFAULTS, attribute)
    assert warnings == [warning_for(key)]


def test_invalid_local_mode_on_an_unmanaged_device_falls_back_to_true() -> None:
    config, warnings = device_config_from({"SUPERVISOR_LOCAL_MODE": "sometimes"}, managed=False)

    assert config.local_mode is True
    assert warnings == [warning_for("SUPERVISOR_LOCAL_MODE")]


def test_boot_entry_that_cannot_be_a_config_txt_line_is_left_out_with_a_warning() -> None:
    config, warnings = device_config_from(
        {"HOST_CONFIG_gpu mem": "16", "HOST_CONFIG_hdmi_mode": "1\nkernel=evil.img", "HOST_CONFIG_a": "1"},
        managed=True,
    )

    assert config.boot_config == {"a": "1"}
    assert warnings == [
        "Warning: Ignoring invalid device configuration value for HOST_CONFIG_gpu mem, not applied",
        "Warning: Ignoring invalid device configuration value for HOST_CONFIG_hdmi_mode, not applied",
    ]


# --- GET /v2/local/target-state ---------------------------------------------------------


def test_filled_target_config_of_an_empty_config_is_every_default() -> None:
    filled = filled_target_config({}, managed=True)

    assert filled == FILLED_DEFAULTS
    assert filled_target_config({}, managed=False) == {**FILLED_DEFAULTS, "SUPERVISOR_LOCAL_MODE": "true"}


def test_filled_target_config_keeps_given_values_verbatim_under_canonical_names() -> None:
    raw = {
        "RESIN_SUPERVISOR_POLL_INTERVAL": "600000",
        "BALENA_SUPERVISOR_LOCAL_MODE": "1",
        "SUPERVISOR_DELTA_VERSION": "7",
        "OVERRIDE_LOCK": "on",
        "BALENA_HOST_CONFIG_gpu_mem": "16",
        "HOST_CONFIG_gpio": '"2=op","3=op"',
        "SOMETHING_ELSE": "dropped",
    }

    assert filled_target_config(raw, managed=False) == {
        **FILLED_DEFAULTS,
        "SUPERVISOR_POLL_INTERVAL": "600000",
        "SUPERVISOR_LOCAL_MODE": "1",
        "SUPERVISOR_DELTA_VERSION": "7",
        "SUPERVISOR_OVERRIDE_LOCK": "on",
        "HOST_CONFIG_gpu_mem": "16",
        "HOST_CONFIG_gpio": '"2=op","3=op"',
    }


# --- config.txt ------------------------------------------------------------------------

USER_CONFIG_TXT = """\
# Raspberry Pi config, edited by hand
disable_splash=1

dtoverlay=i2c-rtc,ds3231
dtoverlay=vc4-kms-v3d
dtparam=audio=on
   # indented comment
hdmi_force_hotplug=1
"""


@pytest.mark.parametrize(
    ("current", "target", "expected"),
    [
        ({}, {}, {}),
        # Defaults are not sent; what differs is, under the RESIN_ name the cloud uses.
        (
            {"SUPERVISOR_POLL_INTERVAL": "900000", "BALENA_SUPERVISOR_POLL_INTERVAL": "600000"},
            {},
            {"RESIN_SUPERVISOR_POLL_INTERVAL": "600000"},
        ),
        (
            {"HOST_CONFIG_gpu_mem": "16", "SUPERVISOR_DELTA": "true"},
            {},
            {"RESIN_HOST_CONFIG_gpu_mem": "16", "RESIN_SUPERVISOR_DELTA": "true"},
        ),
        # What the cloud's target sets already, under any spelling, is the cloud's.
        (
            {"HOST_CONFIG_gpu_mem": "16", "SUPERVISOR_DELTA": "true"},
            {"RESIN_SUPERVISOR_DELTA": "false"},
            {"RESIN_HOST_CONFIG_gpu_mem": "16"},
        ),
        # Local mode is left behind and the VPN never turned off.
        ({"SUPERVISOR_LOCAL_MODE": "true", "SUPERVISOR_VPN_CONTROL": "false"}, {}, {}),
        ({"UNKNOWN": "1"}, {}, {}),
    ],
)
def test_initial_config_variables_are_the_non_default_values_the_target_lacks(
    current: dict[str, str], target: dict[str, str], expected: dict[str, str]
) -> None:
    assert initial_config_variables(current, target) == expected


def test_gpu_mem_lands_in_config_txt_with_the_other_lines_kept(tmp_path: Path) -> None:
    (tmp_path / "config.txt").write_text(USER_CONFIG_TXT)

    assert write_boot_config(tmp_path, {"gpu_mem": "16"}) is True

    assert (tmp_path / "config.txt").read_text() == USER_CONFIG_TXT + "gpu_mem=16\n"


def test_existing_gpu_mem_line_is_replaced_in_place(tmp_path: Path) -> None:
    (tmp_path / "config.txt").write_text("# top\ngpu_mem=64\ndtoverlay=a\n#gpu_mem=128\ngpu_mem = 32\n")

    assert write_boot_config(tmp_path, {"gpu_mem": "16"}) is True

    assert (tmp_path / "config.txt").read_text() == "# top\ngpu_mem=16\ndtoverlay=a\n#gpu_mem=128\n"


def test_previously_managed_key_no_longer_in_the_target_is_removed(tmp_path: Path) -> None:
    (tmp_path / "config.txt").write_text("disable_splash=1\ngpu_mem=16\nhdmi_mode=4\n")

    changed = write_boot_config(tmp_path, {"hdmi_mode": "4"}, previous=["gpu_mem", "hdmi_mode"])

    assert changed is True
    assert (tmp_path / "config.txt").read_text() == "disable_splash=1\nhdmi_mode=4\n"


def test_unchanged_file_is_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "config.txt"
    path.write_text("# mine\ngpu_mem=16\ndtoverlay=a\ndtoverlay=b\n")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before = path.stat()

    assert write_boot_config(tmp_path, {"gpu_mem": "16"}, previous=["gpu_mem"]) is False

    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.txt"]


def test_quoted_list_becomes_one_line_per_item_replacing_unconditional_lines_only(tmp_path: Path) -> None:
    (tmp_path / "config.txt").write_text(
        "dtoverlay=old\ngpu_mem=64\n[pi4]\ndtoverlay=pi4-only\n[all]\ndtoverlay=x\n"
    )

    assert write_boot_config(tmp_path, {"dtoverlay": '"i2c-rtc,ds3231","vc4-kms-v3d"'}) is True

    assert (tmp_path / "config.txt").read_text() == (
        "dtoverlay=i2c-rtc,ds3231\ndtoverlay=vc4-kms-v3d\ngpu_mem=64\n[pi4]\ndtoverlay=pi4-only\n[all]\n"
    )


def test_new_key_after_a_conditional_section_goes_under_all(tmp_path: Path) -> None:
    (tmp_path / "config.txt").write_text("[pi4]\narm_boost=1")

    assert write_boot_config(tmp_path, {"gpu_mem": "16", "enable_uart": "1"}) is True

    assert (tmp_path / "config.txt").read_text() == "[pi4]\narm_boost=1\n[all]\nenable_uart=1\ngpu_mem=16\n"


def test_missing_config_txt_is_created_only_when_there_is_something_to_write(tmp_path: Path) -> None:
    assert write_boot_config(tmp_path, {}, previous=["gpu_mem"]) is False
    assert not (tmp_path / "config.txt").exists()

    assert write_boot_config(tmp_path, {"gpu_mem": "16"}) is True
    assert (tmp_path / "config.txt").read_text() == "gpu_mem=16\n"


def test_entry_that_is_not_one_line_is_refused_and_the_file_untouched(tmp_path: Path) -> None:
    (tmp_path / "config.txt").write_text("gpu_mem=64\n")

    with pytest.raises(BootConfigError):
        write_boot_config(tmp_path, {"gpu_mem": "16\nkernel=evil.img"})

    assert (tmp_path / "config.txt").read_text() == "gpu_mem=64\n"


def test_rewrite_keeps_the_file_permissions(tmp_path: Path) -> None:
    path = tmp_path / "config.txt"
    path.write_text("gpu_mem=64\n")
    path.chmod(0o600)

    assert write_boot_config(tmp_path, {"gpu_mem": "16"}) is True

    assert (path.read_text(), path.stat().st_mode & 0o777) == ("gpu_mem=16\n", 0o600)


def test_config_txt_that_is_not_utf8_is_never_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "config.txt"
    path.write_bytes(b"# caf\xe9\ngpu_mem=64\n")

    with pytest.raises(BootConfigError):
        write_boot_config(tmp_path, {"gpu_mem": "16"})

    assert path.read_bytes() == b"# caf\xe9\ngpu_mem=64\n"


# --- reboot breadcrumb -----------------------------------------------------------------


def test_reboot_breadcrumb_is_pending_only_when_touched_after_boot(tmp_path: Path) -> None:
    assert reboot_breadcrumb_pending(tmp_path, boot_time=0.0) is False

    set_reboot_breadcrumb(tmp_path)
    touched = (tmp_path / "tmp" / "balena-supervisor" / "reboot-after-apply").stat().st_mtime

    assert reboot_breadcrumb_pending(tmp_path, boot_time=touched - 60) is True
    assert reboot_breadcrumb_pending(tmp_path, boot_time=touched + 60) is False
