"""Taking over what another supervisor made: containers and networks that carry the
balena labels but not our configuration hash (a device moved from the original
supervisor) are kept when they already are what the target asks for; and containers an
earlier release of this agent made, whose hash is what that release gave the same target
(container_config.EARLIER_HASHES), are kept too.

Without this, every such container would look changed (its hash label is missing) and be
recreated once, with the downtime of an update nobody asked for. The comparison is
done on what the engine says the container is; what it cannot see (the image's own
defaults) is read from the image. A container that differs in anything compared here is
replaced as usual.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from apps_api.engine import docker as engine
from apps_api.engine.container_config import (
    CONFIG_HASH_LABEL,
    ContainerConfig,
    DeviceContext,
    build_container_config,
    earlier_config_hashes,
    network_config_hash,
    network_docker_name,
    service_config_hash,
)
from apps_api.engine.state import (
    AppSpec,
    CurrentNetwork,
    CurrentService,
    CurrentState,
    NetworkSpec,
    ServiceSpec,
)

logger = logging.getLogger(__name__)

# Variables a supervisor sets in every container: their values are its own (API keys,
# device name at init…), not the release's.
SUPERVISOR_VARIABLE_PREFIXES = ("BALENA_", "RESIN_")
SUPERVISOR_VARIABLES = frozenset({"BALENA", "RESIN", "USER", "DOCKER_HOST"})


def adopt_matching(current: CurrentState, apps: Sequence[AppSpec], device: DeviceContext) -> CurrentState:
    """`current` with each foreign container or network that already matches its target
    given the hash the target would give it, so that the planner keeps it."""
    targets = {app.app_id: app for app in apps}
    services = []
    for service in current.services:
        app = targets.get(service.app_id)
        spec = app.service(service.service_name) if app else None
        if app is None or spec is None:
            services.append(service)
            continue
        if service.config_hash:
            services.append(_with_current_hash_if_earlier(service, app, spec, device))
            continue
        config = build_container_config(app, spec, device)
        if _container_matches(service, config):
            logger.info("adopting container %s: it already matches the target", service.container_name)
            service = dataclasses.replace(service, config_hash=config.labels[CONFIG_HASH_LABEL])
        services.append(service)
    networks = list(current.networks)
    if any(not n.config_hash for n in networks):
        summaries = {n.get("Name"): n for n in engine.list_supervised_networks()}
        networks = [_adopted_network(n, targets.get(n.app_id), summaries) for n in networks]
    return dataclasses.replace(current, services=tuple(services), networks=tuple(networks))


def _with_current_hash_if_earlier(
    service: CurrentService, app: AppSpec, spec: ServiceSpec, device: DeviceContext
) -> CurrentService:
    """`service` as up to date when its hash is the one an earlier release gave this very
    target (container_config.EARLIER_HASHES): only what that release did not put in changed."""
    current_hash = service_config_hash(app, spec, device)
    if service.config_hash == current_hash:
        return service
    change = earlier_config_hashes(app, spec, device).get(service.config_hash)
    if change is None:
        return service
    logger.info("keeping container %s: made when %s", service.container_name, change)
    return dataclasses.replace(service, config_hash=current_hash)


def _container_matches(service: CurrentService, config: ContainerConfig) -> bool:
    details = engine.inspect_container(service.container_id)
    if details is None:
        return False
    image = engine.image_config(str(details.get("Image") or ""))
    return container_matches(details, image, config)


def container_matches(details: dict[str, Any], image: dict[str, Any], config: ContainerConfig) -> bool:
    """Whether the container the engine describes (`details`, from an image whose own
    `Config` is `image`) is the one `config` would create. Pure."""
    have = details.get("Config") or {}
    host = details.get("HostConfig") or {}
    env = _variables(have.get("Env"))
    image_env = _variables(image.get("Env"))
    wanted_env = {k: v for k, v in config.environment.items() if not _supervisor_variable(k)}
    if any(env.get(k) != v for k, v in wanted_env.items()):
        return False
    extra = set(env) - set(wanted_env) - set(image_env)
    if any(not _supervisor_variable(k) for k in extra):
        return False
    for key, field in (("command", "Cmd"), ("entrypoint", "Entrypoint")):
        wanted = config.create.get(key, image.get(field))
        if (have.get(field) or None) != (wanted or None):
            return False
    labels = have.get("Labels") or {}
    user_labels = {k: v for k, v in config.labels.items() if not k.startswith("io.balena.")}
    if any(labels.get(k) != v for k, v in user_labels.items()):
        return False
    if (
        set(labels)
        - set(config.labels)
        - set(image.get("Labels") or {})
        - {k for k in labels if k.startswith(("io.balena.", "io.resin."))}
    ):
        return False
    wanted_host = config.host_config
    if bool(host.get("Privileged")) != bool(wanted_host.get("privileged")):
        return False
    policy = (host.get("RestartPolicy") or {}).get("Name") or "no"
    if policy != (wanted_host["restart_policy"]["Name"] or "no"):
        return False
    if (
        str(wanted_host.get("network_mode")) in ("host", "none", "bridge")
        and host.get("NetworkMode") != (wanted_host["network_mode"])
    ):
        return False
    attached = set(((details.get("NetworkSettings") or {}).get("Networks") or {}).keys())
    if config.networks and attached != set(config.networks):
        return False
    volumes = {
        (m.get("Name"), m.get("Destination"))
        for m in details.get("Mounts") or []
        if m.get("Type") == "volume"
    }
    wanted_volumes = {(m["Source"], m["Target"]) for m in wanted_host.get("mounts", []) if m.get("Source")}
    return wanted_volumes <= volumes and _ports(host) == _wanted_ports(wanted_host)


def _adopted_network(
    network: CurrentNetwork, app: AppSpec | None, summaries: dict[Any, dict[str, Any]]
) -> CurrentNetwork:
    if network.config_hash or app is None:
        return network
    spec = next((n for n in app.networks if n.name == network.name), None)
    spec = spec or (NetworkSpec(name=network.name) if network.name == "default" else None)
    if spec is None or network.docker_name != network_docker_name(app, spec.name):
        return network
    summary = summaries.get(network.docker_name)
    if summary is None or not network_matches(summary, spec):
        return network
    logger.info("adopting network %s: it already matches the target", network.docker_name)
    return dataclasses.replace(network, config_hash=network_config_hash(spec))


def network_matches(summary: dict[str, Any], spec: NetworkSpec) -> bool:
    """Whether the engine's network (`summary`) is what `spec` asks for. Pure."""
    if (summary.get("Driver") or "bridge") != spec.driver:
        return False
    if bool(summary.get("Internal")) != spec.internal or bool(summary.get("EnableIPv6")) != spec.enable_ipv6:
        return False
    wanted = [pool.get("subnet") for pool in (spec.ipam or {}).get("config", [])]
    have = [pool.get("Subnet") for pool in ((summary.get("IPAM") or {}).get("Config") or [])]
    return not wanted or sorted(filter(None, wanted)) == sorted(filter(None, have))


def _variables(lines: object) -> dict[str, str]:
    if not isinstance(lines, list):
        return {}
    return dict(line.split("=", 1) for line in lines if isinstance(line, str) and "=" in line)


def _supervisor_variable(name: str) -> bool:
    return name in SUPERVISOR_VARIABLES or name.startswith(SUPERVISOR_VARIABLE_PREFIXES)


def _ports(host: dict[str, Any]) -> set[tuple[str, str, str]]:
    bindings = host.get("PortBindings") or {}
    return {
        (port, b.get("HostIp") or "", str(b.get("HostPort") or ""))
        for port, entries in bindings.items()
        for b in entries or []
    }


def _wanted_ports(host_config: dict[str, Any]) -> set[tuple[str, str, str]]:
    result = set()
    for port, entries in (host_config.get("port_bindings") or {}).items():
        for host_ip, host_port in entries:
            result.add((port, host_ip, str(host_port)))
    return result
