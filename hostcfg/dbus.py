"""The only module that speaks D-Bus: logind (reboot, power off) and systemd (units).

Every call opens its own short connection to the system bus at `SUPERVISOR_DBUS_ADDRESS`
(or the address given): these calls are rare, and a connection kept open would have to
survive the bus restarting under it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from jeepney import DBus, DBusAddress, DBusErrorResponse, Message, MessageType, Properties, new_method_call
from jeepney.io.blocking import open_dbus_connection

CALL_TIMEOUT_SECONDS = 10.0

LOGIND = DBusAddress(
    "/org/freedesktop/login1", bus_name="org.freedesktop.login1", interface="org.freedesktop.login1.Manager"
)
SYSTEMD = DBusAddress(
    "/org/freedesktop/systemd1",
    bus_name="org.freedesktop.systemd1",
    interface="org.freedesktop.systemd1.Manager",
)
UNIT_INTERFACE = "org.freedesktop.systemd1.Unit"
NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"


class HostBusError(Exception):
    """The bus cannot be reached, or the service answered with a D-Bus error.

    `name` is the D-Bus error name (e.g. `org.freedesktop.systemd1.NoSuchUnit`) when the
    service answered, else None.
    """

    def __init__(self, message: str, *, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


def default_bus_address() -> str:
    return str(settings.SUPERVISOR_DBUS_ADDRESS)


def reboot(*, bus_address: str | None = None) -> None:
    """Ask logind to reboot the host now (`Reboot(false)`: no interactive authorisation)."""
    _call(new_method_call(LOGIND, "Reboot", "b", (False,)), bus_address)


def power_off(*, bus_address: str | None = None) -> None:
    """Ask logind to power the host off now (`PowerOff(false)`)."""
    _call(new_method_call(LOGIND, "PowerOff", "b", (False,)), bus_address)


def logind_available(*, bus_address: str | None = None) -> bool:
    """Whether something owns logind's name on the bus (raises HostBusError if no bus)."""
    (has_owner,) = _call(DBus().NameHasOwner(LOGIND.bus_name), bus_address)
    return bool(has_owner)


def restart_unit(name: str, *, bus_address: str | None = None) -> None:
    """Queue a restart of a systemd unit (mode `fail`: refused if it conflicts with a queued job)."""
    _call(new_method_call(SYSTEMD, "RestartUnit", "ss", (name, "fail")), bus_address)


def start_unit(name: str, *, bus_address: str | None = None) -> None:
    _call(new_method_call(SYSTEMD, "StartUnit", "ss", (name, "fail")), bus_address)


def stop_unit(name: str, *, bus_address: str | None = None) -> None:
    _call(new_method_call(SYSTEMD, "StopUnit", "ss", (name, "fail")), bus_address)


def mask_unit_files(names: list[str], *, bus_address: str | None = None) -> None:
    """Mask units persistently (`MaskUnitFiles(names, runtime=false, force=true)`): they
    cannot be started, by hand or by socket activation, until unmasked; call
    `reload_systemd` after."""
    _call(new_method_call(SYSTEMD, "MaskUnitFiles", "asbb", (names, False, True)), bus_address)


def unmask_unit_files(names: list[str], *, bus_address: str | None = None) -> None:
    """Undo `mask_unit_files` (`UnmaskUnitFiles(names, runtime=false)`); call `reload_systemd` after."""
    _call(new_method_call(SYSTEMD, "UnmaskUnitFiles", "asb", (names, False)), bus_address)


def reload_systemd(*, bus_address: str | None = None) -> None:
    """`systemctl daemon-reload`: systemd reads the unit files again (after a mask or unmask)."""
    _call(new_method_call(SYSTEMD, "Reload"), bus_address)


def unit_active_state(name: str, *, bus_address: str | None = None) -> str | None:
    """The unit's ActiveState (`active`, `inactive`, `failed`, …); None when it is not loaded."""
    try:
        (unit_path,) = _call(new_method_call(SYSTEMD, "GetUnit", "s", (name,)), bus_address)
    except HostBusError as exc:
        if exc.name == NO_SUCH_UNIT:
            return None
        raise
    return str(_unit_property(unit_path, "ActiveState", bus_address))


def unit_part_of(name: str, *, bus_address: str | None = None) -> list[str]:
    """The units this unit is PartOf (LoadUnit: also answers for units not started yet)."""
    (unit_path,) = _call(new_method_call(SYSTEMD, "LoadUnit", "s", (name,)), bus_address)
    return [str(unit) for unit in _unit_property(unit_path, "PartOf", bus_address)]


def _unit_property(unit_path: str, name: str, bus_address: str | None) -> Any:
    unit = DBusAddress(unit_path, bus_name=SYSTEMD.bus_name, interface=UNIT_INTERFACE)
    ((_signature, value),) = _call(Properties(unit).get(name), bus_address)
    return value


def _call(message: Message, bus_address: str | None) -> tuple[Any, ...]:
    address = bus_address or default_bus_address()
    try:
        with open_dbus_connection(bus=address) as connection:
            reply = connection.send_and_get_reply(message, timeout=CALL_TIMEOUT_SECONDS)
    except (OSError, ValueError, TimeoutError) as exc:
        raise HostBusError(f"D-Bus at {address} cannot be reached: {exc}") from exc
    if reply.header.message_type == MessageType.error:
        error = DBusErrorResponse(reply)
        raise HostBusError(f"{error.name}: {' '.join(map(str, error.data))}".rstrip(), name=error.name)
    return tuple(reply.body)
