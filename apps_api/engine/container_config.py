"""The container, network and volume definitions the executor creates, built purely from
the target (docs/engine.md: injected environment, labels, feature labels, naming).

The same functions give the config hashes the planner compares, so "what would be
created" and "what counts as changed" cannot drift apart.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from apps_api.engine.causes import Cause
from apps_api.engine.locks import service_lock_dir
from apps_api.engine.state import (
    BUILTIN_NETWORK_MODES,
    AppSpec,
    NetworkSpec,
    ServiceSpec,
    VolumeSpec,
)
from hostcfg.device_config import is_truthy

CONFIG_HASH_LABEL = "io.balena.private.config-hash"
# What each part of the config was, digested, so that a later target can name what changed.
CONFIG_PARTS_LABEL = "io.balena.private.config-parts"
PRIVATE_LABELS = (CONFIG_HASH_LABEL, CONFIG_PARTS_LABEL)
LOCK_DIR_IN_CONTAINER = ("/tmp/balena", "/tmp/resin")  # noqa: S108 - container paths, fixed by the contract
# The bridge through which services labelled supervisor-api reach the API
# (docs/engine.md "The supervisor0 network").
SUPERVISOR_NETWORK = "supervisor0"
SUPERVISOR0_SUBNET = "10.114.104.0/25"
SUPERVISOR0_GATEWAY = "10.114.104.1"
DEFAULT_SHM_SIZE = 64 * 1024 * 1024
DEFAULT_STOP_GRACE_SECONDS = 10

# Feature label (after io.balena.features.) → host paths bind-mounted at the same place.
EXTRA_FIRMWARE_VOLUME = "extra-firmware"
"""Supervisor-owned volume the host OS reads extra firmware from (feature extra-firmware)."""
ENDPOINT_ADDRESS_KEYS = ("ipv4_address", "ipv6_address", "link_local_ips")
FEATURE_BINDS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "dbus": (("/run/dbus", "/host/run/dbus", False),),
    "sysfs": (("/sys", "/sys", False),),
    "procfs": (("/proc", "/proc", False),),
    "kernel-modules": (("/lib/modules", "/lib/modules", False),),
    "firmware": (("/lib/firmware", "/lib/firmware", False),),
    "journal-logs": (
        ("/var/log/journal", "/var/log/journal", True),
        ("/run/log/journal", "/run/log/journal", True),
        ("/etc/machine-id", "/etc/machine-id", True),
    ),
}


@dataclass(frozen=True)
class DeviceContext:
    """What the device contributes to every container: identity and paths."""

    uuid: str
    host_root: str
    docker_socket: str = "/var/run/docker.sock"
    device_type: str = "generic-amd64"
    arch: str = "amd64"
    os_version: str = ""
    device_name: str = ""
    api_port: int = 48484
    device_api_key: str = ""
    api_endpoint: str = ""
    registry_endpoint: str = ""
    service_api_keys: dict[str, str] = field(default_factory=dict)
    """`"<appId>/<serviceName>"` → scoped key, for services labelled supervisor-api."""
    missing_host_paths: frozenset[str] = frozenset()
    """Host paths of optional feature binds (/lib/modules, /lib/firmware) this host lacks."""
    os_board_rev: str = ""
    """The host OS build's board revision (os-release `BALENA_BOARD_REV`)."""


@dataclass(frozen=True)
class ContainerConfig:
    name: str
    image: str
    environment: dict[str, str]
    labels: dict[str, str]
    create: dict[str, Any]
    """Keyword arguments of the docker API's create_container besides host_config."""
    host_config: dict[str, Any]
    """Keyword arguments of create_host_config."""
    networks: dict[str, list[str]]
    """Docker network name → aliases; the first is joined at creation."""
    endpoints: dict[str, dict[str, Any]]
    """Docker network name → fixed addresses (`ipv4_address`, `ipv6_address`,
    `link_local_ips`), for the networks that have some."""
    init_environment: dict[str, str]
    """Set at creation only and ignored when comparing (e.g. the device name at init)."""


def container_name(service: ServiceSpec) -> str:
    return f"{service.service_name}_{service.image_id}_{service.release_id}_{service.commit}"


def network_docker_name(app: AppSpec, name: str) -> str:
    return f"{app.app_uuid}_{name}"


def volume_docker_name(app_id: int, name: str) -> str:
    return f"{app_id}_{name}"


def host_lock_dir(device: DeviceContext, app_id: int, service_name: str) -> str:
    return str(service_lock_dir(Path(device.host_root), app_id, service_name))


def feature_enabled(service: ServiceSpec, feature: str) -> bool:
    labels = service.labels
    return is_truthy(labels.get(f"io.balena.features.{feature}", "")) or is_truthy(
        labels.get(f"io.resin.features.{feature.replace('balena', 'resin')}", "")
    )


def _supervisor_environment(app: AppSpec, service: ServiceSpec, device: DeviceContext) -> dict[str, str]:
    values = {
        "APP_ID": str(app.app_id),
        "APP_UUID": app.app_uuid,
        "APP_NAME": app.name,
        "SERVICE_NAME": service.service_name,
        "DEVICE_UUID": device.uuid,
        "DEVICE_TYPE": device.device_type,
        "DEVICE_ARCH": device.arch,
        "HOST_OS_VERSION": device.os_version,
        "APP_LOCK_PATH": "/tmp/balena/updates.lock",  # noqa: S108
    }
    if feature_enabled(service, "supervisor-api"):
        host_networking = service.composition.get("network_mode") == "host"
        host = "127.0.0.1" if host_networking else SUPERVISOR0_GATEWAY
        values.update(
            SUPERVISOR_API_KEY=device.service_api_keys.get(f"{app.app_id}/{service.service_name}", ""),
            SUPERVISOR_PORT=str(device.api_port),
            SUPERVISOR_HOST=host,
            SUPERVISOR_ADDRESS=f"http://{host}:{device.api_port}",
        )
    env = {f"{prefix}_{key}": value for key, value in values.items() for prefix in ("BALENA", "RESIN")}
    env.update(
        BALENA="1",
        RESIN="1",
        BALENA_SERVICE_HANDOVER_COMPLETE_PATH="/tmp/balena/handover-complete",  # noqa: S108
        RESIN_SERVICE_KILL_ME_PATH="/tmp/balena/handover-complete",  # noqa: S108
        USER="root",
    )
    if feature_enabled(service, "balena-api"):
        env.update(BALENA_API_KEY=device.device_api_key, BALENA_API_URL=device.api_endpoint)
    if feature_enabled(service, "balena-socket"):
        env["DOCKER_HOST"] = "unix:///host/run/balena-engine.sock"
    if feature_enabled(service, "host-os.board-rev") and device.os_board_rev:
        env["BALENA_HOST_OS_BOARD_REV"] = device.os_board_rev
    return env


def _mounts(
    app: AppSpec, service: ServiceSpec, device: DeviceContext
) -> tuple[list[str], list[dict[str, Any]]]:
    """(binds, mounts): the lock dir and feature binds; named, anonymous and tmpfs volumes."""
    lock_dir = host_lock_dir(device, app.app_id, service.service_name)
    binds = [f"{lock_dir}:{path}" for path in LOCK_DIR_IN_CONTAINER]
    for feature, paths in FEATURE_BINDS.items():
        if feature_enabled(service, feature):
            # Docker would make an empty directory of a missing source: bound only if present.
            binds += [f"{src}:{dst}:ro" if ro else f"{src}:{dst}" for src, dst, ro in paths
                      if src not in device.missing_host_paths]  # fmt: skip
    if feature_enabled(service, "balena-socket"):
        for target in ("/host/run/balena-engine.sock", "/var/run/docker.sock", "/var/run/balena.sock"):
            binds.append(f"{device.docker_socket}:{target}")
    mounts = []
    if feature_enabled(service, "extra-firmware"):
        mounts.append({"Type": "volume", "Source": EXTRA_FIRMWARE_VOLUME, "Target": "/extra-firmware",
                       "ReadOnly": False})  # fmt: skip
    for mount in service.composition.get("volumes") or []:
        if mount["type"] == "tmpfs":
            mounts.append({"Type": "tmpfs", "Target": mount["target"]})
            continue
        source = volume_docker_name(app.app_id, mount["source"]) if mount.get("source") else None
        mounts.append(
            {
                "Type": "volume",
                "Source": source,
                "Target": mount["target"],
                "ReadOnly": bool(mount.get("read_only")),
            }
        )
    return binds, mounts


def _networks(
    app: AppSpec, service: ServiceSpec
) -> tuple[str, dict[str, list[str]], dict[str, dict[str, Any]]]:
    """(network_mode, docker network name → aliases, docker network name → fixed addresses)."""
    mode = service.composition.get("network_mode")
    if mode in BUILTIN_NETWORK_MODES:
        return str(mode), {}, {}
    if isinstance(mode, str) and mode.startswith("service:"):
        return mode, {}, {}  # resolved to container:<id> by the executor at creation
    declared = service.composition.get("networks") or {}
    networks, endpoints = {}, {}
    for name in service.network_names:
        settings = declared.get(name) or {}
        docker_name = network_docker_name(app, name)
        networks[docker_name] = sorted({service.service_name, *settings.get("aliases", [])})
        addresses = {key: settings[key] for key in ENDPOINT_ADDRESS_KEYS if settings.get(key)}
        if addresses:
            endpoints[docker_name] = addresses
    if feature_enabled(service, "supervisor-api"):
        networks[SUPERVISOR_NETWORK] = []
    return next(iter(networks)), networks, endpoints


def _port_bindings(service: ServiceSpec) -> tuple[list[Any], dict[str, list[Any]]]:
    exposed: list[Any] = []
    bindings: dict[str, list[Any]] = {}
    for port in service.composition.get("ports") or []:
        key = f"{port['container_port']}/{port['protocol']}"
        exposed.append((port["container_port"], port["protocol"]))
        host = (port.get("host_ip") or "", port["host_port"]) if port.get("host_port") else None
        bindings.setdefault(key, [])
        if host is not None:
            bindings[key].append(host)
    return exposed, bindings


def build_container_config(app: AppSpec, service: ServiceSpec, device: DeviceContext) -> ContainerConfig:
    """The container the target asks for (image defaults are Docker's to fill in)."""
    c = service.composition
    environment = {**_supervisor_environment(app, service, device), **service.environment}
    labels = {
        **service.labels,
        "io.balena.supervised": "true",
        "io.balena.app-id": str(app.app_id),
        "io.balena.app-uuid": app.app_uuid,
        "io.balena.service-id": str(service.service_id),
        "io.balena.service-name": service.service_name,
    }
    binds, mounts = _mounts(app, service, device)
    network_mode, networks, endpoints = _networks(app, service)
    exposed, port_bindings = _port_bindings(service)
    restart = c.get("restart", "always")
    host_config: dict[str, Any] = {
        "binds": binds,
        "mounts": mounts,
        "network_mode": network_mode,
        "restart_policy": {"Name": "" if restart == "no" else restart},
        "port_bindings": port_bindings,
        "shm_size": c.get("shm_size", DEFAULT_SHM_SIZE),
        "privileged": bool(c.get("privileged", False)),
        "read_only": bool(c.get("read_only", False)),
        "init": c.get("init"),
        "ipc_mode": c.get("ipc", "shareable"),
    }
    for compose_key, docker_key in (
        ("cap_add", "cap_add"),
        ("cap_drop", "cap_drop"),
        ("devices", "devices"),
        ("dns", "dns"),
        ("dns_opt", "dns_opt"),
        ("dns_search", "dns_search"),
        ("extra_hosts", "extra_hosts"),
        ("group_add", "group_add"),
        ("mem_limit", "mem_limit"),
        ("mem_reservation", "mem_reservation"),
        ("oom_kill_disable", "oom_kill_disable"),
        ("oom_score_adj", "oom_score_adj"),
        ("pid", "pid_mode"),
        ("pids_limit", "pids_limit"),
        ("security_opt", "security_opt"),
        ("storage_opt", "storage_opt"),
        ("sysctls", "sysctls"),
        ("userns_mode", "userns_mode"),
        ("cpu_shares", "cpu_shares"),
        ("cpu_quota", "cpu_quota"),
        ("cpus", "nano_cpus"),
        ("cpuset", "cpuset_cpus"),
        ("cgroup_parent", "cgroup_parent"),
    ):
        if compose_key in c:
            host_config[docker_key] = c[compose_key]
    if "tmpfs" in c:
        host_config["tmpfs"] = {path: "" for path in c["tmpfs"]}
    if "ulimits" in c:
        host_config["ulimits"] = [
            {"Name": name, "Soft": v["soft"], "Hard": v["hard"]}
            if isinstance(v, dict)
            else {"Name": name, "Soft": v, "Hard": v}
            for name, v in sorted(c["ulimits"].items())
        ]
    if feature_enabled(service, "gpu"):
        host_config["device_requests"] = [{"Count": 1, "Capabilities": [["gpu"]]}]

    create: dict[str, Any] = {
        "command": c.get("command"),
        "entrypoint": c.get("entrypoint"),
        "ports": exposed,
        "tty": bool(c.get("tty", True)),
        "stop_signal": c.get("stop_signal"),
        "stop_timeout": c.get("stop_grace_period", DEFAULT_STOP_GRACE_SECONDS),
        "working_dir": c.get("working_dir"),
        "user": c.get("user"),
        "hostname": c.get("hostname"),
        "domainname": c.get("domainname"),
        "mac_address": c.get("mac_address"),
        "healthcheck": _healthcheck(c.get("healthcheck")),
    }
    config = ContainerConfig(
        name=container_name(service),
        image=service.image,
        environment=environment,
        labels=labels,
        create={k: v for k, v in create.items() if v is not None},
        host_config={k: v for k, v in host_config.items() if v is not None},
        networks=networks,
        endpoints=endpoints,
        init_environment={
            "BALENA_DEVICE_NAME_AT_INIT": device.device_name,
            "RESIN_DEVICE_NAME_AT_INIT": device.device_name,
        },
    )
    config.labels[CONFIG_HASH_LABEL] = container_config_hash(config)
    config.labels[CONFIG_PARTS_LABEL] = json.dumps(
        config_parts(config), sort_keys=True, separators=(",", ":")
    )
    return config


def _healthcheck(check: dict[str, Any] | None) -> dict[str, Any] | None:
    if not check:
        return None
    keys = {"test": "test", "interval": "interval", "timeout": "timeout", "retries": "retries"}
    keys["start_period"] = "start_period"
    return {docker: check[compose] for compose, docker in keys.items() if compose in check}


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def container_config_hash(config: ContainerConfig) -> str:
    """Hash of everything that needs a new container when it changes. The name (release
    metadata) is left out: a release-only change renames without restarting."""
    labels = {k: v for k, v in config.labels.items() if k not in PRIVATE_LABELS}
    hashed = [config.image, config.environment, labels, config.create, config.host_config, config.networks]
    # Only when set, so that containers made before fixed addresses existed keep their hash.
    if config.endpoints:
        hashed.append(config.endpoints)
    return _digest(hashed)


# A digest per part only names what changed, so a short one does. Values digested here
# (environment included) are readable in full by whoever can inspect the container anyway.
PART_DIGEST_CHARS = 10


def _part(value: Any) -> str:
    return _digest(value)[:PART_DIGEST_CHARS]


def config_parts(config: ContainerConfig) -> dict[str, Any]:
    """A digest of each part `container_config_hash` covers: one per environment variable,
    label, create and host-config field; one for the image, networks and fixed addresses."""
    return {
        "image": _part(config.image),
        "env": {k: _part(v) for k, v in config.environment.items()},
        "labels": {k: _part(v) for k, v in config.labels.items() if k not in PRIVATE_LABELS},
        "create": {k: _part(v) for k, v in config.create.items()},
        "host_config": {k: _part(v) for k, v in config.host_config.items()},
        "networks": _part(config.networks),
        "endpoints": _part(config.endpoints),
    }


def config_change(created_with: str, config: ContainerConfig) -> Cause:
    """What differs between the parts a container was created with (its CONFIG_PARTS_LABEL,
    "" when it has none) and `config`: environment keys, then other fields by name (create
    and host-config fields by their docker name, labels as `label <key>`)."""
    try:
        old = json.loads(created_with) if created_with else None
    except ValueError:
        old = None
    if not isinstance(old, dict):
        return Cause("update", config_unknown=True)
    new = config_parts(config)

    def keyed(part: str) -> tuple[dict[str, Any], dict[str, Any]]:
        before = old.get(part)
        return (before if isinstance(before, dict) else {}), new[part]

    env_old, env_new = keyed("env")
    fields: list[str] = []
    for part in ("create", "host_config"):
        before, after = keyed(part)
        fields += sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    before, after = keyed("labels")
    fields += [f"label {k}" for k in sorted(before.keys() | after.keys()) if before.get(k) != after.get(k)]
    fields += [part for part in ("image", "networks", "endpoints") if old.get(part) != new[part]]
    return Cause(
        "update",
        env_added=tuple(sorted(env_new.keys() - env_old.keys())),
        env_removed=tuple(sorted(env_old.keys() - env_new.keys())),
        env_changed=tuple(sorted(k for k in env_old.keys() & env_new.keys() if env_old[k] != env_new[k])),
        fields=tuple(fields),
    )


def service_config_hash(app: AppSpec, service: ServiceSpec, device: DeviceContext) -> str:
    return build_container_config(app, service, device).labels[CONFIG_HASH_LABEL]


# What entered the config hash, release by release. A change to what a container is made with
# changes its hash, and a container whose hash differs is recreated: a new value put into
# every container (a variable, a default) would recreate every container of every device at
# the upgrade. Such a change is made with an entry here, which says how the releases before it
# hashed the same target; a container with that earlier hash is up to date (engine/adoption.py)
# and gets the new value when it is next recreated for a reason of its own.
# tests/unit/target/test_stored_target_upgrade.py pins the hashes of release 225373c.
EARLIER_HASHES: tuple[tuple[str, Callable[[DeviceContext], DeviceContext]], ...] = (
    ("BALENA_HOST_OS_VERSION was empty", lambda device: replace(device, os_version="")),
)


def earlier_config_hashes(app: AppSpec, service: ServiceSpec, device: DeviceContext) -> dict[str, str]:
    """The hash each earlier release would have given this service → what changed since."""
    hashes = {}
    for change, as_before in EARLIER_HASHES:
        hashes[service_config_hash(app, service, as_before(device))] = change
    return hashes


def network_config_hash(network: NetworkSpec) -> str:
    return _digest(asdict(network))


def volume_config_hash(volume: VolumeSpec) -> str:
    return _digest(asdict(volume))
