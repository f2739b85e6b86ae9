"""Images pulled from a real registry: progress, no second pull, removal when unused."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import docker
import pytest

from apps_api.engine import docker as engine
from apps_api.models import Image, StepRecord
from tests.agent_process import Agent
from tests.integration.engine_helpers import (
    apply,
    local_target,
    remove_supervised_objects,
    supervised_containers,
)

pytestmark = pytest.mark.django_db(transaction=True)


def push_unique_image(busybox_image: str, reference: str, megabytes: int = 8) -> None:
    """Push an image with a layer of its own to the registry, then forget it locally, so
    that using it means a real download."""
    client = docker.from_env()
    builder = client.containers.run(
        busybox_image,
        [
            "sh",
            "-c",
            f"head -c {megabytes * 1024 * 1024} /dev/urandom > /payload; echo {os.urandom(4).hex()} > /id",
        ],
        detach=True,
    )
    builder.wait()
    repository, tag = reference.rsplit(":", 1)
    image = builder.commit(repository, tag)
    builder.remove()
    for line in client.images.push(repository, tag, stream=True, decode=True):
        assert "error" not in line, line
    client.images.remove(image.id, force=True)


@pytest.fixture
def pushed(registry: str, busybox_image: str) -> Iterator[list[str]]:
    """Factory-ish: two fresh references in the registry, absent from the engine."""
    references = [f"{registry}/test/app:v{n}-{os.urandom(3).hex()}" for n in (1, 2)]
    for reference in references:
        push_unique_image(busybox_image, reference)
    yield references
    client = docker.from_env()
    for reference in references:
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(reference, force=True)


@pytest.fixture
def clean_engine(shipped_agent: Agent) -> Iterator[None]:
    remove_supervised_objects()
    yield
    remove_supervised_objects()


def test_pull_reports_increasing_percent_up_to_100(pushed: list[str]) -> None:
    percents: list[int] = []
    image_id = engine.pull_image(pushed[0], on_progress=percents.append)

    assert image_id == docker.from_env().images.get(pushed[0]).id
    assert percents == sorted(percents)
    assert percents[-1] == 100
    assert len(percents) > 1, "a multi-megabyte layer reports progress on the way"


def cloud_target(image: str, *, device_uuid: str, commit: str = "c1") -> dict:
    service = {"id": 1, "image_id": 1, "image": image, "environment": {}, "labels": {},
               "composition": {"command": "sleep 100000", "stop_signal": "SIGKILL"}}  # fmt: skip
    release = {"id": 1, "services": {"main": service}, "volumes": {}, "networks": {}}
    app = {"id": 1, "name": "cloudapp", "class": "fleet", "releases": {commit: release}}
    return {device_uuid: {"name": "test-device", "config": {}, "apps": {"app-uuid-1": app}}}


def test_cloud_apply_pulls_once_and_removes_the_image_it_no_longer_uses(
    pushed: list[str], clean_engine: None
) -> None:
    from hostcfg.identity import load_device_identity

    uuid = load_device_identity().uuid
    first, second = pushed
    apply(cloud_target(first, device_uuid=uuid), timeout=120)
    apply(cloud_target(first, device_uuid=uuid), timeout=120)

    assert supervised_containers()["main"].image.id == docker.from_env().images.get(first).id
    assert StepRecord.objects.filter(kind="fetch", succeeded=True).count() == 1
    assert Image.objects.filter(reference=first).exists()

    apply(cloud_target(second, device_uuid=uuid, commit="c2"), timeout=120)

    assert supervised_containers()["main"].image.id == docker.from_env().images.get(second).id
    with pytest.raises(docker.errors.ImageNotFound):
        docker.from_env().images.get(first)


def test_local_mode_keeps_images_it_no_longer_uses(pushed: list[str], clean_engine: None) -> None:
    first, second = pushed
    apply(local_target({"main": {}}, image=first), timeout=120)
    apply(local_target({"main": {}}, image=second, commit="c2", release=2), timeout=120)

    assert docker.from_env().images.get(first) is not None
