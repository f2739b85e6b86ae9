"""Target state intake: the v2 local-mode and v3 cloud documents, validated into `TargetState`.

Both formats end in the same plain data (`apps_api.engine.state`); the v2 document is
read as its v3 equivalent (docs/target-state.md "Conversion to v3"). A document is accepted
whole or rejected at its first problem with `InvalidTargetState(path, problem)`, whose
str() is "<path>: <problem>" and whose path is dotted from the root of the document as
the user wrote it (`local.apps.1.services.2.environment.1FOO`). Pure: no Django, no docker.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from apps_api.engine.container_config import network_docker_name, volume_docker_name
from apps_api.engine.release_health import label_problem
from apps_api.engine.state import (
    AppSpec,
    InvalidTargetState,
    NetworkSpec,
    ServiceSpec,
    TargetState,
    VolumeSpec,
)
from apps_api.target.compose import AppDeclarations, normalise_compose_fields
from apps_api.target.json_shape import (
    expect_bool,
    expect_flag,
    expect_id,
    expect_list,
    expect_name,
    expect_object,
    expect_string,
    join_path,
    optional,
    variables_from,
)
from apps_api.target.unmanaged import unmanaged_app_reason, unmanaged_service_reason

APP_CLASSES = frozenset({"fleet", "app", "block"})
# v2 service keys that are not compose fields; every other key goes into the composition
V2_SERVICE_KEYS = frozenset(
    {"serviceName", "serviceId", "imageId", "image", "environment", "labels", "running", "contract"}
)


def parse_target(document: object, *, device_uuid: str, current_name: str | None = None) -> TargetState:
    """Parse either format: a document with a top-level "local" key is v2 local mode,
    anything else v3 cloud, read strictly (a person gave it: they are told at once).
    Raises InvalidTargetState."""
    if isinstance(document, dict) and "local" in document:
        return parse_local_target(document, current_name=current_name)
    return parse_cloud_target(document, device_uuid=device_uuid, reject_unreadable_releases=False)


def parse_local_target(document: object, *, current_name: str | None = None) -> TargetState:
    """Parse the body of `POST /v2/local/target-state` (`{"local": {...}, "dependent"?,
    "force"?}`) into a TargetState with source "local".

    App uuids are the appId keys as strings, service ids the services-map keys; an app
    without a commit has no release (no services, networks or volumes). A missing or
    empty `local.name` means `current_name`. Raises InvalidTargetState.
    """
    root = expect_object(document, "")
    if root.get("force") is not None:
        expect_bool(root["force"], "force")
    local = expect_object(_required(root, "local", ""), "local")
    apps_doc = expect_object(optional(local, "apps", {}), "local.apps")
    apps = [_local_app(key, app, join_path("local.apps", key)) for key, app in apps_doc.items()]
    return TargetState(
        name=_device_name(local.get("name"), "local.name") or current_name,
        config=_config(local.get("config"), "local.config"),
        apps=_checked_apps(apps, "local.apps"),
        source="local",
    )


def parse_cloud_target(
    document: object, *, device_uuid: str, reject_unreadable_releases: bool = True
) -> TargetState:
    """Parse a v3 target (`GET /device/v3/<uuid>/state`) for the device `device_uuid`
    into a TargetState with source "cloud". Only the first release of each app is read;
    an app with no release installs nothing. Raises InvalidTargetState; a document
    without the device's uuid is rejected with an empty path and the message
    "Expected target state for local device with uuid '<uuid>'."

    A release whose services, volumes or networks cannot be read or run leaves its app
    `rejected` and `invalid` (the message naming the path), the rest of the target standing;
    without `reject_unreadable_releases` it raises like any other problem.
    """
    root = expect_object(document, "")
    if device_uuid not in root:
        raise InvalidTargetState("", f"Expected target state for local device with uuid '{device_uuid}'.")
    device = expect_object(root[device_uuid], device_uuid)
    apps_path = join_path(device_uuid, "apps")
    apps_doc = expect_object(optional(device, "apps", {}), apps_path)
    apps: list[AppSpec] = []
    unmanaged: list[str] = []
    for uuid, app in apps_doc.items():
        if unmanaged_app_reason(uuid, app) is None:
            at = join_path(apps_path, uuid)
            apps.append(_cloud_app(uuid, app, at, unmanaged, reject_unreadable_releases))
        else:
            unmanaged.append(uuid)
    return TargetState(
        name=_device_name(device.get("name"), join_path(device_uuid, "name")),
        config=_config(device.get("config"), join_path(device_uuid, "config")),
        apps=_checked_apps(apps, apps_path),
        source="cloud",
        unmanaged=tuple(unmanaged),
    )


# --- apps -------------------------------------------------------------------------------


def _local_app(key: str, doc: object, path: str) -> AppSpec:
    app_id = expect_id(key, path)
    app = expect_object(doc, path)
    name = expect_string(_required(app, "name", path), join_path(path, "name"), non_empty=True)
    if app.get("commit") is None:
        return AppSpec(app_id=app_id, app_uuid=key, name=name)
    commit = _commit(app["commit"], join_path(path, "commit"))
    release_id = expect_id(_required(app, "releaseId", path), join_path(path, "releaseId"))
    services_path = join_path(path, "services")
    services_doc = expect_object(optional(app, "services", {}), services_path)
    names = _local_service_names(services_doc, services_path)
    volumes, networks = _volumes_and_networks(app, path)
    declared = _declarations(names.values(), volumes, networks)
    services = []
    for service_key, service_doc in services_doc.items():
        at = join_path(services_path, service_key)
        fields = {k: v for k, v in service_doc.items() if k not in V2_SERVICE_KEYS}
        services.append(
            _service(
                service_doc,
                path=at,
                name=names[service_key],
                service_id=expect_id(service_key, at),
                image_id=expect_id(_required(service_doc, "imageId", at), join_path(at, "imageId")),
                release_id=release_id,
                commit=commit,
                compose_fields=fields,
                compose_path=at,
                declared=declared,
            )
        )
    return _app(app_id, key, name, commit, release_id, services, volumes, networks)


def _local_service_names(services: dict[str, Any], path: str) -> dict[str, str]:
    """serviceName of each services-map key; read first so fields can refer to siblings."""
    names: dict[str, str] = {}
    for key, doc in services.items():
        at = join_path(path, key)
        name = expect_name(
            _required(expect_object(doc, at), "serviceName", at), join_path(at, "serviceName"), "service name"
        )
        if name in names.values():
            raise InvalidTargetState(join_path(at, "serviceName"), f"duplicate service name '{name}'")
        names[key] = name
    return names


def _cloud_app(uuid: str, doc: object, path: str, unmanaged: list[str], reject_unreadable: bool) -> AppSpec:
    """One user app; its services that are not ours to run are left out, into `unmanaged`."""
    expect_name(uuid, path, "app uuid")
    app = expect_object(doc, path)
    app_id = expect_id(_required(app, "id", path), join_path(path, "id"))
    name = expect_string(_required(app, "name", path), join_path(path, "name"), non_empty=True)
    app_class = optional(app, "class", "fleet")
    if not isinstance(app_class, str) or app_class not in APP_CLASSES:
        raise InvalidTargetState(join_path(path, "class"), f"invalid app class {app_class!r}")
    is_host = expect_bool(optional(app, "is_host", False), join_path(path, "is_host"))
    if app.get("parent_app") is not None:
        expect_string(app["parent_app"], join_path(path, "parent_app"))
    releases = expect_object(optional(app, "releases", {}), join_path(path, "releases"))
    if not releases:
        return AppSpec(app_id=app_id, app_uuid=uuid, name=name, app_class=app_class, is_host=is_host)
    commit, release_doc = next(iter(releases.items()))
    release_path = join_path(path, f"releases.{commit}")
    _commit(commit, release_path)
    release = expect_object(release_doc, release_path)
    release_id = expect_id(_required(release, "id", release_path), join_path(release_path, "id"))
    try:
        return _cloud_release(uuid, app_id, name, app_class, is_host, commit, release_id,
                              release, release_path, unmanaged)  # fmt: skip
    except InvalidTargetState as exc:
        if not reject_unreadable:
            raise
        # What the original cannot run either (its apply fails on it, or the engine's):
        # this app's release is rejected, the cloud told; the rest of the target applies.
        return AppSpec(app_id=app_id, app_uuid=uuid, name=name, commit=commit, release_id=release_id,
                       app_class=app_class, is_host=is_host, rejected=str(exc), invalid=True)  # fmt: skip


def _cloud_release(
    uuid: str,
    app_id: int,
    name: str,
    app_class: str,
    is_host: bool,
    commit: str,
    release_id: int,
    release: dict[str, Any],
    release_path: str,
    unmanaged: list[str],
) -> AppSpec:
    services_path = join_path(release_path, "services")
    services_doc = expect_object(optional(release, "services", {}), services_path)
    for service_name in services_doc:
        expect_name(service_name, join_path(services_path, service_name), "service name")
    skipped = [name for name, doc in services_doc.items() if unmanaged_service_reason(name, doc) is not None]
    unmanaged += [f"{uuid}/{name}" for name in skipped]
    services_doc = {name: doc for name, doc in services_doc.items() if name not in skipped}
    volumes, networks = _volumes_and_networks(release, release_path)
    declared = _declarations(services_doc, volumes, networks)
    services = []
    for service_name, service_doc in services_doc.items():
        at = join_path(services_path, service_name)
        service = expect_object(service_doc, at)
        services.append(
            _service(
                service,
                path=at,
                name=service_name,
                service_id=expect_id(_required(service, "id", at), join_path(at, "id")),
                image_id=expect_id(_required(service, "image_id", at), join_path(at, "image_id")),
                release_id=release_id,
                commit=commit,
                compose_fields=expect_object(
                    optional(service, "composition", {}), join_path(at, "composition")
                ),
                compose_path=join_path(at, "composition"),
                declared=declared,
            )
        )
    return _app(app_id, uuid, name, commit, release_id, services, volumes, networks, app_class, is_host)


@dataclass(frozen=True)
class _ParsedService:
    spec: ServiceSpec
    compose_path: str


def _service(
    doc: dict[str, Any],
    *,
    path: str,
    name: str,
    service_id: int,
    image_id: int,
    release_id: int,
    commit: str,
    compose_fields: dict[str, Any],
    compose_path: str,
    declared: AppDeclarations,
) -> _ParsedService:
    """One service; its own `environment`/`labels` win over those of its compose fields."""
    image = expect_string(_required(doc, "image", path), join_path(path, "image"), non_empty=True)
    environment = variables_from(
        _required(doc, "environment", path), join_path(path, "environment"), kind="environment"
    )
    labels = variables_from(_required(doc, "labels", path), join_path(path, "labels"), kind="labels")
    running = expect_bool(optional(doc, "running", True), join_path(path, "running"))
    contract = None
    if doc.get("contract") is not None:
        contract = expect_object(doc["contract"], join_path(path, "contract"))
    compose = normalise_compose_fields(compose_fields, path=compose_path, app=declared)
    _check_labels(labels, join_path(path, "labels"))
    _check_labels(compose.labels, join_path(compose_path, "labels"))
    spec = ServiceSpec(
        service_name=name,
        service_id=service_id,
        image_id=image_id,
        image=image,
        release_id=release_id,
        commit=commit,
        environment={**compose.environment, **environment},
        labels={**compose.labels, **labels},
        running=running,
        composition=compose.composition,
        depends_on=compose.depends_on,
        contract=contract,
    )
    return _ParsedService(spec, compose_path)


def _check_labels(labels: dict[str, str], path: str) -> None:
    """Labels the supervisor reads as numbers must be numbers."""
    for label, value in labels.items():
        if problem := label_problem(label, value):
            raise InvalidTargetState(join_path(path, label), problem)


def _app(
    app_id: int,
    app_uuid: str,
    name: str,
    commit: str,
    release_id: int,
    services: list[_ParsedService],
    volumes: list[VolumeSpec],
    networks: list[NetworkSpec],
    app_class: str = "fleet",
    is_host: bool = False,
) -> AppSpec:
    _check_dependency_cycles(services)
    return AppSpec(
        app_id=app_id,
        app_uuid=app_uuid,
        name=name,
        services=tuple(sorted((s.spec for s in services), key=lambda s: s.service_name)),
        networks=tuple(sorted(networks, key=lambda n: n.name)),
        volumes=tuple(sorted(volumes, key=lambda v: v.name)),
        commit=commit,
        release_id=release_id,
        app_class=app_class,
        is_host=is_host,
    )


def _check_dependency_cycles(services: list[_ParsedService]) -> None:
    graph = {s.spec.service_name: s for s in services}
    finished: set[str] = set()

    def visit(name: str, chain: list[str]) -> None:
        if name in chain:
            cycle = [*chain[chain.index(name) :], name]
            first = graph[cycle[0]]
            field = (
                "network_mode"
                if first.spec.composition.get("network_mode") == f"service:{cycle[1]}"
                else "depends_on"
            )
            raise InvalidTargetState(
                join_path(first.compose_path, field), f"dependency cycle: {' -> '.join(cycle)}"
            )
        if name not in finished:
            for dependency in graph[name].spec.depends_on:
                visit(dependency, [*chain, name])
            finished.add(name)

    for service in services:
        visit(service.spec.service_name, [])


def _checked_apps(apps: list[AppSpec], path: str) -> tuple[AppSpec, ...]:
    seen: dict[int, str] = {}
    for app in apps:
        if app.app_id in seen:
            raise InvalidTargetState(
                join_path(path, app.app_uuid),
                f"duplicate app id {app.app_id} (also used by '{seen[app.app_id]}')",
            )
        seen[app.app_id] = app.app_uuid
        # The engine names them `<app>_<name>`: a volume is a directory, whose name the
        # filesystem caps at 255 bytes; refused now rather than failing every apply.
        volumes = [volume_docker_name(app.app_id, v.name) for v in app.volumes]
        networks = [network_docker_name(app, n.name) for n in app.networks]
        for kind, names in (("volumes", volumes), ("networks", networks)):
            for docker_name in names:
                if len(docker_name) > DOCKER_NAME_MAX:
                    name = docker_name.split("_", 1)[1]
                    raise InvalidTargetState(join_path(join_path(join_path(path, app.app_uuid), kind), name),
                                             f"name too long: the engine's name for it ({docker_name[:20]}…) "
                                             f"would exceed {DOCKER_NAME_MAX} characters")  # fmt: skip
    return tuple(sorted(apps, key=lambda a: (a.app_id, a.app_uuid)))


DOCKER_NAME_MAX = 255


# --- volumes, networks and scalar fields --------------------------------------------------


def _volumes_and_networks(release: dict[str, Any], path: str) -> tuple[list[VolumeSpec], list[NetworkSpec]]:
    volumes_path, networks_path = join_path(path, "volumes"), join_path(path, "networks")
    volumes = expect_object(optional(release, "volumes", {}), volumes_path)
    networks = expect_object(optional(release, "networks", {}), networks_path)
    return (
        [_volume(name, doc, join_path(volumes_path, name)) for name, doc in volumes.items()],
        [_network(name, doc, join_path(networks_path, name)) for name, doc in networks.items()],
    )


def _declarations(
    services: Iterable[str], volumes: list[VolumeSpec], networks: list[NetworkSpec]
) -> AppDeclarations:
    return AppDeclarations(
        services=frozenset(services),
        networks=frozenset(n.name for n in networks),
        volumes=frozenset(v.name for v in volumes),
    )


def _volume(name: str, doc: object, path: str) -> VolumeSpec:
    expect_name(name, path, "volume name")
    volume = expect_object({} if doc is None else doc, path)
    driver_opts = _string_map(volume.get("driver_opts"), join_path(path, "driver_opts"))
    mount_options = {option.strip() for option in driver_opts.get("o", "").split(",")}
    if driver_opts.get("type") in ("none", "bind") or mount_options & {"bind", "rbind"}:
        # The local driver would mount a host directory: a bind mount by another name.
        raise InvalidTargetState(join_path(path, "driver_opts"), "bind mounts are rejected")
    return VolumeSpec(
        name=name,
        driver=expect_string(optional(volume, "driver", "local"), join_path(path, "driver"), non_empty=True),
        driver_opts=driver_opts,
        labels=variables_from(optional(volume, "labels", {}), join_path(path, "labels"), kind="labels"),
    )


def _network(name: str, doc: object, path: str) -> NetworkSpec:
    expect_name(name, path, "network name")
    network = expect_object({} if doc is None else doc, path)
    return NetworkSpec(
        name=name,
        driver=expect_string(
            optional(network, "driver", "bridge"), join_path(path, "driver"), non_empty=True
        ),
        driver_opts=_string_map(network.get("driver_opts"), join_path(path, "driver_opts")),
        ipam=_ipam(network.get("ipam"), join_path(path, "ipam")),
        enable_ipv6=expect_flag(optional(network, "enable_ipv6", False), join_path(path, "enable_ipv6")),
        internal=expect_flag(optional(network, "internal", False), join_path(path, "internal")),
        labels=variables_from(optional(network, "labels", {}), join_path(path, "labels"), kind="labels"),
        config_only=expect_flag(optional(network, "config_only", False), join_path(path, "config_only")),
    )


def _ipam(value: object, path: str) -> dict[str, Any]:
    """Always the full shape: {"driver": ..., "config": [...], "options": {...}}."""
    ipam = expect_object({} if value is None else value, path)
    config_path = join_path(path, "config")
    config = []
    for index, entry in enumerate(expect_list(optional(ipam, "config", []), config_path)):
        at = join_path(config_path, index)
        entry = expect_object(entry, at)
        pool: dict[str, Any] = {
            key: expect_string(entry[key], join_path(at, key))
            for key in ("subnet", "gateway", "ip_range")
            if entry.get(key) is not None
        }
        if entry.get("aux_addresses") is not None:
            pool["aux_addresses"] = _string_map(entry["aux_addresses"], join_path(at, "aux_addresses"))
        config.append(pool)
    return {
        "driver": expect_string(optional(ipam, "driver", "default"), join_path(path, "driver")),
        "config": config,
        "options": _string_map(ipam.get("options"), join_path(path, "options")),
    }


def _string_map(value: object, path: str) -> dict[str, str]:
    return {
        key: expect_string(text, join_path(path, key))
        for key, text in expect_object({} if value is None else value, path).items()
    }


def _config(value: object, path: str) -> dict[str, str]:
    return variables_from({} if value is None else value, path, kind="config")


def _device_name(value: object, path: str) -> str | None:
    if value is None or value == "":
        return None
    name = expect_string(value, path)
    if "\n" in name:
        raise InvalidTargetState(path, "must not contain a newline")
    return name


def _commit(value: object, path: str) -> str:
    # the commit ends up in container names (`<service>_<imageId>_<releaseId>_<commit>`)
    return expect_name(value, path, "commit")


def _required(doc: dict[str, Any], key: str, path: str) -> Any:
    if doc.get(key) is None:
        raise InvalidTargetState(join_path(path, key), "is required")
    return doc[key]
