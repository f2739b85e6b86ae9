"""Compose values against what the original supervisor (balena-os/balena-supervisor v19)
does with them, field by field: read as it reads them, replaced by its default (or left
out) with a warning naming the field, or refused where its apply or the engine fails on
them (a refusal rejects that app's release, the cloud told: test_documents.py,
test_cloud_releases.py).

Upstream files: src/compose/service.ts (fromComposeObject), utils.ts (parseMemoryNumber,
getHealthcheck, createRestartPolicy, getStopSignal), sanitise.ts (the allow-list),
ports.ts (PortMap), lib/validation.ts (checkInt).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest

from apps_api.engine.state import InvalidTargetState
from apps_api.target.compose import AppDeclarations, normalise_compose_fields

APP = AppDeclarations(
    services=frozenset({"main", "db"}), networks=frozenset({"backend"}), volumes=frozenset({"data"})
)
PATH = "uuid.apps.app.releases.c0ffee.services.main.composition"
MB = 1024**2


@dataclass(frozen=True)
class Read:
    """Taken as given: this normalised value, no warning."""

    value: Any


@dataclass(frozen=True)
class Fallback:
    """A warning naming the field, and this value in its place (None: left out)."""

    value: Any
    warning: str


@dataclass(frozen=True)
class Refused:
    """InvalidTargetState at this field, the problem containing `word`."""

    word: str


ABSENT = None


def volume(source: str, target: str, *, read_only: bool = False) -> dict[str, Any]:
    return {"type": "volume", "source": source, "target": target, "read_only": read_only}


def tcp(container: int, host: int | None = None) -> dict[str, Any]:
    return {"container_port": container, "protocol": "tcp", "host_ip": "", "host_port": host}


TABLE = [
    # parseMemoryNumber: [0-9]+ and an optional b/k/m/g unit, an optional trailing b, any
    # case; an unreadable size is the default (0, no limit; shm_size 64m, the engine's own).
    ("mem_limit", "512m", Read(512 * MB)),
    ("mem_limit", "512MB", Read(512 * MB)),
    ("mem_limit", "1gb", Read(1024 * MB)),
    ("mem_limit", 268435456, Read(268435456)),
    ("mem_limit", "lots", Fallback(0, "invalid memory size")),
    ("mem_reservation", "-5m", Fallback(0, "invalid memory size")),
    ("shm_size", "huge", Fallback(0, "invalid memory size")),
    # The original reads no decimals and gives 1.5g no limit; docker-compose reads 1.5 GiB,
    # which is what the release's author wrote: read as docker-compose does.
    ("mem_limit", "1.5g", Read(1536 * MB)),
    # service.ts: cpus a number of CPUs, NaN → no limit with a warning; a negative number
    # is passed on and the engine refuses it.
    ("cpus", 0.5, Read(500_000_000)),
    ("cpus", "2", Read(2_000_000_000)),
    ("cpus", "half", Fallback(0, "invalid cpus")),
    ("cpus", -1, Refused("negative")),
    # lib/validation.ts checkInt: "512", "512.0"; anything else is the default (0).
    ("cpu_shares", 512, Read(512)),
    ("cpu_shares", "512.0", Read(512)),
    ("cpu_shares", "many", Fallback(0, "not an integer")),
    ("cpu_quota", 1.5, Fallback(0, "not an integer")),
    ("oom_score_adj", -500, Read(-500)),
    # utils.ts createRestartPolicy: trimmed and lower-cased; an unknown policy is `always`,
    # a non-string one too, with a warning.
    ("restart", " Unless-Stopped ", Read("unless-stopped")),
    ("restart", "on-failure:3", Read("always")),
    ("restart", 5, Fallback("always", "not a string")),
    # service.ts: Boolean(x) for read_only, oom_kill_disable, tty, init; privileged is
    # passed on as it is, and the engine refuses what is not a boolean.
    ("read_only", "true", Read(True)),
    ("read_only", "yes", Fallback(True, "not a boolean")),
    ("tty", 0, Fallback(False, "not a boolean")),
    ("init", False, Read(False)),
    ("privileged", "yes", Refused("boolean")),
    # utils.ts: a string command is split as a shell would; an unclosed quote runs to the end.
    ("command", "echo 'hi there'", Read(["echo", "hi there"])),
    ("command", "echo 'hi", Read(["echo", "hi"])),
    ("entrypoint", ["/bin/sh", "-c"], Read(["/bin/sh", "-c"])),
    # ports.ts: a definition it cannot parse (another protocol, ranges of different sizes)
    # throws, and the apply fails.
    ("ports", ["8080:80"], Read([tcp(80, 8080)])),
    ("ports", [80], Read([tcp(80)])),
    ("ports", ["80:80/sctp"], Refused("protocol")),
    ("ports", ["80-81:80"], Refused("differ")),
    ("ports", ["http"], Refused("invalid port")),
    # service.ts extendAndSanitiseVolumes: the mode is passed to the engine as written; a
    # bind mount, or a definition it cannot read, is left out with a warning; long syntax
    # of another type than volume/tmpfs/bind is left out.
    ("volumes", ["data:/data:z"], Read([volume("data", "/data")])),
    ("volumes", ["data:/data:ro,cached"], Read([volume("data", "/data", read_only=True)])),
    ("volumes", ["/etc:/host-etc"], Fallback([], "bind mounts are not supported")),
    ("volumes", [{"type": "npipe", "target": "/x"}], Fallback([], "unsupported type")),
    ("volumes", [5], Fallback([], "invalid volume definition")),
    ("volumes", ["data:/data:bogus"], Refused("mode")),  # the engine refuses the mode
    # docker-compose and the balena CLI refuse an undeclared named volume at build time, so
    # a real release never has one; the original would let the engine create it unmanaged.
    ("volumes", ["nosuch:/x"], Refused("unknown volume")),
    # service.ts: a non-object `networks` is no networks; an undeclared one fails at create.
    ("networks", ["backend"], Read({"backend": {"aliases": []}})),
    ("networks", "backend", Fallback({}, "expected a list or an object")),
    ("networks", ["lan"], Refused("unknown network")),
    # service.ts: container: network modes are not supported (warned, ignored); a service:
    # mode naming no service fails at create, as does an undeclared network.
    ("network_mode", "host", Read("host")),
    ("network_mode", "container:abc", Fallback(ABSENT, "unsupported network_mode")),
    ("network_mode", "service:nosuch", Refused("unknown service")),
    ("network_mode", "lan", Refused("unknown network")),
    # utils.ts getHealthcheck / service.ts stop_grace_period: Go durations; an unreadable one
    # throws, and the apply fails.
    ("healthcheck", {"test": "true", "interval": "1m30s"},
     Read({"test": ["CMD-SHELL", "true"], "interval": 90 * 10**9})),
    ("healthcheck", {"test": "true", "interval": "soon"}, Refused("duration")),
    ("stop_grace_period", "1m", Read(60)),
    ("stop_grace_period", "soon", Refused("duration")),
    # service.ts: SELinux label= security options are left out with a warning.
    ("security_opt", ["label=disable", "no-new-privileges"],
     Fallback(["no-new-privileges"], "security options")),
    # Passed on as written (the engine takes them): sysctls as strings, extra hosts host:ip.
    ("sysctls", {"net.core.somaxconn": 1024}, Read({"net.core.somaxconn": "1024"})),
    ("extra_hosts", ["printer:10.0.0.9"], Read(["printer:10.0.0.9"])),
    ("extra_hosts", {"printer": "10.0.0.9"}, Read(["printer:10.0.0.9"])),
    # sanitise.ts: fields off the allow-list are left out with one warning (expose since v15).
    ("expose", ["80"], Fallback(ABSENT, "unsupported or unknown compose fields")),
    ("logging", {"driver": "none"}, Fallback(ABSENT, "unsupported or unknown compose fields")),
    ("build", "./", Fallback(ABSENT, "unsupported or unknown compose fields")),
]  # fmt: skip


@pytest.mark.parametrize(("field", "value", "outcome"), TABLE, ids=[f"{f}={v!r}" for f, v, _ in TABLE])
def test_a_compose_value_is_read_replaced_or_refused_as_the_original_does(
    field: str, value: Any, outcome: Read | Fallback | Refused, caplog: pytest.LogCaptureFixture
) -> None:
    if isinstance(outcome, Refused):
        with pytest.raises(InvalidTargetState) as raised:
            normalise_compose_fields({field: value}, path=PATH, app=APP)
        assert raised.value.path.startswith(f"{PATH}.{field}")
        assert outcome.word in raised.value.problem
        return
    with caplog.at_level(logging.WARNING, logger="apps_api.target.compose"):
        composition = normalise_compose_fields({field: value}, path=PATH, app=APP).composition
    if isinstance(outcome, Read):
        assert composition[field] == outcome.value
        assert not caplog.records
        return
    assert composition.get(field) == outcome.value
    [warning] = caplog.records
    assert outcome.warning in warning.getMessage()
    assert PATH in warning.getMessage(), "the warning names the release, service and field"


@pytest.mark.parametrize(
    ("value", "kept"), [(["db"], ("db",)), (["db", "nosuch"], ("db",)), ({"nosuch": {}}, ())]
)
def test_a_dependency_on_no_such_service_is_left_out_with_a_warning(
    value: Any, kept: tuple[str, ...], caplog: pytest.LogCaptureFixture
) -> None:
    """app.ts dependenciesMetForServiceStart: the original waits for no such service."""
    with caplog.at_level(logging.WARNING, logger="apps_api.target.compose"):
        fields = normalise_compose_fields({"depends_on": value}, path=PATH, app=APP)
    assert fields.depends_on == kept
    assert ("unknown service 'nosuch'" in caplog.text) == ("nosuch" in value)
