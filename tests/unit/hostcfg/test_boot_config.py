"""Which boot keys a device writes, refuses and why; power and fan profiles in config.json."""

from __future__ import annotations

from typing import Any

import pytest

from hostcfg.boot_config import BootConfigPlan, Refusal, is_raspberry_pi, merge_os_settings, plan_boot_config
from hostcfg.device_config import device_config_from


def plan(config: dict[str, str], device_type: str) -> BootConfigPlan:
    typed, _warnings = device_config_from(config, managed=True)
    return plan_boot_config(typed, device_type=device_type)


@pytest.mark.parametrize(
    ("slug", "expected"),
    [
        ("raspberrypi4-64", True),
        ("raspberry-pi", True),
        ("raspberrypi0-2w-64", True),
        ("rpi", True),
        ("fincm3", True),
        ("revpi-connect-4", True),
        ("revpi-core-3", True),
        ("npe-x500-m3", True),
        ("genericx86-64-ext", False),
        ("jetson-agx-orin-devkit", False),
        ("generic-aarch64", False),
        ("beaglebone-black", False),
    ],
)
def test_config_txt_is_a_raspberry_pi_family_file(slug: str, expected: bool) -> None:
    assert is_raspberry_pi(slug) is expected


def test_raspberry_pi_writes_its_config_txt_keys() -> None:
    assert plan({"HOST_CONFIG_gpu_mem": "16", "RESIN_HOST_CONFIG_enable_uart": "1"}, "raspberrypi4-64") == (
        BootConfigPlan(config_txt={"gpu_mem": "16", "enable_uart": "1"}, refusals=())
    )


def test_other_device_types_refuse_every_config_txt_key_in_one_line() -> None:
    result = plan({"HOST_CONFIG_gpu_mem": "16", "HOST_CONFIG_enable_uart": "1"}, "genericx86-64-ext")

    assert result.config_txt == {}
    assert [refusal.message() for refusal in result.refusals] == [
        "Not applying HOST_CONFIG_enable_uart, HOST_CONFIG_gpu_mem: config.txt is only written on "
        "Raspberry Pi device types, and this device is genericx86-64-ext"
    ]


def test_keys_that_choose_what_boots_are_refused_even_on_a_raspberry_pi() -> None:
    result = plan(
        {"HOST_CONFIG_kernel": "evil.img", "HOST_CONFIG_initramfs": "x", "HOST_CONFIG_gpu_mem": "16"},
        "raspberrypi3",
    )

    assert result.config_txt == {"gpu_mem": "16"}
    assert result.refusals == (
        Refusal(
            ("HOST_CONFIG_initramfs", "HOST_CONFIG_kernel"),
            "these config.txt keys choose what boots and could make the device unbootable",
        ),
    )


def test_boot_keys_of_other_device_families_are_not_supported() -> None:
    result = plan(
        {
            "HOST_EXTLINUX_isolcpus": "1",
            "HOST_CONFIGFS_ssdt": "spidev1,1",
            "HOST_ODMDATA_configuration": "2",
            "HOST_SPLASH_IMAGE": "data:image/png;base64,AAAA",
        },
        "jetson-tx2",
    )

    assert result.config_txt == {}
    assert [refusal.message() for refusal in result.refusals] == [
        "Not applying HOST_CONFIGFS_ssdt, HOST_EXTLINUX_isolcpus, HOST_ODMDATA_configuration, "
        "HOST_SPLASH_IMAGE: not supported on this device"
    ]


def test_power_and_fan_profiles_are_never_config_txt_lines() -> None:
    config = {"HOST_CONFIG_power_mode": "low", "HOST_CONFIG_fan_profile": "quiet"}
    typed, _warnings = device_config_from(config, managed=True)

    assert typed.os_settings == {"power_mode": "low", "fan_profile": "quiet"}
    assert plan(config, "raspberrypi4-64") == BootConfigPlan(config_txt={}, refusals=())
    assert plan(config, "jetson-agx-orin-devkit") == BootConfigPlan(config_txt={}, refusals=())


@pytest.mark.parametrize(
    ("before", "settings", "previous", "after"),
    [
        pytest.param(
            {"uuid": "u", "os": {"network": {"wifi": {"randomMacAddressScan": False}}}},
            {"power_mode": "low", "fan_profile": "quiet"},
            [],
            {
                "uuid": "u",
                "os": {
                    "network": {"wifi": {"randomMacAddressScan": False}},
                    "power": {"mode": "low"},
                    "fan": {"profile": "quiet"},
                },
            },
            id="merged-into-the-os-object",
        ),
        pytest.param(
            {"uuid": "u"},
            {"power_mode": "15W"},
            [],
            {"uuid": "u", "os": {"power": {"mode": "15W"}}},
            id="os-object-created",
        ),
        pytest.param(
            {"os": {"power": {"mode": "low"}, "fan": {"profile": "quiet"}, "sshKeys": ["k"]}},
            {"fan_profile": "cool"},
            ["power_mode", "fan_profile"],
            {"os": {"fan": {"profile": "cool"}, "sshKeys": ["k"]}},
            id="a-setting-that-leaves-the-target-is-removed",
        ),
        pytest.param(
            {"uuid": "u", "os": {"power": {"mode": "low"}}},
            {},
            ["power_mode"],
            {"uuid": "u"},
            id="an-os-object-left-empty-goes",
        ),
        pytest.param(
            {"os": {"power": {"mode": "set-by-hand"}}},
            {},
            [],
            {"os": {"power": {"mode": "set-by-hand"}}},
            id="a-value-the-supervisor-never-set-is-kept",
        ),
    ],
)
def test_power_and_fan_profiles_in_config_json(
    before: dict[str, Any], settings: dict[str, str], previous: list[str], after: dict[str, Any]
) -> None:
    merge_os_settings(before, settings, previous=previous)

    assert before == after
