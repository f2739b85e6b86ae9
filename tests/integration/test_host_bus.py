"""hostcfg.dbus against a real dbus-daemon and the logind/systemd stand-ins."""

from __future__ import annotations

import pytest
from jeepney import DBusAddress, HeaderFields, MessageType, new_method_call
from jeepney.io.blocking import open_dbus_connection

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


@pytest.mark.parametrize(
    ("address", "member", "signature", "body", "error"),
    [
        # logind's Manager at another interface (a session's) or another object.
        (("/org/freedesktop/login1", "org.freedesktop.login1.Session"), "Reboot", "b", (False,),
         "UnknownMethod"),
        (("/org/freedesktop/login1/nowhere", "org.freedesktop.login1.Manager"), "Reboot", "b", (False,),
         "UnknownObject"),
        # The right method with arguments of another shape.
        (("/org/freedesktop/login1", "org.freedesktop.login1.Manager"), "Reboot", "", (), "InvalidArgs"),
        (("/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager"), "MaskUnitFiles", "asb",
         (["a.service"], False), "InvalidArgs"),
        (("/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager"), "RestartUnit", "s",
         ("a.service",), "InvalidArgs"),
    ],
)  # fmt: skip
def test_the_stand_ins_refuse_what_logind_and_systemd_refuse(
    host_bus: HostBus,
    address: tuple[str, str],
    member: str,
    signature: str,
    body: tuple[object, ...],
    error: str,
) -> None:
    path, interface = address
    bus_name = "org.freedesktop.login1" if "login1" in path else "org.freedesktop.systemd1"
    call = new_method_call(DBusAddress(path, bus_name=bus_name, interface=interface), member, signature, body)
    with open_dbus_connection(bus=host_bus.address) as connection:
        reply = connection.send_and_get_reply(call, timeout=5)
    assert reply.header.message_type == MessageType.error
    assert reply.header.fields[HeaderFields.error_name] == f"org.freedesktop.DBus.Error.{error}"
    assert host_bus.services.calls == [], "nothing was done"
    dbus.reboot()  # and the stand-ins still answer
    assert host_bus.services.members() == ["Reboot"]
