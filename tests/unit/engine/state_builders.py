"""Builders of plain target and current state for the engine's unit tests."""

from __future__ import annotations

import dataclasses

from apps_api.engine.container_config import (
    CONFIG_PARTS_LABEL,
    DeviceContext,
    build_container_config,
    network_config_hash,
    service_config_hash,
    volume_config_hash,
)
from apps_api.engine.planner import PlanConfig
from apps_api.engine.state import (
    AppSpec,
    CurrentNetwork,
    CurrentService,
    CurrentState,
    CurrentVolume,
    NetworkSpec,
    ServiceSpec,
    VolumeSpec,
    normalise_image_ref,
)

DEVICE = DeviceContext(uuid="device-uuid", host_root="/host")
CONFIG = PlanConfig(device=DEVICE)
LOCAL = PlanConfig(device=DEVICE, local_mode=True)


def svc(
    name: str = "main", *, image: str | None = None, commit: str = "c1", release: int = 1, **fields
) -> ServiceSpec:
    labels = fields.pop("labels", {})
    strategy = fields.pop("strategy", None)
    if strategy:
        labels = {**labels, "io.balena.update.strategy": strategy}
    return ServiceSpec(
        service_name=name,
        service_id=fields.pop("service_id", abs(hash(name)) % 1000),
        image_id=fields.pop("image_id", 10),
        image=image or f"img-{name}",
        release_id=release,
        commit=commit,
        labels=labels,
        **fields,
    )


def app(*services: ServiceSpec, app_id: int = 1, networks=(), volumes=()) -> AppSpec:
    return AppSpec(
        app_id=app_id,
        app_uuid=str(app_id),
        name=f"app{app_id}",
        services=tuple(services),
        networks=tuple(networks),
        volumes=tuple(volumes),
    )


def digest(ref: str) -> str:
    return f"sha256:{normalise_image_ref(ref)}"


def container(
    target: AppSpec,
    service: ServiceSpec,
    *,
    status: str = "running",
    created: str = "2026-01-01T00:00:00Z",
    container_id: str | None = None,
    image_digest: str | None = None,
    config_hash: str | None = None,
) -> CurrentService:
    """A container that matches `service` exactly, unless told otherwise."""
    return CurrentService(
        container_id=container_id or f"id-{service.service_name}-{created}",
        container_name=f"{service.service_name}_{service.image_id}_{service.release_id}_{service.commit}",
        app_id=target.app_id,
        app_uuid=target.app_uuid,
        service_name=service.service_name,
        service_id=service.service_id,
        image_id=service.image_id,
        release_id=service.release_id,
        commit=service.commit,
        status=status,
        docker_image_id=image_digest or digest(service.image),
        config_hash=config_hash or service_config_hash(target, service, DEVICE),
        created_at=created,
        networks=service.network_names,
        image=service.image,
        config_parts=build_container_config(target, service, DEVICE).labels[CONFIG_PARTS_LABEL],
    )


def network(target: AppSpec, name: str = "default", spec: NetworkSpec | None = None) -> CurrentNetwork:
    return CurrentNetwork(
        app_id=target.app_id,
        name=name,
        docker_name=f"{target.app_uuid}_{name}",
        config_hash=network_config_hash(spec or NetworkSpec(name)),
    )


def volume(target: AppSpec, name: str, spec: VolumeSpec | None = None) -> CurrentVolume:
    return CurrentVolume(
        app_id=target.app_id,
        name=name,
        docker_name=f"{target.app_id}_{name}",
        config_hash=volume_config_hash(spec or VolumeSpec(name)),
    )


def settled(target: AppSpec, **overrides) -> CurrentState:
    """Everything of `target` running as asked, every image present."""
    state = CurrentState(
        services=tuple(container(target, s) for s in target.services),
        networks=(network(target), *(network(target, n.name, n) for n in target.networks)),
        volumes=tuple(volume(target, v.name, v) for v in target.volumes),
        images={normalise_image_ref(s.image): digest(s.image) for s in target.services},
    )
    return dataclasses.replace(state, **overrides)


def with_images(*refs: str) -> dict[str, str]:
    return {normalise_image_ref(r): digest(r) for r in refs}
