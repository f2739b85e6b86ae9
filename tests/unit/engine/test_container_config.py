"""The container a service asks for: the feature labels and fixed addresses that reach Docker."""

from __future__ import annotations

import dataclasses

from apps_api.engine.container_config import DeviceContext, build_container_config, container_config_hash
from tests.unit.engine.state_builders import app, svc

DEVICE = DeviceContext(uuid="d1", host_root="/")


def test_fixed_addresses_reach_the_endpoint_of_their_network_only() -> None:
    networks = {
        "front": {"aliases": [], "ipv4_address": "172.30.0.5", "link_local_ips": ["169.254.1.5"]},
        "back": {"aliases": ["db"]},
    }
    target = app(svc("main", composition={"networks": networks}))

    config = build_container_config(target, target.services[0], DEVICE)

    assert config.endpoints == {"1_front": {"ipv4_address": "172.30.0.5", "link_local_ips": ["169.254.1.5"]}}
    assert config.networks == {"1_back": ["db", "main"], "1_front": ["main"]}


def test_a_service_without_fixed_addresses_keeps_the_hash_it_had_before_they_existed() -> None:
    target = app(svc("main"))
    config = build_container_config(target, target.services[0], DEVICE)
    assert config.endpoints == {}
    assert container_config_hash(config) == container_config_hash(dataclasses.replace(config, endpoints={}))
    with_address = dataclasses.replace(config, endpoints={"1_default": {"ipv4_address": "10.0.0.2"}})
    assert container_config_hash(with_address) != container_config_hash(config)


def test_kernel_modules_and_firmware_are_bound_only_where_the_host_has_them() -> None:
    labels = {"io.balena.features.kernel-modules": "1", "io.balena.features.firmware": "1"}
    target = app(svc("main", labels=labels))

    present = build_container_config(target, target.services[0], DEVICE)
    lacking = build_container_config(
        target,
        target.services[0],
        dataclasses.replace(DEVICE, missing_host_paths=frozenset({"/lib/modules"})),
    )

    assert {"/lib/modules:/lib/modules", "/lib/firmware:/lib/firmware"} <= set(present.host_config["binds"])
    assert "/lib/modules:/lib/modules" not in lacking.host_config["binds"]
    assert "/lib/firmware:/lib/firmware" in lacking.host_config["binds"]


def test_extra_firmware_mounts_the_supervisor_owned_volume() -> None:
    target = app(svc("main", labels={"io.balena.features.extra-firmware": "true"}))
    config = build_container_config(target, target.services[0], DEVICE)
    assert {"Type": "volume", "Source": "extra-firmware", "Target": "/extra-firmware", "ReadOnly": False} in (
        config.host_config["mounts"]
    )


def test_board_revision_is_given_only_to_services_that_ask() -> None:
    device = dataclasses.replace(DEVICE, os_board_rev="a1b2c3d")
    asking = app(svc("main", labels={"io.balena.features.host-os.board-rev": "1"}))
    other = app(svc("main"))
    assert build_container_config(asking, asking.services[0], device).environment[
        "BALENA_HOST_OS_BOARD_REV"
    ] == ("a1b2c3d")
    assert (
        "BALENA_HOST_OS_BOARD_REV" not in build_container_config(other, other.services[0], device).environment
    )
