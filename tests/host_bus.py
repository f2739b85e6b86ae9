"""A private system bus with small stand-ins for logind and systemd that record their calls.

A real `dbus-daemon` listens on a socket in the test data dir; one thread owns
`org.freedesktop.login1` and `org.freedesktop.systemd1` on it and answers the methods the
supervisor uses (Reboot, PowerOff, RestartUnit, StartUnit, StopUnit, GetUnit, LoadUnit,
MaskUnitFiles, UnmaskUnitFiles, Reload, Properties.Get of ActiveState and PartOf).
Nothing here reboots anything.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jeepney import DBus, HeaderFields, Message, MessageType, new_error, new_method_return
from jeepney.io.blocking import DBusConnection, open_dbus_connection

BUS_CONFIG = """<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default"><allow send_destination="*"/><allow own="*"/><allow eavesdrop="true"/></policy>
</busconfig>
"""
UNIT_PATH_PREFIX = "/org/freedesktop/systemd1/unit/"
NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"
UNIT_MASKED = "org.freedesktop.systemd1.UnitMasked"


@dataclass(frozen=True)
class BusCall:
    at: float
    """time.time() when the call arrived."""
    member: str
    args: tuple[Any, ...]


@dataclass
class HostServices:
    """What the stand-ins know: unit states and PartOf, and every call received."""

    unit_states: dict[str, str] = field(default_factory=dict)
    unit_part_of: dict[str, list[str]] = field(default_factory=dict)
    missing_units: set[str] = field(default_factory=set)
    """Units this host does not have: systemd answers NoSuchUnit to a job on them."""
    masked_units: set[str] = field(default_factory=set)
    """Masked unit files: systemd refuses to start them (UnitMasked)."""
    calls: list[BusCall] = field(default_factory=list)

    def members(self) -> list[str]:
        return [call.member for call in self.calls]

    def answer(self, message: Message) -> Message:
        member = str(message.header.fields.get(HeaderFields.member))
        path = str(message.header.fields.get(HeaderFields.path))
        args = tuple(message.body)
        if (refusal := _refusal(message)) is not None:
            return refusal
        self.calls.append(BusCall(time.time(), member, args))
        if member in ("Reboot", "PowerOff"):
            return new_method_return(message)
        if member in ("RestartUnit", "StartUnit", "StopUnit"):
            unit = str(args[0])
            if unit in self.missing_units:
                return new_error(message, NO_SUCH_UNIT, "s", (f"Unit {unit} not found.",))
            if unit in self.masked_units and member != "StopUnit":
                return new_error(message, UNIT_MASKED, "s", (f"Unit {unit} is masked.",))
            self.unit_states[unit] = "inactive" if member == "StopUnit" else "active"
            return new_method_return(message, "o", (f"/org/freedesktop/systemd1/job/{len(self.calls)}",))
        if member in ("MaskUnitFiles", "UnmaskUnitFiles"):
            units = [str(unit) for unit in args[0]]
            if member == "MaskUnitFiles":
                self.masked_units.update(units)
                changes = [("symlink", f"/etc/systemd/system/{unit}", "/dev/null") for unit in units]
                return new_method_return(message, "a(sss)", (changes,))
            self.masked_units.difference_update(units)
            changes = [("unlink", f"/etc/systemd/system/{unit}", "") for unit in units]
            return new_method_return(message, "a(sss)", (changes,))
        if member == "Reload":
            return new_method_return(message)
        if member in ("GetUnit", "LoadUnit"):
            unit = str(args[0])
            if member == "GetUnit" and unit not in self.unit_states:
                return new_error(message, NO_SUCH_UNIT, "s", (f"Unit {unit} not loaded.",))
            return new_method_return(message, "o", (UNIT_PATH_PREFIX + _escape(unit),))
        if member == "Get" and path.startswith(UNIT_PATH_PREFIX):
            unit = _unescape(path[len(UNIT_PATH_PREFIX) :])
            if args[1] == "ActiveState":
                return new_method_return(message, "v", (("s", self.unit_states.get(unit, "inactive")),))
            if args[1] == "PartOf":
                return new_method_return(message, "v", (("as", self.unit_part_of.get(unit, [])),))
        return new_error(message, "org.freedesktop.DBus.Error.UnknownMethod", "s", (f"no {member}",))


LOGIND = ("org.freedesktop.login1", "/org/freedesktop/login1", "org.freedesktop.login1.Manager")
SYSTEMD = ("org.freedesktop.systemd1", "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager")
PROPERTIES = "org.freedesktop.DBus.Properties"
# What the real logind and systemd declare, (destination, object path, interface, member) →
# the signature of the arguments (org.freedesktop.login1(5), org.freedesktop.systemd1(5)).
METHODS = {
    (*LOGIND, "Reboot"): "b",
    (*LOGIND, "PowerOff"): "b",
    **{(*SYSTEMD, member): "ss" for member in ("RestartUnit", "StartUnit", "StopUnit")},
    (*SYSTEMD, "MaskUnitFiles"): "asbb",
    (*SYSTEMD, "UnmaskUnitFiles"): "asb",
    (*SYSTEMD, "Reload"): "",
    (*SYSTEMD, "GetUnit"): "s",
    (*SYSTEMD, "LoadUnit"): "s",
}
UNIT_INTERFACE = "org.freedesktop.systemd1.Unit"


def _refusal(message: Message) -> Message | None:
    """The error the real daemons answer a call to a method they do not have at that object
    and interface, or with arguments of another signature; None for a call they take."""
    fields = message.header.fields
    destination, path = fields.get(HeaderFields.destination), str(fields.get(HeaderFields.path))
    interface, member = fields.get(HeaderFields.interface), fields.get(HeaderFields.member)
    signature = fields.get(HeaderFields.signature, "")
    if (
        interface == PROPERTIES
        and member == "Get"
        and destination == SYSTEMD[0]
        and path.startswith(UNIT_PATH_PREFIX)
    ):
        expected: str | None = "ss"
        if signature == "ss" and message.body[0] != UNIT_INTERFACE:
            return new_error(message, "org.freedesktop.DBus.Error.UnknownInterface", "s",
                             (f"Unknown interface {message.body[0]}.",))  # fmt: skip
    else:
        expected = METHODS.get((destination, path, interface, member))
    if path not in (LOGIND[1], SYSTEMD[1]) and not path.startswith(UNIT_PATH_PREFIX):
        return new_error(
            message, "org.freedesktop.DBus.Error.UnknownObject", "s", (f"Unknown object '{path}'.",)
        )
    if expected is None:
        return new_error(message, "org.freedesktop.DBus.Error.UnknownMethod", "s",
                         (f"Unknown method {member} or interface {interface} at {path}.",))  # fmt: skip
    if signature != expected:
        problem = f"Invalid arguments '{signature}' to call {interface}.{member}(), expecting '{expected}'."
        return new_error(message, "org.freedesktop.DBus.Error.InvalidArgs", "s", (problem,))
    return None


class HostBus:
    """The private bus daemon plus the stand-in services' thread."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.address = f"unix:path={socket_path}"
        self.services = HostServices()
        self._daemon: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        config = self.socket_path.parent / "bus.conf"
        config.write_text(BUS_CONFIG.format(socket=self.socket_path))
        self._daemon = subprocess.Popen(["dbus-daemon", "--nofork", f"--config-file={config}"])
        deadline = time.monotonic() + 10
        while not self.socket_path.exists():
            assert self._daemon.poll() is None, "dbus-daemon exited"
            assert time.monotonic() < deadline, "dbus-daemon did not create its socket"
            time.sleep(0.02)
        self._thread = threading.Thread(target=self._serve, name="host-bus-services", daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the stand-in services did not get their names"

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._daemon is not None:
            self._daemon.terminate()
            self._daemon.wait(5)

    def reset(self) -> None:
        self.services.calls.clear()
        self.services.unit_states.clear()
        self.services.unit_part_of.clear()
        self.services.missing_units.clear()
        self.services.masked_units.clear()

    def _serve(self) -> None:
        with open_dbus_connection(bus=self.address) as connection:
            for name in ("org.freedesktop.login1", "org.freedesktop.systemd1"):
                _request_name(connection, name)
            self._ready.set()
            while not self._stopping.is_set():
                try:
                    message = connection.receive(timeout=0.2)
                except TimeoutError:
                    continue
                if message.header.message_type == MessageType.method_call:
                    try:
                        reply = self.services.answer(message)
                    except Exception as exc:  # a malformed call must not end the stand-ins
                        reply = new_error(message, "org.freedesktop.DBus.Error.Failed", "s", (repr(exc),))
                    connection.send(reply)


def _request_name(connection: DBusConnection, name: str) -> None:
    reply = connection.send_and_get_reply(DBus().RequestName(name), timeout=5)
    assert reply.body == (1,), f"could not own {name}: {reply.body}"


def _escape(unit: str) -> str:
    """systemd's object path escaping: every byte outside [A-Za-z0-9] becomes _xx."""
    return "".join(c if c.isascii() and c.isalnum() else f"_{ord(c):02x}" for c in unit)


def _unescape(escaped: str) -> str:
    out, index = [], 0
    while index < len(escaped):
        if escaped[index] == "_":
            out.append(chr(int(escaped[index + 1 : index + 3], 16)))
            index += 3
        else:
            out.append(escaped[index])
            index += 1
    return "".join(out)
