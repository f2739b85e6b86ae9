"""hostcfg.dbus against a real dbus-daemon and the logind/systemd stand-ins."""

from __future__ import annotations

import pytest

from hostcfg import dbus
from tests.host_bus import HostBus


def test_reboot_and_power_off_reach_logind_with_false(host_bus: HostBus) -> None:
    dbus.reboot()
    dbus.power_off()
    assert [(c.member, c.args) for c in host_bus.services.calls] == [
        ("Reboot", (False,)),
        ("PowerOff", (False,)),
    ]


def test_units_restart_start_stop_and_report_their_state(host_bus: HostBus) -> None:
    assert dbus.unit_active_state("openvpn.service") is None
    dbus.start_unit("openvpn.service")
    assert dbus.unit_active_state("openvpn.service") == "active"
    dbus.stop_unit("openvpn.service")
    assert dbus.unit_active_state("openvpn.service") == "inactive"
    dbus.restart_unit("redsocks.service")
    assert ("RestartUnit", ("redsocks.service", "fail")) in [
        (c.member, c.args) for c in host_bus.services.calls
    ]


def test_part_of_lists_the_units_targets(host_bus: HostBus) -> None:
    host_bus.services.unit_part_of["balena-proxy-config.service"] = ["redsocks-conf.target"]
    assert dbus.unit_part_of("balena-proxy-config.service") == ["redsocks-conf.target"]
    assert dbus.unit_part_of("redsocks.service") == []


def test_logind_available_only_when_its_name_is_owned(host_bus: HostBus) -> None:
    assert dbus.logind_available()


def test_an_unreachable_bus_is_a_host_bus_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(dbus.HostBusError, match="cannot be reached"):
        dbus.reboot(bus_address=f"unix:path={tmp_path / 'missing.sock'}")
