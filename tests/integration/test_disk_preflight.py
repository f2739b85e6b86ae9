"""Disk pre-flight with the real registry, worker, engine and web server: a download that
does not fit never starts, says why, makes room first, and goes ahead once it fits."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator

import docker
import pytest

from apps_api import apply_status
from apps_api.apply.journal import JournalObserver
from apps_api.engine.disk_preflight import INSUFFICIENT_STORAGE, MB, InsufficientStorage
from apps_api.engine.state import Step, normalise_image_ref
from apps_api.models import Image, StepRecord
from hostcfg.identity import load_device_identity
from supervisor_site.system_services import wait_until
from tests.agent_process import Agent
from tests.integration.conftest import WebProcess, WorkerLog
from tests.integration.engine_helpers import apply, set_target, supervised_containers, wait_applied
from tests.integration.test_image_fetch import cloud_target, push_unique_image
from tests.unit.engine.state_builders import app, svc

pytestmark = pytest.mark.django_db(transaction=True)

# More than any disk here has free: 1 EB.
RESERVE_LARGER_THAN_THE_DISK_MB = 10**12
REFUSAL = re.compile(r"^Insufficient storage: need (\d+) MB, have (\d+) MB$")


@pytest.fixture
def worker_with_reserve(shipped_agent: Agent) -> Iterator[Callable[[str | None], None]]:
    """Restart the session's agent with SUPERVISOR_DISK_RESERVE_MB set (None: unset), as a
    device operator would; it comes back with the usual environment."""

    def restart(reserve_mb: str | None) -> None:
        shipped_agent.restart(SUPERVISOR_DISK_RESERVE_MB=reserve_mb or "")

    yield restart
    if "SUPERVISOR_DISK_RESERVE_MB" in shipped_agent.extra_env:
        restart(None)


@pytest.fixture
def images(registry: str, busybox_image: str) -> Iterator[tuple[str, str]]:
    """Two fresh references in the registry, absent from the engine: (old release, new one)."""
    references = tuple(f"{registry}/test/disk:v{n}-{os.urandom(3).hex()}" for n in (1, 2))
    for reference in references:
        push_unique_image(busybox_image, reference)
    yield references[0], references[1]
    for reference in references:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker.from_env().images.remove(reference, force=True)


@pytest.fixture
def layered(registry: str, busybox_image: str) -> Iterator[tuple[str, str]]:
    """(base, derived): derived is base plus a 1 MiB layer; both in the registry only."""
    base, derived = (f"{registry}/test/layered:{tag}-{os.urandom(3).hex()}" for tag in ("base", "derived"))
    push_unique_image(busybox_image, base)
    client = docker.from_env()
    client.images.pull(base)
    push_unique_image(base, derived, megabytes=1)
    client.images.remove(base, force=True)
    yield base, derived
    for reference in (base, derived):
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(reference, force=True)


def main_service(web: WebProcess) -> dict:
    return web.get("/v2/applications/state").json()["cloudapp"]["services"]["main"]


def test_a_download_that_does_not_fit_waits_for_room_then_goes_ahead(
    images: tuple[str, str],
    shared_web: WebProcess,
    worker_log: WorkerLog,
    worker_with_reserve: Callable[[str | None], None],
) -> None:
    old, new = images
    uuid = load_device_identity().uuid
    apply(cloud_target(old, device_uuid=uuid), timeout=120)
    assert Image.objects.filter(reference=normalise_image_ref(old)).exists()

    # The new release replaces the old container before downloading: its image is unused then.
    worker_with_reserve(str(RESERVE_LARGER_THAN_THE_DISK_MB))
    release = cloud_target(new, device_uuid=uuid, commit="c2")
    app = release[uuid]["apps"]["app-uuid-1"]
    app["releases"]["c2"]["services"]["main"]["labels"] = {"io.balena.update.strategy": "kill-then-download"}
    set_target(release)

    assert wait_until(lambda: REFUSAL.match(main_service(shared_web)["status"] or ""), 120), main_service(
        shared_web
    )
    need, have = map(int, REFUSAL.match(main_service(shared_web)["status"]).groups())  # type: ignore[union-attr]
    assert need - RESERVE_LARGER_THAN_THE_DISK_MB >= 8, "the reserve plus the new image's 8 MiB layer"
    assert have < need
    with pytest.raises(docker.errors.ImageNotFound):
        docker.from_env().images.get(new)
    # Room was made first: the old release's image, which nothing uses any more, is gone.
    with pytest.raises(docker.errors.ImageNotFound):
        docker.from_env().images.get(old)
    assert not Image.objects.filter(reference=normalise_image_ref(old)).exists()
    made_room = f"Deleted image '{normalise_image_ref(old)}' to make room for '{normalise_image_ref(new)}'"
    assert wait_until(lambda: worker_log.lines_with(made_room), 30)
    assert wait_until(lambda: worker_log.lines_with("due to 'Insufficient storage: need "), 30)
    refused = StepRecord.objects.filter(kind="fetch", succeeded=False).last()
    assert refused is not None
    assert REFUSAL.match(refused.error)

    # The operator lowers the reserve: the next attempt fits, downloads, and the service runs.
    worker_with_reserve(None)
    assert wait_until(lambda: main_service(shared_web)["status"] == "Running", 120), main_service(shared_web)
    wait_applied(60)
    assert supervised_containers()["main"].image.id == docker.from_env().images.get(new).id
    assert main_service(shared_web)["image"] == new


def test_layers_the_engine_already_has_are_not_counted_and_images_in_use_stay(
    layered: tuple[str, str], shared_web: WebProcess, worker_with_reserve: Callable[[str | None], None]
) -> None:
    base, derived = layered
    uuid = load_device_identity().uuid
    apply(cloud_target(base, device_uuid=uuid), timeout=120)

    worker_with_reserve(str(RESERVE_LARGER_THAN_THE_DISK_MB))
    set_target(cloud_target(derived, device_uuid=uuid, commit="c2"))

    assert wait_until(lambda: REFUSAL.match(main_service(shared_web)["status"] or ""), 120), main_service(
        shared_web
    )
    need, _ = map(int, REFUSAL.match(main_service(shared_web)["status"]).groups())  # type: ignore[union-attr]
    # Only the 1 MiB layer is missing: the base's 8 MiB layer is on disk already.
    assert 1 <= need - RESERVE_LARGER_THAN_THE_DISK_MB <= 2
    # The running release's image is in use: not removed to make room.
    assert docker.from_env().images.get(base) is not None
    assert supervised_containers()["main"].status == "running"

    worker_with_reserve(None)
    assert wait_until(lambda: main_service(shared_web)["image"] == derived, 120)
    assert wait_until(lambda: main_service(shared_web)["status"] == "Running", 120), main_service(shared_web)
    wait_applied(60)
    assert supervised_containers()["main"].image.id == docker.from_env().images.get(derived).id


def test_every_service_waiting_for_the_image_shows_the_refusal_until_it_is_fetched(redis_server: str) -> None:
    shared, other = "registry.example.com/shared:v1", "registry.example.com/other:v1"
    target = app(svc("main", image=shared), svc("side", image=shared), svc("else", image=other))
    fetch = Step("fetch", app_id=1, app=target, target=target.services[0], image=normalise_image_ref(shared))
    refusal = InsufficientStorage(need_bytes=300 * MB, have_bytes=200 * MB)

    JournalObserver().finished(fetch, refusal, 0.01)

    assert apply_status.read_service_statuses() == {
        "1/main": "Insufficient storage: need 300 MB, have 200 MB",
        "1/side": "Insufficient storage: need 300 MB, have 200 MB",
    }
    JournalObserver().finished(fetch, None, 0.01)
    assert apply_status.read_service_statuses() == {}


def test_a_converged_apply_forgets_refusals_but_not_other_statuses(redis_server: str) -> None:
    apply_status.set_service_status(1, "main", "Insufficient storage: need 300 MB, have 200 MB")
    apply_status.set_service_status(1, "side", "Installing")

    apply_status.forget_service_statuses(INSUFFICIENT_STORAGE)

    assert apply_status.read_service_statuses() == {"1/side": "Installing"}
    apply_status.set_service_status(1, "side", None)
