"""Compose service fields of a target, validated and normalised into `ServiceSpec.composition`.

As tolerant as the original supervisor, no more: a value it reads is read; a value it cannot
read and replaces with a default (or leaves out) is replaced the same way, with a warning
naming where it was; a value that makes its apply or the engine fail (a port it cannot
parse, an unknown network) is an `InvalidTargetState` naming the path the user wrote
(target/json_shape.py). tests/unit/target/test_compose_tolerance.py holds the table.
Pure: no Django, no docker.
"""

from __future__ import annotations

import logging
import math
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from apps_api.engine.state import BUILTIN_NETWORK_MODES, DEFAULT_NETWORK, InvalidTargetState
from apps_api.target.json_shape import (
    expect_flag,
    expect_int,
    expect_list,
    expect_name,
    expect_object,
    expect_string,
    expect_text,
    join_path,
    optional,
    string_list,
    variables_from,
)

logger = logging.getLogger(__name__)

RESTART_POLICIES = frozenset({"no", "always", "on-failure", "unless-stopped"})


# --- compose fields --------------------------------------------------------------------


@dataclass(frozen=True)
class AppDeclarations:
    """What the service's app declares, for checking references made by its fields."""

    services: frozenset[str]
    networks: frozenset[str]
    volumes: frozenset[str]


@dataclass(frozen=True)
class ComposeFields:
    composition: dict[str, Any]
    environment: dict[str, str]
    labels: dict[str, str]
    depends_on: tuple[str, ...]
    """Sorted, deduplicated; includes the service named by `network_mode: service:<name>`."""


def normalise_compose_fields(fields: dict[str, Any], *, path: str, app: AppDeclarations) -> ComposeFields:
    """Validate and normalise a service's compose fields (snake_case, or camelCase aliases)
    found at `path`, into the shapes documented on `ServiceSpec.composition`.

    `environment` and `labels` are returned apart (callers merge them with the service's
    own); `image` and `running` are the caller's business and dropped here; null values
    count as absent; unsupported fields are logged and dropped. Raises InvalidTargetState.
    """
    composition: dict[str, Any] = {}
    environment: dict[str, str] = {}
    labels: dict[str, str] = {}
    depends_on: set[str] = set()
    ignored: list[str] = []
    for key, value in fields.items():
        name = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower()
        at = join_path(path, key)
        if value is None or name in {"image", "running"}:
            continue
        if name == "environment":
            environment = variables_from(value, at, kind="environment", allow_list=True)
        elif name == "labels":
            labels = variables_from(value, at, kind="labels", allow_list=True)
        elif name == "depends_on":
            depends_on.update(_depends_on(value, at, app))
        elif name == "network_mode":
            mode = _network_mode(value, at, app)
            if mode is not None:
                composition[name] = mode
                if mode.startswith("service:"):
                    depends_on.add(mode.removeprefix("service:"))
        elif name == "networks":
            composition[name] = _networks(value, at, app)
        elif name == "volumes":
            composition[name] = _mounts(value, at, app)
        elif name in _NORMALISERS:
            composition[name] = _NORMALISERS[name](value, at)
        else:
            ignored.append(key)
    if ignored:
        logger.warning("Ignoring unsupported or unknown compose fields at %s: %s", path, ", ".join(ignored))
    composition.setdefault("restart", "always")
    return ComposeFields(composition, environment, labels, tuple(sorted(depends_on)))


def _restart(value: object, path: str) -> str:
    """An unknown policy (`on-failure:3` included) is `always`, as the original reads it."""
    if not isinstance(value, str):
        logger.warning("Ignoring restart policy %r at %s: not a string; 'always' is used", value, path)
        return "always"
    policy = value.strip().lower()
    return policy if policy in RESTART_POLICIES else "always"


def _depends_on(value: object, path: str, app: AppDeclarations) -> list[str]:
    if isinstance(value, dict):
        entries = [(name, join_path(path, name)) for name in value]
    else:
        entries = [(name, join_path(path, i)) for i, name in enumerate(expect_list(value, path))]
    known = []
    for name, at in entries:
        if expect_text(name, at) in app.services:
            known.append(name)
        else:  # the original waits for no such service either
            logger.warning("Ignoring dependency on unknown service '%s' at %s", name, at)
    return known


def _network_mode(value: object, path: str, app: AppDeclarations) -> str | None:
    mode = expect_string(value, path, non_empty=True)
    if mode in BUILTIN_NETWORK_MODES:
        return mode
    if mode.startswith("service:"):
        service = mode.removeprefix("service:")
        if service not in app.services:
            raise InvalidTargetState(path, f"network mode names unknown service '{service}'")
        return mode
    if mode.startswith("container:"):
        logger.warning("Ignoring unsupported network_mode '%s' at %s", mode, path)
        return None
    _check_network(mode, path, app)
    return mode


def _check_network(name: object, path: str, app: AppDeclarations) -> str:
    network = expect_name(name, path, "network name")
    if network != DEFAULT_NETWORK and network not in app.networks:
        raise InvalidTargetState(path, f"unknown network '{network}': not declared by the app")
    return network


def _networks(value: object, path: str, app: AppDeclarations) -> dict[str, dict[str, Any]]:
    if not isinstance(value, list | dict):
        logger.warning("Ignoring networks %r at %s: expected a list or an object", value, path)
        return {}
    if isinstance(value, list):
        return {
            _check_network(name, join_path(path, i), app): {"aliases": []} for i, name in enumerate(value)
        }
    result: dict[str, dict[str, Any]] = {}
    for name, settings in expect_object(value, path).items():
        at = join_path(path, name)
        entry: dict[str, Any] = {"aliases": []}
        if settings is not None:
            settings = expect_object(settings, at)
            if settings.get("aliases") is not None:
                entry["aliases"] = string_list(settings["aliases"], join_path(at, "aliases"))
            for address in ("ipv4_address", "ipv6_address"):
                if settings.get(address) is not None:
                    entry[address] = expect_string(settings[address], join_path(at, address))
            if settings.get("link_local_ips") is not None:
                entry["link_local_ips"] = string_list(
                    settings["link_local_ips"], join_path(at, "link_local_ips")
                )
        result[_check_network(name, at, app)] = entry
    return result


def _command(value: object, path: str) -> list[str]:
    """A list as it is, or a command line split as a shell would; a quote left open runs to
    the end of the line, as the original's parser takes it."""
    if not isinstance(value, str):
        return string_list(value, path)
    for closing in ("", '"', "'"):
        try:
            return shlex.split(value + closing)
        except ValueError:
            continue
    raise InvalidTargetState(path, "cannot be parsed as a command line")


def _memory(value: object, path: str) -> int:
    """Bytes, from a number or a size as docker-compose reads it ("512m", "1.5g", "1gb").

    A size that cannot be read is 0, the engine's default (no limit; 64 MB of /dev/shm), as
    the original falls back to its default: a warning names where it was, and the release
    still runs."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, float) and math.isfinite(value) and value >= 0:
        return int(value)
    pattern = r"([0-9]+(?:\.[0-9]+)?)\s*([bkmg]?)b?"
    match = re.fullmatch(pattern, value.strip(), re.IGNORECASE) if isinstance(value, str) else None
    if match is None:
        logger.warning("Ignoring invalid memory size %r at %s: the default is used", value, path)
        return 0
    exponent = "bkmg".index(match[2].lower() or "b")
    return int(Decimal(match[1]) * 1024**exponent)


def _number(value: object, path: str, problem: str) -> Decimal:
    """A non-negative finite number, given as a JSON number or a decimal string."""
    if isinstance(value, str) and re.fullmatch(r"[0-9]+(\.[0-9]+)?", value):
        return Decimal(value)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return Decimal(str(value))
    raise InvalidTargetState(path, problem)


def _cpus(value: object, path: str) -> int:
    """Kept under `cpus` but as Docker's NanoCpus. What is not a number at all is no limit
    (0), as the original reads it; a negative number is refused, as the engine refuses it."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
        raise InvalidTargetState(path, f"invalid cpus {value!r}: must not be negative")
    try:
        return int(_number(value, path, "not a number") * 10**9)
    except InvalidTargetState:
        logger.warning("Ignoring invalid cpus %r at %s: no limit is set", value, path)
        return 0


def _int_or_default(value: object, path: str) -> int:
    """cpu_shares, cpu_quota, oom_score_adj: an integer (`512`, "512", "512.0"); anything
    else is the engine's default (0), with a warning, as the original reads them."""
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,18}\.?0*", value):
        return int(value.partition(".")[0])
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    logger.warning("Ignoring %r at %s: not an integer; the default is used", value, path)
    return 0


def _flag(value: object, path: str) -> bool:
    """init, oom_kill_disable, read_only, tty: true/false or "true"/"false"; another value
    counts by its truth, as the original reads it, with a warning."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false"}:
        return value.lower() == "true"
    logger.warning("Reading %r at %s as %s: not a boolean", value, path, "true" if value else "false")
    return bool(value)


_DURATION_UNITS_NS = {
    "ns": 1,
    "us": 10**3,
    "µs": 10**3,
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_DURATION_PART = r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)"


def _duration_ns(value: object, path: str) -> int:
    """A Go-style duration ("1m30s", "500ms") or a plain number of seconds, in nanoseconds."""
    problem = f"invalid duration {value!r}"
    if isinstance(value, str) and re.fullmatch(f"(?:{_DURATION_PART})+", value):
        parts = re.findall(_DURATION_PART, value)
        return int(sum(Decimal(number) * _DURATION_UNITS_NS[unit] for number, unit in parts))
    return int(_number(value, path, problem) * 10**9)


def _stop_grace_period(value: object, path: str) -> int:
    return _duration_ns(value, path) // 10**9


def _healthcheck(value: object, path: str) -> dict[str, Any]:
    check = expect_object(value, path)
    if check.get("disable") is not None and expect_flag(check["disable"], join_path(path, "disable")):
        return {"test": ["NONE"]}
    result: dict[str, Any] = {}
    for key, given in check.items():
        at = join_path(path, key)
        if given is None:
            continue
        if key == "test":
            result["test"] = ["CMD-SHELL", given] if isinstance(given, str) else string_list(given, at)
        elif key in {"interval", "timeout", "start_period", "start_interval"}:
            result[key] = _duration_ns(given, at)
        elif key == "retries":
            result[key] = expect_int(given, at, minimum=0)
    return result


def _port_range(text: str, path: str) -> list[int]:
    match = re.fullmatch(r"([0-9]{1,5})(?:-([0-9]{1,5}))?", text)
    if match is None:
        raise InvalidTargetState(path, f"invalid port '{text}'")
    first, last = int(match[1]), int(match[2] or match[1])
    if not 1 <= first <= last <= 65535:
        raise InvalidTargetState(path, f"invalid port '{text}': ports are 1-65535")
    return list(range(first, last + 1))


def _port_bindings(
    host_ip: str, host: str | None, container: str, protocol: str, path: str
) -> list[dict[str, Any]]:
    if protocol.lower() not in {"tcp", "udp"}:
        raise InvalidTargetState(path, f"invalid port protocol '{protocol}'")
    container_ports = _port_range(container, path)
    host_ports: list[int | None] = [None] * len(container_ports)
    if host:
        host_ports = list(_port_range(host, path))
        if len(host_ports) != len(container_ports):
            raise InvalidTargetState(path, "port ranges differ in length")
    return [
        {"container_port": port, "protocol": protocol.lower(), "host_ip": host_ip, "host_port": published}
        for port, published in zip(container_ports, host_ports, strict=True)
    ]


def _short_port(entry: str, path: str) -> list[dict[str, Any]]:
    """[[host_ip:]host_port[-end]:]container_port[-end][/protocol]; IPv6 hosts in brackets."""
    spec, _, protocol = entry.partition("/")
    if spec.startswith("["):
        host_ip, bracket, rest = spec[1:].partition("]:")
        published, colon, container = rest.partition(":")
        if not (bracket and colon):
            raise InvalidTargetState(path, f"invalid port '{entry}'")
        return _port_bindings(host_ip, published, container, protocol or "tcp", path)
    parts = spec.split(":")
    if len(parts) > 3:
        raise InvalidTargetState(path, f"invalid port '{entry}'")
    host_ip = parts[0] if len(parts) == 3 else ""
    host = parts[-2] if len(parts) >= 2 else None
    return _port_bindings(host_ip, host, parts[-1], protocol or "tcp", path)


def _ports(value: object, path: str) -> list[dict[str, Any]]:
    bindings: list[dict[str, Any]] = []
    for index, entry in enumerate(expect_list(value, path)):
        at = join_path(path, index)
        if isinstance(entry, int) and not isinstance(entry, bool):
            bindings += _port_bindings("", None, str(entry), "tcp", at)
        elif isinstance(entry, str):
            bindings += _short_port(entry, at)
        elif isinstance(entry, dict):
            if entry.get("target") is None:
                raise InvalidTargetState(join_path(at, "target"), "is required")
            target = str(expect_int(entry["target"], join_path(at, "target")))
            published = entry.get("published")
            if published is not None:
                published = str(published) if isinstance(published, int) else published
                published = expect_string(published, join_path(at, "published"))
            host_ip = expect_string(optional(entry, "host_ip", ""), join_path(at, "host_ip"))
            protocol = expect_string(optional(entry, "protocol", "tcp"), join_path(at, "protocol"))
            bindings += _port_bindings(host_ip, published, target, protocol, at)
        else:
            raise InvalidTargetState(at, "expected a port (number, string or object)")
    return bindings


def _mount(
    kind: str, source: str | None, target: str, read_only: bool, path: str, app: AppDeclarations
) -> dict[str, Any] | None:
    """The mount as `ServiceSpec.composition` holds it; None for a bind mount, which is
    left out (the host's files are only reachable through feature labels)."""
    if kind == "bind" or (source is not None and source.startswith(("/", ".", "~"))):
        logger.warning(
            "Ignoring bind mount '%s:%s' at %s: bind mounts are not supported", source, target, path
        )
        return None
    if kind not in {"volume", "tmpfs"}:
        logger.warning("Ignoring volume of unsupported type '%s' at %s", kind, path)
        return None
    if not target.startswith("/"):
        raise InvalidTargetState(path, f"invalid mount target '{target}': expected an absolute path")
    if kind == "tmpfs":
        source = None
    elif source is not None and expect_name(source, path, "volume name") not in app.volumes:
        raise InvalidTargetState(path, f"unknown volume '{source}': not declared by the app")
    return {"type": kind, "source": source, "target": target, "read_only": read_only}


# What the engine takes after a volume's target, as the original passes it through: read-only
# or not, no copy of the image's files, and the SELinux relabelling and macOS consistency
# modes, which change nothing on a device (no SELinux, Linux's mounts are always consistent).
VOLUME_MODES = frozenset({"ro", "rw", "nocopy", "z", "Z", "consistent", "cached", "delegated"})


def _short_mount(entry: str, path: str, app: AppDeclarations) -> dict[str, Any] | None:
    """`name:/path[:mode]` or an anonymous `/path[:mode]`."""
    parts = entry.split(":")
    if len(parts) == 1:
        source, target, mode = None, parts[0], ""
    elif len(parts) == 2 and parts[0].startswith("/") and parts[1] in {"ro", "rw"}:
        source, target, mode = None, parts[0], parts[1]
    elif len(parts) in {2, 3}:
        source, target, mode = parts[0], parts[1], parts[2] if len(parts) == 3 else ""
    else:
        raise InvalidTargetState(path, f"invalid volume '{entry}'")
    options = mode.split(",") if mode else []
    if not set(options) <= VOLUME_MODES:
        raise InvalidTargetState(path, f"invalid volume mode '{mode}'")
    return _mount("volume", source, target, "ro" in options, path, app)


def _mounts(value: object, path: str, app: AppDeclarations) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = []
    for index, entry in enumerate(expect_list(value, path)):
        at = join_path(path, index)
        mount: dict[str, Any] | None
        if isinstance(entry, str):
            mount = _short_mount(entry, at, app)
        elif not isinstance(entry, dict):
            logger.warning("Ignoring invalid volume definition %r at %s", entry, at)
            mount = None
        else:
            kind = expect_string(optional(entry, "type", "volume"), join_path(at, "type"))
            source = entry.get("source")
            source = None if source is None else expect_text(source, join_path(at, "source"))
            target = expect_text(entry.get("target"), join_path(at, "target"))
            read_only = expect_flag(optional(entry, "read_only", False), join_path(at, "read_only"))
            mount = _mount(kind, source, target, read_only, at, app)
        if mount is not None:
            mounts.append(mount)
    return mounts


def _sysctls(value: object, path: str) -> dict[str, str]:
    result: dict[str, str] = {}
    if isinstance(value, list):
        for index, entry in enumerate(string_list(value, path)):
            key, equals, setting = entry.partition("=")
            if not (key and equals):
                raise InvalidTargetState(
                    join_path(path, index), f"invalid sysctl '{entry}': expected 'name=value'"
                )
            result[key] = setting
        return result
    for key, given in expect_object(value, path).items():
        if isinstance(given, bool) or not isinstance(given, str | int | float):
            raise InvalidTargetState(join_path(path, key), "expected a string or number")
        result[key] = str(given)
    return result


def _extra_hosts(value: object, path: str) -> list[str]:
    if isinstance(value, dict):
        return [f"{host}:{expect_text(ip, join_path(path, host))}" for host, ip in value.items()]
    hosts: list[str] = []
    for index, entry in enumerate(string_list(value, path)):
        match = re.fullmatch(r"([^=:]+)[=:](.+)", entry)
        if match is None:
            raise InvalidTargetState(
                join_path(path, index), f"invalid extra host '{entry}': expected 'host:ip'"
            )
        hosts.append(f"{match[1]}:{match[2]}")
    return hosts


def _security_opt(value: object, path: str) -> list[str]:
    """SELinux `label=` options are left out: a device has no SELinux."""
    options = string_list(value, path)
    if labels := [option for option in options if option.startswith("label=")]:
        logger.warning("Ignoring unsupported security options at %s: %s", path, ", ".join(labels))
    return [option for option in options if not option.startswith("label=")]


def _group_add(value: object, path: str) -> list[str]:
    return [_user(group, join_path(path, i)) for i, group in enumerate(expect_list(value, path))]


def _user(value: object, path: str) -> str:
    return (
        str(value) if isinstance(value, int) and not isinstance(value, bool) else expect_string(value, path)
    )


def _object(value: object, path: str) -> dict[str, Any]:
    return expect_object(value, path)


def _string_or_list(value: object, path: str) -> list[str]:
    return string_list(value, path, single=True)


_STRING_FIELDS = (
    "cgroup_parent",
    "cpuset",
    "domainname",
    "hostname",
    "ipc",
    "mac_address",
    "pid",
    "stop_signal",
    "userns_mode",
    "working_dir",
)
# fields whose value needs nothing but itself; networks, volumes, network_mode and
# depends_on refer to the app and are read in normalise_compose_fields
_NORMALISERS: dict[str, Callable[[Any, str], Any]] = {
    **dict.fromkeys(_STRING_FIELDS, expect_string),
    **dict.fromkeys(["cap_add", "cap_drop", "devices", "dns_opt"], string_list),
    **dict.fromkeys(["dns", "dns_search", "tmpfs"], _string_or_list),
    **dict.fromkeys(["cpu_shares", "cpu_quota", "oom_score_adj"], _int_or_default),
    "pids_limit": expect_int,
    **dict.fromkeys(["init", "oom_kill_disable", "read_only", "tty"], _flag),
    "privileged": expect_flag,
    **dict.fromkeys(["mem_limit", "mem_reservation", "shm_size"], _memory),
    **dict.fromkeys(["command", "entrypoint"], _command),
    **dict.fromkeys(["storage_opt", "ulimits"], _object),
    "cpus": _cpus,
    "extra_hosts": _extra_hosts,
    "group_add": _group_add,
    "healthcheck": _healthcheck,
    "ports": _ports,
    "restart": _restart,
    "security_opt": _security_opt,
    "stop_grace_period": _stop_grace_period,
    "sysctls": _sysctls,
    "user": _user,
}
