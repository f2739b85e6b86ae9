"""Release contracts judged against a device: which requirements pass, which reject."""

from __future__ import annotations

from typing import Any

import pytest

from apps_api.engine.state import AppSpec, ServiceSpec, TargetState
from apps_api.target.contracts import DeviceFacts, judge_contracts, l4t_version, semver_of, unmet_requirement

DEVICE = DeviceFacts(
    supervisor_version="17.0.0",
    os_version="balenaOS 2.80.3+rev1",
    kernel_release="4.9.140-l4t-r32.2.1",
    device_type="jetson-nano",
    arch="aarch64",
)


def contract(*requires: dict[str, Any]) -> dict[str, Any]:
    return {"type": "sw.container", "slug": "svc", "requires": list(requires)}


@pytest.mark.parametrize(
    "requirement",
    [
        {"type": "sw.supervisor", "version": ">=16.1.0"},
        {"type": "sw.os", "version": ">=2.80"},
        {"type": "sw.os", "version": "^2.80.0"},
        {"type": "sw.kernel", "version": "4.9.x"},
        {"type": "sw.l4t", "version": "32.2"},
        {"type": "hw.device-type", "slug": "jetson-nano"},
        {"type": "arch.sw", "slug": "aarch64"},
        {
            "or": [
                {"type": "hw.device-type", "slug": "raspberrypi4-64"},
                {"type": "arch.sw", "slug": "aarch64"},
            ]
        },
    ],
)
def test_a_requirement_the_device_meets_passes(requirement: dict[str, Any]) -> None:
    assert unmet_requirement(contract(requirement), DEVICE) is None


@pytest.mark.parametrize(
    ("requirement", "problem"),
    [
        ({"type": "sw.supervisor", "version": ">=18"}, "sw.supervisor >=18 (device has 17.0.0)"),
        ({"type": "sw.os", "version": "<2.50"}, "sw.os <2.50 (device has 2.80.3)"),
        ({"type": "sw.l4t", "version": "32.4"}, "sw.l4t 32.4 (device has 32.2.1)"),
        (
            {"type": "hw.device-type", "slug": "raspberrypi3"},
            "hw.device-type raspberrypi3 (device has jetson-nano)",
        ),
        ({"type": "arch.sw", "slug": "amd64"}, "arch.sw amd64 (device has aarch64)"),
        ({"type": "sw.blob", "version": "1"}, "unknown requirement type 'sw.blob'"),
        ({"type": "sw.os"}, "sw.os without a version range"),
    ],
)
def test_a_requirement_the_device_misses_names_what_it_wants_and_what_the_device_has(
    requirement: dict[str, Any], problem: str
) -> None:
    assert unmet_requirement(contract(requirement), DEVICE) == problem


def test_a_device_without_l4t_fails_an_l4t_requirement() -> None:
    plain = DeviceFacts(
        "17.0.0", "Debian GNU/Linux 12 (bookworm)", "6.1.0-21-amd64", "genericx86-64-ext", "amd64"
    )
    assert (
        unmet_requirement(contract({"type": "sw.l4t", "version": ">=1"}), plain)
        == "sw.l4t >=1 (device has none)"
    )


def test_versions_are_read_out_of_os_and_kernel_strings() -> None:
    assert semver_of("balenaOS 2.80.3+rev1") == "2.80.3"
    assert semver_of("6.1.0-21-amd64") == "6.1.0"
    assert semver_of("balenaOS 6.0") == "6.0.0"
    assert semver_of("") is None
    assert l4t_version("4.9.253-l4t-r32.7") == "32.7.0"
    assert l4t_version("6.1.0-21-amd64") is None


def service(name: str, *requires: dict[str, Any], optional: bool = False) -> ServiceSpec:
    labels = {"io.balena.features.optional": "1"} if optional else {}
    return ServiceSpec(
        service_name=name, service_id=1, image_id=1, image="img", release_id=1, commit="c0ffee",
        labels=labels, contract=contract(*requires) if requires else None,
        depends_on=("gpu",) if name == "web" else (),
    )  # fmt: skip


def target(*services: ServiceSpec) -> TargetState:
    app = AppSpec(app_id=1, app_uuid="u1", name="app", services=services, commit="c0ffee", release_id=1)
    other = AppSpec(
        app_id=2, app_uuid="u2", name="other", services=(service("plain"),), commit="f00", release_id=2
    )
    return TargetState(name=None, config={}, apps=(app, other))


def test_an_app_with_a_service_that_does_not_fit_is_rejected_whole_and_kept() -> None:
    verdict = judge_contracts(
        target(service("web"), service("gpu", {"type": "arch.sw", "slug": "amd64"})), DEVICE
    )

    app, other = verdict.target.apps
    assert app.rejected == "service 'gpu' requires arch.sw amd64 (device has aarch64)"
    assert [s.service_name for s in app.services] == ["web", "gpu"]
    assert other.rejected == ""
    assert verdict.rejected == {"app": app.rejected}


def test_an_optional_service_that_does_not_fit_is_dropped_alone() -> None:
    gpu = service("gpu", {"type": "hw.device-type", "slug": "raspberrypi5"}, optional=True)
    verdict = judge_contracts(target(service("web"), gpu), DEVICE)

    app = verdict.target.apps[0]
    assert app.rejected == ""
    assert [(s.service_name, s.depends_on) for s in app.services] == [("web", ())]
    assert verdict.dropped == {"app/gpu": "hw.device-type raspberrypi5 (device has jetson-nano)"}


def test_services_that_fit_are_kept_as_they_are() -> None:
    original = target(service("web"), service("gpu", {"type": "sw.os", "version": ">=2"}))
    verdict = judge_contracts(original, DEVICE)
    assert verdict.target == original
    assert verdict.rejected == verdict.dropped == {}
