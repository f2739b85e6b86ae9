"""The one module that talks to the Docker engine through the docker SDK."""

from __future__ import annotations

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
