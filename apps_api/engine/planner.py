"""The planner: current state + target → the steps of the next apply round. Pure.

Called once per round by the apply loop; every step it returns may run concurrently,
so a step whose precondition is another step's effect is only emitted in a later
round (kill the old container this round, start the new one the next).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from apps_api.engine.causes import Cause
from apps_api.engine.container_config import (
    CONFIG_HASH_LABEL,
    ContainerConfig,
    DeviceContext,
    build_container_config,
    config_change,
    network_config_hash,
    network_docker_name,
)
from apps_api.engine.state import (
    DEFAULT_NETWORK,
    AppSpec,
    CurrentNetwork,
    CurrentService,
    CurrentState,
    CurrentVolume,
    NetworkSpec,
    ServiceSpec,
    Step,
    StepKind,
    normalise_image_ref,
)

# Steps that disrupt a running app, so they need the app's update lock
# (docs/locks.md "Locks in an update").
LOCKED_STEPS = frozenset({"kill", "stop", "start", "updateMetadata", "handover"})


@dataclass(frozen=True)
class PlanConfig:
    device: DeviceContext
    local_mode: bool = False
    """Local mode keeps images: nothing is garbage-collected."""
    reboot_pending: bool = False
    """A reboot was asked for during this boot: services that require one wait for it."""
    images_on_hold: frozenset[str] = frozenset()
    """Normalised references kept although unused (a previous release, until the new one commits)."""
    refused_removals: Mapping[str, str] = field(default_factory=dict)
    """Engine name → the engine's refusal, for each network it refused to remove round after
    round: left in place (held back), so that the rest of the apply goes on."""


HoldCause = Literal["lock", "download", "dependency", "backoff", "reboot", "refused"]


@dataclass(frozen=True)
class HeldStep:
    """A step the engine means to take but not in the next round, and what holds it back.

    `held_by` names the holder: for "lock" the service whose update lock file blocks (""
    while the engine only has yet to take the app's lock itself), for "download" the image
    reference, for "dependency" the service (or `network <name>`, `volume <name>`) waited
    for. `until` is when a "backoff" ends (ISO 8601, UTC); "reboot" waits for the device
    to reboot; "refused" names the network (`network <name>`) the engine keeps refusing to
    remove, and `detail` is the engine's refusal."""

    kind: StepKind
    app_id: int | None
    service_name: str | None
    cause: HoldCause
    held_by: str = ""
    until: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Plan:
    """The next round's steps and the steps held back behind them."""

    steps: list[Step]
    held: list[HeldStep]


@dataclass
class _AppView:
    """The current objects of one app."""

    services: list[CurrentService] = field(default_factory=list)
    networks: dict[str, CurrentNetwork] = field(default_factory=dict)
    volumes: dict[str, CurrentVolume] = field(default_factory=dict)


def plan(
    current: CurrentState,
    target: Sequence[AppSpec],
    *,
    locks_held: Iterable[int],
    config: PlanConfig,
    leftover_locks: Iterable[int] = (),
) -> list[Step]:
    """The steps of the next round; [] when current matches target, [noop] while only
    downloads are in flight. `locks_held`: apps whose update locks this supervisor holds;
    `leftover_locks`: apps with lock files of ours that nothing holds (a killed worker's),
    released once the app has nothing else to do."""
    return _plan(current, target, held=frozenset(locks_held), config=config,
                 leftover_locks=leftover_locks, lock_holders={})[0]  # fmt: skip


def explain(
    current: CurrentState,
    target: Sequence[AppSpec],
    *,
    locks_held: Iterable[int],
    config: PlanConfig,
    leftover_locks: Iterable[int] = (),
    lock_holders: Mapping[int, Sequence[str]] | None = None,
    backoff_until: str = "",
) -> Plan:
    """`plan`'s steps, with every step it holds back and why. `lock_holders`: app id →
    services whose update lock files are not ours (they block the app's `takeLock`;
    leave it empty when locks are overridden). `backoff_until`: the engine waits after a
    failed round until then, so the whole next round is held back by it."""
    steps, held = _plan(current, target, held=frozenset(locks_held), config=config,
                        leftover_locks=leftover_locks, lock_holders=lock_holders or {})  # fmt: skip
    if backoff_until:
        waiting = [HeldStep(s.kind, s.app_id, s.service_name, "backoff", until=backoff_until) for s in steps]
        return Plan(steps=[], held=waiting + held)
    return Plan(steps=steps, held=held)


def _plan(
    current: CurrentState,
    target: Sequence[AppSpec],
    *,
    held: frozenset[int],
    config: PlanConfig,
    leftover_locks: Iterable[int],
    lock_holders: Mapping[int, Sequence[str]],
) -> tuple[list[Step], list[HeldStep]]:
    leftovers = frozenset(leftover_locks) - held
    targets = {app.app_id: app for app in target}
    views: dict[int, _AppView] = {}
    for service in current.services:
        views.setdefault(service.app_id, _AppView()).services.append(service)
    for network in current.networks:
        # A network with this app id but another app's uuid in its engine name (left by the
        # cloud's release before local mode) is not the target's: known by its engine name, it
        # is removed, and the target's is made under the name the executor gives it.
        owner = targets.get(network.app_id)
        ours = owner is None or network.docker_name == network_docker_name(owner, network.name)
        views.setdefault(network.app_id, _AppView()).networks[
            network.name if ours else network.docker_name
        ] = network
    for volume in current.volumes:
        views.setdefault(volume.app_id, _AppView()).volumes[volume.name] = volume

    steps: list[Step] = []
    held_back: list[HeldStep] = []
    for app_id in sorted(views.keys() | targets.keys() | leftovers):
        view = views.get(app_id, _AppView())
        app = targets.get(app_id)
        holders = tuple(lock_holders.get(app_id, ()))
        if app is None:
            app_steps = _remove_app(app_id, view, locked=app_id in held, refused=config.refused_removals)
            held_back += _held_removals(app_id, view, config.refused_removals)
            if app_id not in held:
                held_back += [_held_by_lock("kill", s.app_id, s.service_name, holders)
                              for s in view.services if s.status != "removing"]  # fmt: skip
        elif app.rejected:
            # Its release is not for this device: what runs keeps running as it is.
            held_lock = app_id in held
            app_steps = [Step("releaseLock", app_id=app_id, reason="release rejected")] if held_lock else []
        else:
            planner = _AppPlanner(app, view, current, config, locked=app_id in held)
            app_steps = planner.steps()
            held_back += planner.held
            if app_id not in held:
                held_back += [_held_by_lock(s.kind, s.app_id, s.service_name, holders) for s in planner.gated]
        if not app_steps and app_id in leftovers:
            app_steps = [Step("releaseLock", app_id=app_id, reason="lock files left behind")]
        steps += app_steps

    if not steps and not config.local_mode:
        steps = _unused_images(current, target, config.images_on_hold)
    if not steps and current.downloading:
        steps = [Step("noop", reason="downloads in progress")]
    return steps, held_back


def _held_by_lock(
    kind: StepKind, app_id: int | None, service: str | None, holders: Sequence[str]
) -> HeldStep:
    """A step waiting for the app's update lock: the service's own lock file if it has one,
    else the first service holding one, else (no user lock) the engine's own takeLock."""
    holder = service if service is not None and service in holders else next(iter(holders), "")
    return HeldStep(kind, app_id, service, "lock", held_by=holder)


def _refused(app_id: int, network: str, refusal: str) -> HeldStep:
    return HeldStep("removeNetwork", app_id, None, "refused", held_by=f"network {network}", detail=refusal)


def _held_removals(app_id: int, view: _AppView, refused: Mapping[str, str]) -> list[HeldStep]:
    return [_refused(app_id, name, refused[n.docker_name]) for name, n in view.networks.items()
            if n.docker_name in refused]  # fmt: skip


def _remove_app(app_id: int, view: _AppView, *, locked: bool, refused: Mapping[str, str]) -> list[Step]:
    """An app gone from the target loses its containers and networks; its volumes stay."""
    if view.services:
        if not locked:
            names = tuple(sorted({s.service_name for s in view.services}))
            return [Step("takeLock", app_id=app_id, services=names, reason="app removed from target")]
        return [
            Step("kill", app_id=app_id, current=s, reason="app removed from target")
            for s in view.services
            if s.status != "removing"
        ]
    steps = [
        Step("removeNetwork", app_id=app_id, current_network=n, reason="app removed from target")
        for n in view.networks.values()
        if n.docker_name not in refused
    ]
    if locked:
        steps.append(Step("releaseLock", app_id=app_id, reason="app removed"))
    return steps


class _AppPlanner:
    """The steps of one app that stays in (or enters) the target."""

    def __init__(
        self, app: AppSpec, view: _AppView, current: CurrentState, config: PlanConfig, *, locked: bool
    ) -> None:
        self.app = app
        self.view = view
        self.images = current.images
        self.downloading = current.downloading
        self.device = config.device
        self.reboot_pending = config.reboot_pending
        self.refused_removals = config.refused_removals
        self.locked = locked
        self.free: list[Step] = []
        self.gated: list[Step] = []
        self.held: list[HeldStep] = []
        """Steps held back by a download, a dependency or a pending reboot (locks: see `gated`)."""
        self._configs: dict[str, ContainerConfig] = {}
        """Each service's container config, built once per round (services and their
        dependencies are compared more than once)."""

    def steps(self) -> list[Step]:
        alive = [s for s in self.view.services if s.status != "dead"]
        dead = [s for s in self.view.services if s.status == "dead"]
        self.free += [Step("remove", app_id=self.app.app_id, current=s, reason="dead") for s in dead]
        newest = self._newest_per_service(alive)
        self._plan_volumes()
        unusable_networks = self._plan_networks(alive)
        for name, container in sorted(newest.items()):
            if self.app.service(name) is None:
                self._gate(Step("kill", app_id=self.app.app_id, current=container, reason="not in target"))
        being_removed = {s.service_name for s in dead}
        for service in self.app.services:
            # A new container takes the dead one's name: create it once that one is gone.
            if service.service_name not in being_removed or service.service_name in newest:
                self._plan_service(service, newest.get(service.service_name), newest, unusable_networks)

        steps = list(self.free)
        if self.gated:
            if self.locked:
                steps += self.gated
            else:
                names = {s.service_name for s in self.view.services} | {
                    s.service_name for s in self.app.services
                }
                steps.append(
                    Step(
                        "takeLock",
                        app_id=self.app.app_id,
                        services=tuple(sorted(names)),
                        reason=self.gated[0].reason,
                    )
                )
        if not steps and self.locked:
            steps.append(Step("releaseLock", app_id=self.app.app_id, reason="target reached"))
        return steps

    def _gate(self, step: Step) -> None:
        # A fresh install has nothing running that a lock could protect: its starts go
        # through at once, saving two rounds.
        if step.kind == "start" and not any(s.status != "dead" for s in self.view.services):
            self.free.append(step)
        else:
            self.gated.append(step)

    def _newest_per_service(self, alive: list[CurrentService]) -> dict[str, CurrentService]:
        """The newest container of each service; older duplicates are killed."""
        newest: dict[str, CurrentService] = {}
        for container in sorted(alive, key=lambda s: (s.created_at, s.container_id), reverse=True):
            if container.service_name in newest:
                self._gate(
                    Step("kill", app_id=self.app.app_id, current=container, reason="duplicate container")
                )
            else:
                newest[container.service_name] = container
        return newest

    def _target_networks(self) -> dict[str, NetworkSpec]:
        networks = {n.name: n for n in self.app.networks}
        networks.setdefault(DEFAULT_NETWORK, NetworkSpec(DEFAULT_NETWORK))
        return networks

    def _plan_volumes(self) -> None:
        # Volumes of an app in the target are never removed: a changed definition keeps
        # the existing volume and its data.
        for volume in self.app.volumes:
            if volume.name not in self.view.volumes:
                self.free.append(
                    Step(
                        "createVolume",
                        app_id=self.app.app_id,
                        app=self.app,
                        volume=volume,
                        reason="new volume",
                    )
                )

    def _plan_networks(self, alive: list[CurrentService]) -> set[str]:
        """Create, recreate and remove networks; returns those that containers must leave."""
        targets = self._target_networks()
        unusable = set()
        refused = self.refused_removals
        for name, existing in self.view.networks.items():
            wanted = targets.get(name)
            if wanted is not None and existing.config_hash == network_config_hash(wanted):
                continue
            if existing.docker_name in refused:
                # The engine will not let it go: its containers keep it as it is.
                self.held.append(_refused(self.app.app_id, name, refused[existing.docker_name]))
                continue
            unusable.add(name)
            if not any(name in s.networks for s in alive):
                reason = "network changed" if wanted is not None else "network not in target"
                self.free.append(
                    Step("removeNetwork", app_id=self.app.app_id, current_network=existing, reason=reason)
                )
        for name, network in sorted(targets.items()):
            if name not in self.view.networks:
                self.free.append(
                    Step(
                        "createNetwork",
                        app_id=self.app.app_id,
                        app=self.app,
                        network=network,
                        reason="new network",
                    )
                )
        return unusable

    def _image_ready(self, service: ServiceSpec) -> bool:
        return normalise_image_ref(service.image) in self.images

    def _hold(self, kind: StepKind, service: ServiceSpec, cause: HoldCause, held_by: str = "") -> None:
        self.held.append(HeldStep(kind, self.app.app_id, service.service_name, cause, held_by=held_by))

    def _fetch(self, service: ServiceSpec, then: StepKind) -> None:
        """Fetch the service's image (unless already on its way); `then` waits for it."""
        ref = normalise_image_ref(service.image)
        self._hold(then, service, "download", ref)
        if ref in self.downloading:
            self.free.append(Step("noop", app_id=self.app.app_id, target=service, reason="downloading"))
        elif not any(s.kind == "fetch" and s.image == ref for s in self.free):
            self.free.append(
                Step(
                    "fetch",
                    app_id=self.app.app_id,
                    app=self.app,
                    target=service,
                    image=ref,
                    reason="image missing",
                )
            )

    def _differs(
        self, container: CurrentService, service: ServiceSpec, unusable_networks: set[str]
    ) -> Cause | None:
        """Why the container must be replaced, or None when it matches the service."""
        if (
            not self._image_ready(service)
            or self.images[normalise_image_ref(service.image)] != container.docker_image_id
        ):
            was = container.image or container.docker_image_id
            if normalise_image_ref(was) == normalise_image_ref(service.image):
                was = service.image  # the same reference, new content
            return Cause("update", image_from=was, image_to=service.image)
        config = self._configs.get(service.service_name)
        if config is None:
            config = self._configs[service.service_name] = build_container_config(
                self.app, service, self.device
            )
        if container.config_hash != config.labels[CONFIG_HASH_LABEL]:
            return config_change(container.config_parts, config)
        if changed := unusable_networks.intersection(container.networks):
            return Cause("update", networks=tuple(sorted(changed)))
        return None

    def _dependencies_met(
        self, service: ServiceSpec, newest: dict[str, CurrentService], unusable_networks: set[str]
    ) -> bool:
        return self._unmet_dependency(service, newest, unusable_networks) is None

    def _unmet_dependency(
        self, service: ServiceSpec, newest: dict[str, CurrentService], unusable_networks: set[str]
    ) -> tuple[HoldCause, str] | None:
        """What the service waits for before it may start: ("download", image) or
        ("dependency", service | "network <name>" | "volume <name>"); None when nothing."""
        missing = [s for s in self.app.services if not self._image_ready(s)]
        if missing:
            return "download", normalise_image_ref(missing[0].image)
        networks = {n for n in service.network_names}
        for name in sorted(networks):
            if name not in self.view.networks or name in unusable_networks:
                return "dependency", f"network {name}"
        for name in service.volume_names:
            if name not in self.view.volumes:
                return "dependency", f"volume {name}"
        for name in service.depends_on:
            dependency, container = self.app.service(name), newest.get(name)
            if dependency is None or container is None or container.status != "running":
                return "dependency", name
            if self._differs(container, dependency, unusable_networks) is not None:
                return "dependency", name
        return None

    def _plan_service(
        self,
        service: ServiceSpec,
        container: CurrentService | None,
        newest: dict[str, CurrentService],
        unusable_networks: set[str],
    ) -> None:
        app_id = self.app.app_id
        if container is None:
            if not self._image_ready(service):
                self._fetch(service, then="start")
            elif (unmet := self._unmet_dependency(service, newest, unusable_networks)) is not None:
                self._hold("start", service, *unmet)
            else:
                self._gate(Step("start", app_id=app_id, app=self.app, target=service, reason="not running"))
            return

        cause = self._differs(container, service, unusable_networks)
        if cause is not None:
            self._replace(service, container, cause, newest, unusable_networks)
        elif (container.commit, container.release_id, container.image_id) != (
            service.commit,
            service.release_id,
            service.image_id,
        ):
            self._gate(
                Step(
                    "updateMetadata",
                    app_id=app_id,
                    app=self.app,
                    current=container,
                    target=service,
                    reason="release changed",
                )
            )
        elif not service.running and container.status in ("running", "restarting"):
            self._gate(
                Step("stop", app_id=app_id, current=container, target=service, reason="running: false")
            )
        elif (
            service.running
            and container.status == "created"
            and service.requires_reboot
            and self.reboot_pending
        ):
            self._hold("start", service, "reboot")  # installed; it starts once the device has rebooted
        elif service.running and container.status == "created":
            self._gate(
                Step(
                    "start",
                    app_id=app_id,
                    app=self.app,
                    current=container,
                    target=service,
                    reason="installed, not started",
                )
            )

    def _replace(
        self,
        service: ServiceSpec,
        container: CurrentService,
        cause: Cause,
        newest: dict[str, CurrentService],
        unusable_networks: set[str],
    ) -> None:
        """Apply the service's update strategy to replace `container`."""
        strategy = service.update_strategy
        kill_first = strategy in ("kill-then-download", "delete-then-download")
        kind: StepKind = "handover" if strategy == "hand-over" else "kill"
        if not kill_first:
            if not self._image_ready(service):
                self._fetch(service, then=kind)
                return
            # download-then-kill and hand-over: disrupt only once every image of the app is here.
            missing = [s for s in self.app.services if not self._image_ready(s)]
            if missing:
                self._hold(kind, service, "download", normalise_image_ref(missing[0].image))
                return
        # A replacement that could start as soon as the old container is gone is started by
        # the kill itself instead of waiting for the next round. Never after a delete: the
        # image it would start from is the one being deleted.
        then_start = (
            kind == "kill"
            and strategy != "delete-then-download"
            and self._dependencies_met(service, newest, unusable_networks)
        )
        self._gate(
            Step(kind, app_id=self.app.app_id, app=self.app, current=container, target=service,
                 reason=cause.text, cause=cause, then_start=then_start)
        )  # fmt: skip


def _unused_images(current: CurrentState, target: Sequence[AppSpec], on_hold: frozenset[str]) -> list[Step]:
    unused = unused_images(current, target, on_hold)
    return [Step("removeImage", image=ref, reason="no longer used") for ref in unused]


def unused_images(
    current: CurrentState, target: Sequence[AppSpec], on_hold: frozenset[str] = frozenset()
) -> list[str]:
    """Images the supervisor fetched that neither the target nor any container uses, that
    are not on hold (a committed release's, while the new one is on probation) and not
    being fetched: the only ones it may remove."""
    wanted = {normalise_image_ref(s.image) for app in target for s in app.services} | on_hold
    in_use = {s.docker_image_id for s in current.services}
    return [
        ref
        for ref in sorted(current.managed_images)
        if ref in current.images
        and ref not in wanted
        and current.images[ref] not in in_use
        and ref not in current.downloading
    ]
