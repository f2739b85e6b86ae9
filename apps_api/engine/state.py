"""Plain data shared by target intake, current state, planner and executor.

Target side: what the device should run (`TargetState` → `AppSpec` → `ServiceSpec`,
`NetworkSpec`, `VolumeSpec`), produced by `apps_api.target.documents` from either document format.
Current side: what Docker runs now, as `apps_api.engine.current` recognises it by labels.
Nothing here imports Django or docker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from apps_api.engine.causes import Cause
from hostcfg.values import ascii_int

UpdateStrategy = Literal["download-then-kill", "kill-then-download", "delete-then-download", "hand-over"]
UPDATE_STRATEGIES: tuple[UpdateStrategy, ...] = (
    "download-then-kill",
    "kill-then-download",
    "delete-then-download",
    "hand-over",
)
DEFAULT_HANDOVER_TIMEOUT_MS = 60_000
# A label may not hold an apply longer than an hour (a hand-over waits this long at most).
MAX_HANDOVER_TIMEOUT_MS = 3_600_000
DEFAULT_NETWORK = "default"
BUILTIN_NETWORK_MODES = frozenset({"host", "bridge", "none"})


# --- target -------------------------------------------------------------------------


@dataclass(frozen=True)
class VolumeSpec:
    """A named volume of an app; created in Docker as `<appId>_<name>`."""

    name: str
    driver: str = "local"
    driver_opts: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NetworkSpec:
    """A network of an app; created in Docker as `<appUuid>_<name>`."""

    name: str
    driver: str = "bridge"
    driver_opts: dict[str, str] = field(default_factory=dict)
    ipam: dict[str, Any] = field(default_factory=dict)
    """Normalised: {"driver": str, "config": [{"subnet"?, "gateway"?, "ip_range"?,
    "aux_addresses"?}], "options": {}}"""
    enable_ipv6: bool = False
    internal: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    config_only: bool = False


@dataclass(frozen=True)
class ServiceSpec:
    """One service of a release, validated and normalised.

    `composition` holds the supported compose fields (snake_case,
    docs/target-state.md "Compose fields"), normalised: `restart` one of
    no/always/on-failure/unless-stopped; `command` and `entrypoint` lists (absent = the
    image's); memory sizes in bytes; durations in
    seconds (`stop_grace_period`) or nanoseconds (healthcheck); `ports` as
    `PortBinding` dicts; `volumes` as `Mount` dicts; `networks` as {name: {"aliases":
    [...], "ipv4_address"?, "ipv6_address"?}} with unprefixed names; `network_mode`
    as given ("host", "bridge", "none", "service:<name>") or absent. Fields not given
    are absent: defaults are the executor's business.
    """

    service_name: str
    service_id: int
    image_id: int
    image: str
    release_id: int
    commit: str
    environment: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    running: bool = True
    composition: dict[str, Any] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    contract: dict[str, Any] | None = None
    """As the release states it; judged by apps_api.target.contracts, never by the engine."""

    @property
    def update_strategy(self) -> UpdateStrategy:
        value = self.labels.get("io.balena.update.strategy", "")
        return value if value in UPDATE_STRATEGIES else "download-then-kill"  # type: ignore[return-value]

    @property
    def requires_reboot(self) -> bool:
        """A new container of it is only created; it starts after the device rebooted."""
        return self.labels.get("io.balena.update.requires-reboot", "").lower() in ("1", "true", "on", "yes")

    @property
    def handover_timeout_ms(self) -> int:
        value = self.labels.get("io.balena.update.handover-timeout", "")
        timeout = ascii_int(value, maximum=2**53)
        if timeout is None:
            return DEFAULT_HANDOVER_TIMEOUT_MS
        return min(timeout, MAX_HANDOVER_TIMEOUT_MS)

    @property
    def network_names(self) -> tuple[str, ...]:
        """App networks the service joins (unprefixed); none for builtin/service: modes."""
        mode = self.composition.get("network_mode")
        if mode in BUILTIN_NETWORK_MODES or (isinstance(mode, str) and mode.startswith("service:")):
            return ()
        if isinstance(mode, str) and mode:
            return (mode,)
        networks = self.composition.get("networks") or {}
        return tuple(sorted(networks)) if networks else (DEFAULT_NETWORK,)

    @property
    def volume_names(self) -> tuple[str, ...]:
        """Named app volumes the service mounts (unprefixed)."""
        mounts = self.composition.get("volumes") or []
        return tuple(sorted({m["source"] for m in mounts if m.get("type") == "volume" and m.get("source")}))


@dataclass(frozen=True)
class AppSpec:
    app_id: int
    app_uuid: str
    name: str
    services: tuple[ServiceSpec, ...] = ()
    networks: tuple[NetworkSpec, ...] = ()
    volumes: tuple[VolumeSpec, ...] = ()
    commit: str | None = None
    release_id: int | None = None
    app_class: str = "fleet"
    is_host: bool = False
    rejected: str = ""
    """Why the release is rejected (its contracts, or `invalid`); a rejected app gets no
    steps at all: what runs of it stays as it is."""
    invalid: bool = False
    """Rejected because the cloud's release cannot be read or run (documents.py); it then
    has no services."""
    failed_commit: str = ""
    """The target release that failed its health probation (engine/release_health.py); the
    app then runs its last committed release, or, having none, the failed one as it is."""
    failed_reason: str = ""

    def service(self, name: str) -> ServiceSpec | None:
        return next((s for s in self.services if s.service_name == name), None)


@dataclass(frozen=True)
class TargetState:
    """A whole validated target: device name, device config variables, apps."""

    name: str | None
    config: dict[str, str]
    apps: tuple[AppSpec, ...]
    source: Literal["cloud", "local"] = "cloud"
    unmanaged: tuple[str, ...] = ()
    """What the target holds that is not ours to run (the supervisor's own release,
    host-OS apps and extensions), as `app` or `app/service`, for the record."""


class InvalidTargetState(ValueError):
    """A target document that cannot be applied; `path` names the offending place
    (`apps.1.services.2.environment.1FOO`) and the message starts with it."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)


DOCKER_HUB_PREFIXES = ("docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/")


def normalise_image_ref(image: str) -> str:
    """`name` → `name:latest`; a digest reference drops its tag (docs/engine.md "Images"); Docker
    Hub's implicit host and `library/` are dropped, as the engine lists them."""
    for prefix in DOCKER_HUB_PREFIXES:
        if image.startswith(prefix):
            image = image[len(prefix) :]
            break
    if image.startswith("library/") and image.count("/") == 1:
        image = image[len("library/") :]
    if "@" in image:
        name, digest = image.split("@", 1)
        last = name.rsplit("/", 1)[-1]
        if ":" in last:
            name = name[: len(name) - len(last)] + last.split(":", 1)[0]
        return f"{name}@{digest}"
    last = image.rsplit("/", 1)[-1]
    return image if ":" in last else f"{image}:latest"


# --- current ------------------------------------------------------------------------


@dataclass(frozen=True)
class CurrentService:
    """A supervised container, as its labels and name describe it."""

    container_id: str
    container_name: str
    app_id: int
    app_uuid: str
    service_name: str
    service_id: int
    image_id: int
    release_id: int
    commit: str
    status: str
    """Docker's word: running, created, exited, dead, paused, restarting, removing."""
    docker_image_id: str
    config_hash: str
    created_at: str
    networks: tuple[str, ...] = ()
    """App networks (unprefixed names) the container is attached to."""
    image: str = ""
    """The image reference it was created from, as the engine lists it."""
    config_parts: str = ""
    """What it was created with, digested per part (container_config.CONFIG_PARTS_LABEL)."""


@dataclass(frozen=True)
class CurrentNetwork:
    app_id: int
    name: str
    docker_name: str
    config_hash: str


@dataclass(frozen=True)
class CurrentVolume:
    app_id: int
    name: str
    docker_name: str
    config_hash: str


@dataclass(frozen=True)
class CurrentState:
    services: tuple[CurrentService, ...] = ()
    networks: tuple[CurrentNetwork, ...] = ()
    volumes: tuple[CurrentVolume, ...] = ()
    images: dict[str, str] = field(default_factory=dict)
    """Normalised image reference → Docker image id, for every reference present in the engine."""
    managed_images: frozenset[str] = frozenset()
    """References the supervisor fetched itself: the only images it may remove."""
    downloading: frozenset[str] = frozenset()
    """References being fetched right now."""


# --- steps --------------------------------------------------------------------------

StepKind = Literal[
    "fetch",
    "kill",
    "stop",
    "start",
    "remove",
    "updateMetadata",
    "handover",
    "createNetwork",
    "removeNetwork",
    "createVolume",
    "removeVolume",
    "takeLock",
    "releaseLock",
    "removeImage",
    "noop",
]


@dataclass(frozen=True)
class Step:
    """One action of an apply round; all steps of a round may run concurrently."""

    kind: StepKind
    app_id: int | None = None
    app: AppSpec | None = None
    current: CurrentService | None = None
    target: ServiceSpec | None = None
    network: NetworkSpec | None = None
    current_network: CurrentNetwork | None = None
    volume: VolumeSpec | None = None
    current_volume: CurrentVolume | None = None
    image: str | None = None
    services: tuple[str, ...] = ()
    """takeLock: every current and target service name of the app."""
    reason: str = ""
    cause: Cause | None = None
    """Why, in parts, when the step changes a service for a reason the journal explains."""
    then_start: bool = False
    """kill: start `target` right after, in the same step (nothing else stands in its way)."""

    @property
    def service_name(self) -> str | None:
        if self.target is not None:
            return self.target.service_name
        return self.current.service_name if self.current is not None else None
