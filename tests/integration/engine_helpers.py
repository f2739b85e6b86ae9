"""Driving the engine as users do: set a target, wait for the apply, look at Docker."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import docker
import pytest

from apps_api import actions, apply_status
from apps_api.apply.single_flight import apply_in_progress
from apps_api.target.documents import parse_target
from hostcfg.identity import load_device_identity
from supervisor_site.system_services import wait_until
from tests.agent_process import Agent

SUPERVISED = {"label": "io.balena.supervised"}
AnyAgent = TypeVar("AnyAgent", bound=Agent)


def local_target(
    services: dict[str, dict[str, Any]],
    *,
    image: str,
    commit: str = "c1",
    release: int = 1,
    volumes: dict[str, Any] | None = None,
    networks: dict[str, Any] | None = None,
    config: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A v2 local-mode document for app 1, each service a long-running busybox."""
    return {
        "local": {
            "name": "test-device",
            "config": config or {},
            "apps": {
                "1": {
                    "name": "testapp",
                    "commit": commit,
                    "releaseId": str(release),
                    "services": {
                        str(number): {
                            "serviceName": name,
                            "serviceId": number,
                            "imageId": number,
                            "image": image,
                            "environment": {},
                            "labels": {},
                            "running": True,
                            "command": "sleep 100000",
                            "stop_signal": "SIGKILL",
                            **fields,
                        }
                        for number, (name, fields) in enumerate(services.items(), start=1)
                    },
                    "volumes": volumes or {},
                    "networks": networks or {},
                }
            },
        }
    }


def set_target(document: dict[str, Any], *, force: bool = False) -> None:
    target = parse_target(document, device_uuid=load_device_identity().uuid)
    actions.set_target_state(target, force=force)


def wait_applied(timeout: float = 60) -> None:
    if not wait_until(lambda: not apply_in_progress(), timeout, interval=0.05):
        pytest.fail(f"apply still running after {timeout} s; flags {apply_status.read_flags()}")


def wait_worker_idle(timeout: float = 120) -> None:
    """Until the agent's worker runs and holds no task (those it took ahead included)."""
    from supervisor_site.celery import app

    def idle() -> bool:
        inspect = app.control.inspect(timeout=2, limit=1)
        active, reserved = inspect.active(), inspect.reserved()
        return bool(active) and not any(active.values()) and not any((reserved or {}).values())

    if not wait_until(idle, timeout, interval=0.2):
        pytest.fail(f"the worker was still busy after {timeout} s")


def apply(document: dict[str, Any], *, force: bool = False, timeout: float = 60) -> None:
    set_target(document, force=force)
    wait_applied(timeout)


def supervised_containers() -> dict[str, Any]:
    """Service name → container, for every supervised container (stopped ones too)."""
    client = docker.from_env()
    found = {}
    for summary in client.api.containers(all=True, filters=SUPERVISED):
        try:
            container = client.containers.get(summary["Id"])
        except docker.errors.NotFound:  # removed since the listing: the engine is live
            continue
        found[container.labels["io.balena.service-name"]] = container
    return found


def supervised_container_names() -> list[str]:
    """Names of supervised containers, from one listing (safe while the engine removes some)."""
    return sorted(
        c["Names"][0].lstrip("/") for c in docker.from_env().api.containers(all=True, filters=SUPERVISED)
    )


def remove_supervised_objects() -> None:
    client = docker.from_env()
    for container in client.containers.list(all=True, filters=SUPERVISED):
        container.remove(force=True, v=True)
    for network in client.networks.list(filters=SUPERVISED):
        if network.name != "supervisor0":  # the agent's own, which its API listens on
            network.remove()
    for volume in client.volumes.list(filters=SUPERVISED):
        volume.remove(force=True)


@contextmanager
def started_on_a_clean_engine(agent: AnyAgent) -> Iterator[AnyAgent]:
    """`agent` started with no supervised container on the engine; stopped, and the engine
    cleaned again, afterwards."""
    remove_supervised_objects()
    agent.start()
    yield agent
    agent.stop()
    remove_supervised_objects()
