"""The one module that talks to the Docker engine through the docker SDK."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    import docker

# Pinning the API version saves a round trip per client and works on engines >= 20.10.
DOCKER_API_VERSION = "1.41"


class EngineUnavailable(Exception):
    """The Docker engine did not answer."""


@cache
def docker_client() -> docker.DockerClient:
    import docker

    return docker.DockerClient(base_url=settings.DOCKER_HOST, version=DOCKER_API_VERSION, timeout=60)


def ping_engine(timeout: float = 2.0) -> None:
    """Raise EngineUnavailable unless the engine answers within `timeout` seconds."""
    import docker
    import requests

    try:
        client = docker.APIClient(base_url=settings.DOCKER_HOST, version=DOCKER_API_VERSION, timeout=timeout)
        with client:
            client.ping()
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise EngineUnavailable(str(exc)) from exc


SUPERVISED_LABEL = "io.balena.supervised"


@dataclass(frozen=True)
class SupervisedContainer:
    """A container the supervisor manages, as its labels describe it."""

    id: str
    service_name: str
    service_id: int | None


def _supervised_container(container_id: str, labels: dict[str, str]) -> SupervisedContainer:
    service_id = labels.get("io.balena.service-id", "")
    return SupervisedContainer(
        id=container_id,
        service_name=labels.get("io.balena.service-name", ""),
        service_id=int(service_id) if service_id.isdigit() else None,
    )


def running_supervised_containers() -> list[SupervisedContainer]:
    summaries = docker_client().api.containers(filters={"label": SUPERVISED_LABEL, "status": "running"})
    return [_supervised_container(s["Id"], s.get("Labels") or {}) for s in summaries]


class ContainerStartEvents:
    """Supervised containers as they start; `close()` ends the iteration from another thread."""

    def __init__(self) -> None:
        self._stream = docker_client().api.events(
            decode=True, filters={"type": "container", "event": "start", "label": SUPERVISED_LABEL}
        )

    def __iter__(self) -> Iterator[SupervisedContainer]:
        for event in self._stream:
            actor = event.get("Actor") or {}
            yield _supervised_container(actor.get("ID", ""), actor.get("Attributes") or {})

    def close(self) -> None:
        self._stream.close()


def follow_container_output(container_id: str, *, stderr: bool, since: int) -> Iterator[bytes]:
    """One output stream of a container from `since` (whole epoch seconds; 0 = its first
    line), each line prefixed by its RFC 3339 timestamp. Follows until the container stops.
    """
    yield from docker_client().api.logs(
        container_id,
        stdout=not stderr,
        stderr=stderr,
        stream=True,
        follow=True,
        timestamps=True,
        since=since or None,
    )
