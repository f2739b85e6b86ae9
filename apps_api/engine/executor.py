"""Runs the planner's steps against the engine, all steps of a round at once."""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from apps_api.engine import docker as engine
from apps_api.engine.container_config import (
    CONFIG_HASH_LABEL,
    SUPERVISOR0_GATEWAY,
    SUPERVISOR0_SUBNET,
    SUPERVISOR_NETWORK,
    DeviceContext,
    build_container_config,
    container_name,
    network_config_hash,
    network_docker_name,
    volume_config_hash,
    volume_docker_name,
)
from apps_api.engine.current import current_service
from apps_api.engine.locks import UpdateLocks, ensure_service_lock_dir, handover_complete
from apps_api.engine.state import AppSpec, CurrentService, ServiceSpec, Step

logger = logging.getLogger(__name__)

MAX_PARALLEL_STEPS = 16
HANDOVER_POLL_SECONDS = 0.2


class StepObserver(Protocol):
    """Told about each step: the apply loop journals, logs and tracks status with it."""

    def started(self, step: Step) -> None: ...

    def finished(self, step: Step, error: BaseException | None, seconds: float) -> None: ...

    def progress(self, step: Step, percent: int) -> None: ...


@dataclass(frozen=True)
class StepOutcome:
    step: Step
    error: BaseException | None
    seconds: float
    skipped: bool = False
    """Not run: the round was cancelled first."""


def registry_credentials(device: DeviceContext, image: str) -> dict[str, str] | None:
    """A managed device pulls from the cloud's registry (config.json `registryEndpoint`) as
    `d_<uuid>` with its key; any other registry gets no credentials of the device."""
    registry = device.registry_endpoint.split("://", 1)[-1].strip("/").lower()
    if not (registry and device.api_endpoint and device.device_api_key):
        return None
    if "/" not in image or image.split("/", 1)[0].lower() != registry:
        return None
    return {"username": f"d_{device.uuid}", "password": device.device_api_key}


@dataclass
class Executor:
    device: DeviceContext
    locks: UpdateLocks
    observer: StepObserver
    force: bool = False
    on_image_fetched: Callable[[str, str], None] = lambda ref, image_id: None
    on_image_removed: Callable[[str], None] = lambda ref: None
    on_reboot_needed: Callable[[ServiceSpec], None] = lambda service: None
    """A container of a service that requires a reboot was installed, not started."""
    on_locks_overridden: Callable[[int, tuple[str, ...]], None] = lambda app_id, services: None
    """`force` removed user update locks of these services of the app."""
    make_room: Callable[[str, dict[str, str] | None], AbstractContextManager[None]] = (
        lambda image, auth: nullcontext()
    )
    """Wraps each download (image, registry credentials): raises before it starts when it
    cannot fit (disk_preflight.DiskPreflight.room_for)."""
    cancelled: Callable[[], bool] = lambda: False
    """True once a new target makes the rest of this round moot: steps not yet begun are
    skipped and a hand-over stops waiting (the next round re-plans)."""

    @property
    def host_root(self) -> Path:
        return Path(self.device.host_root)

    def run_round(self, steps: Sequence[Step]) -> list[StepOutcome]:
        """Run every step concurrently; returns each outcome (errors are not raised)."""
        work = [s for s in steps if s.kind != "noop"]
        if not work:
            return []
        if len(work) == 1:
            return [self._run(work[0])]
        with ThreadPoolExecutor(max_workers=min(len(work), MAX_PARALLEL_STEPS)) as pool:
            return list(pool.map(self._run, work))

    def run_step(self, step: Step) -> None:
        """Run one step now, raising its error (the device API's synchronous actions)."""
        outcome = self._run(step)
        if outcome.error is not None:
            raise outcome.error

    def _run(self, step: Step) -> StepOutcome:
        if self.cancelled():
            return StepOutcome(step, None, 0.0, skipped=True)
        began = time.monotonic()
        error: BaseException | None = None
        try:
            self.observer.started(step)
            getattr(self, f"_do_{step.kind}")(step)
        except Exception as exc:
            error = exc
        seconds = time.monotonic() - began
        try:
            self.observer.finished(step, error, seconds)
        except Exception as exc:  # the journal must not turn a done step into a lost one
            logger.exception("could not record step %s", step.kind)
            error = error or exc
        return StepOutcome(step, error, seconds)

    # --- containers ---------------------------------------------------------------------

    def _do_fetch(self, step: Step) -> None:
        assert step.image is not None
        auth = registry_credentials(self.device, step.image)
        with self.make_room(step.image, auth):
            image_id = engine.pull_image(
                step.image, auth=auth, on_progress=lambda percent: self.observer.progress(step, percent)
            )
        self.on_image_fetched(step.image, image_id)

    def _do_kill(self, step: Step) -> None:
        assert step.current is not None
        self._kill(step.current)
        target = step.target
        if (
            target is not None
            and target.update_strategy == "delete-then-download"
            and engine.image_id(target.image) != step.current.docker_image_id
        ):
            try:
                engine.remove_image(step.current.docker_image_id)
            except Exception as exc:  # still used by another container: it stays
                logger.info("kept image %s: %s", step.current.docker_image_id, exc)
        if step.then_start:
            self._do_start(dataclasses.replace(step, kind="start", current=None))

    def _kill(self, container: CurrentService) -> None:
        engine.kill_container(container.container_id)

    def _do_stop(self, step: Step) -> None:
        assert step.current is not None
        engine.stop_container(step.current.container_id)

    def _do_remove(self, step: Step) -> None:
        assert step.current is not None
        engine.remove_container(step.current.container_id)

    def _do_start(self, step: Step) -> None:
        if step.current is not None:
            _start_or_remove(step.current.container_id)
            return
        assert step.app is not None and step.target is not None
        container_id = self._create(step.app, step.target, name=container_name(step.target))
        if step.target.requires_reboot:
            self.on_reboot_needed(step.target)
        elif step.target.running:
            _start_or_remove(container_id)

    def _create(self, app: AppSpec, service: ServiceSpec, *, name: str) -> str:
        ensure_service_lock_dir(self.host_root, app.app_id, service.service_name)
        config = build_container_config(app, service, self.device)
        host_config = dict(config.host_config)
        mode = str(host_config.get("network_mode", ""))
        if mode.startswith("service:"):
            host_config["network_mode"] = (
                f"container:{self._service_container_id(app, mode[len('service:') :])}"
            )
        if SUPERVISOR_NETWORK in config.networks:
            engine.ensure_supervisor_network(
                SUPERVISOR_NETWORK, subnet=SUPERVISOR0_SUBNET, gateway=SUPERVISOR0_GATEWAY
            )
        networks = list(config.networks.items())
        first_network, first_aliases = networks[0] if networks else (None, [])
        container_id = engine.create_container(
            name,
            config.image,
            environment={**config.init_environment, **config.environment},
            labels=config.labels,
            create=config.create,
            host_config=host_config,
            network=first_network,
            aliases=first_aliases,
            addresses=config.endpoints.get(first_network or ""),
        )
        try:
            for network, aliases in networks[1:]:
                engine.connect_container(container_id, network, aliases, config.endpoints.get(network))
        except Exception:
            # Half-made, it would look installed and be started next round without its networks.
            engine.remove_container(container_id)
            raise
        return container_id

    def _service_container_id(self, app: AppSpec, service_name: str) -> str:
        for summary in engine.list_supervised_containers():
            service = current_service(summary)
            if service and service.app_id == app.app_id and service.service_name == service_name:
                return service.container_id
        raise RuntimeError(f"network_mode service:{service_name}: no container of that service")

    def _do_updateMetadata(self, step: Step) -> None:
        assert step.current is not None and step.target is not None
        engine.rename_container(step.current.container_id, container_name(step.target))

    def _do_handover(self, step: Step) -> None:
        """Start the new container beside the old one, wait for it to say it has taken
        over (or for the timeout), then kill the old one."""
        assert step.app is not None and step.current is not None and step.target is not None
        old, service = step.current, step.target
        lock_dir = ensure_service_lock_dir(self.host_root, step.app.app_id, service.service_name)
        for marker in ("handover-complete", "resin-kill-me"):
            (lock_dir / marker).unlink(missing_ok=True)
        restart_policy = engine.restart_policy(old.container_id)
        engine.clear_restart_policy(old.container_id)
        engine.rename_container(old.container_id, f"old_{old.container_name}")
        new_id = None
        try:
            new_id = self._create(step.app, service, name=container_name(service))
            engine.start_container(new_id)
        except Exception:
            # The old container goes back to what it was; the next round tries again.
            if new_id is not None:
                engine.remove_container(new_id)
            engine.rename_container(old.container_id, old.container_name)
            engine.set_restart_policy(old.container_id, restart_policy)
            raise
        deadline = time.monotonic() + service.handover_timeout_ms / 1000
        while time.monotonic() < deadline:
            if handover_complete(self.host_root, step.app.app_id, service.service_name):
                break
            time.sleep(HANDOVER_POLL_SECONDS)
        self._kill(old)

    # --- networks, volumes, images, locks -----------------------------------------------------

    def _do_createNetwork(self, step: Step) -> None:
        assert step.app is not None and step.network is not None
        network = step.network
        engine.create_network(
            network_docker_name(step.app, network.name),
            driver=network.driver,
            options=network.driver_opts,
            ipam=network.ipam or None,
            enable_ipv6=network.enable_ipv6,
            internal=network.internal,
            config_only=network.config_only,
            labels={
                **network.labels,
                "io.balena.supervised": "true",
                "io.balena.app-id": str(step.app.app_id),
                "io.balena.app-uuid": step.app.app_uuid,
                CONFIG_HASH_LABEL: network_config_hash(network),
            },
        )

    def _do_removeNetwork(self, step: Step) -> None:
        assert step.current_network is not None
        engine.remove_network(step.current_network.docker_name)

    def _do_createVolume(self, step: Step) -> None:
        assert step.app is not None and step.volume is not None
        volume = step.volume
        engine.create_volume(
            volume_docker_name(step.app.app_id, volume.name),
            driver=volume.driver,
            driver_opts=volume.driver_opts,
            labels={
                **volume.labels,
                "io.balena.supervised": "true",
                "io.balena.app-uuid": step.app.app_uuid,
                CONFIG_HASH_LABEL: volume_config_hash(volume),
            },
        )

    def _do_removeVolume(self, step: Step) -> None:
        assert step.current_volume is not None
        engine.remove_volume(step.current_volume.docker_name)

    def _do_removeImage(self, step: Step) -> None:
        assert step.image is not None
        engine.remove_image(step.image)
        self.on_image_removed(step.image)

    def _do_takeLock(self, step: Step) -> None:
        assert step.app_id is not None
        overridden = self.locks.take(self.host_root, step.app_id, step.services, force=self.force)
        if overridden:
            self.on_locks_overridden(step.app_id, overridden)

    def _do_releaseLock(self, step: Step) -> None:
        assert step.app_id is not None
        self.locks.release(self.host_root, step.app_id)


MISSING_OBJECT = re.compile(r"\b(network|volume) \S+ not found", re.IGNORECASE)


class MadeAgain(Exception):
    """A container that could not start for a network or volume the engine no longer has
    was removed; the next round makes it again, after the missing object."""


def _start_or_remove(container_id: str) -> None:
    try:
        engine.start_container(container_id)
    except Exception as exc:
        if not MISSING_OBJECT.search(str(exc)):
            raise
        # It would fail the same way at every round: the engine keeps the object it was made
        # with. Its anonymous volumes stay (an image's VOLUME may hold the app's data).
        engine.remove_container(container_id, anonymous_volumes=False)
        raise MadeAgain(f"removed container {container_id[:12]}, to be made again: {exc}") from exc
