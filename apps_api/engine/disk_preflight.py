"""Disk pre-flight: a download starts only when it fits on the engine's disk.

Before a fetch, the compressed sizes of the image's layers that the engine does not have
yet, plus a reserve, are compared with the free space of the engine's data root. When
they do not fit, images the supervisor fetched and nothing uses are removed first; when
they still do not fit the fetch fails with `InsufficientStorage`, which the apply loop
retries with its backoff (each retry checks again, so freed space is noticed).

Which layers count as present: the registry names layers by their compressed digest, the
engine's images by uncompressed ones (`RootFS.Layers`), so the two cannot be compared.
Instead, when counting every layer does not fit, the manifests of the engine's own images
pulled from the same registry (their `RepoDigests`) are read too: a layer listed there is
on disk. A layer the engine has from elsewhere (a build, another registry, a manifest that
cannot be read) counts as missing, so the estimate errs on the side of needing more space,
never less. Compressed sizes understate what extraction writes; the reserve is the margin
for that.

When the size cannot be known (no v2 API, a timeout, no manifest for this platform) or
the free space cannot be read, the download goes ahead: the engine's own pull is then the
judge, as it was before this check existed.

MB here are 1 000 000 bytes (as the engine's own progress output counts them).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from apps_api.engine import docker as engine
from apps_api.engine.registry import (
    ImageName,
    Layer,
    ManifestUnavailable,
    Platform,
    RegistryClient,
    parse_image_name,
    uses_plain_http,
)

logger = logging.getLogger(__name__)

MB = 1_000_000
INSUFFICIENT_STORAGE = "Insufficient storage"
DEFAULT_RESERVE_MB = 256
# Manifests of local images read per check to find layers already on disk; more only costs time.
MAX_LOCAL_MANIFESTS = 16

# balena's device architecture → the platform its images are built for.
DEVICE_ARCH_PLATFORMS = {
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", ""),
    "armv7hf": ("arm", "v7"),
    "rpi": ("arm", "v6"),
    "i386": ("386", ""),
    "i386-nlp": ("386", ""),
}
# The kernel's machine name (`docker info` Architecture) → OCI architecture and variant.
MACHINE_PLATFORMS = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", ""),
    "arm64": ("arm64", ""),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i686": ("386", ""),
    "i386": ("386", ""),
}


# Layers of a manifest named by digest never change, so they are kept for the process's
# life: retries and later checks do not read them again (Docker Hub counts every manifest
# read against its pull limit). Content-addressed, hence never stale, whatever the order.
_LAYERS_BY_DIGEST: dict[tuple[str, str, str, Platform], list[Layer]] = {}
MAX_CACHED_MANIFESTS = 256


class InsufficientStorage(Exception):
    """A download does not fit in the free space of the engine's data root."""

    def __init__(self, need_bytes: int, have_bytes: int) -> None:
        self.need_bytes = need_bytes
        self.have_bytes = have_bytes
        # Need rounded up and have rounded down: the message never reads as if it fitted.
        super().__init__(
            f"{INSUFFICIENT_STORAGE}: need {math.ceil(need_bytes / MB)} MB, have {have_bytes // MB} MB"
        )


@dataclass(frozen=True)
class SpaceCheck:
    need_bytes: int
    """Missing layers + the reserve + what downloads running beside this one claimed."""
    have_bytes: int

    @property
    def fits(self) -> bool:
        return self.need_bytes <= self.have_bytes


def download_bytes(layers: Iterable[Layer], present: Iterable[str]) -> int:
    """Compressed bytes of the layers whose digest is not in `present`, each counted once."""
    on_disk = set(present)
    missing = {layer.digest: layer.size for layer in layers if layer.digest not in on_disk}
    return sum(missing.values())


def check_space(*, download: int, reserve: int, free: int, claimed: int = 0) -> SpaceCheck:
    """Whether `download` bytes fit in `free`, keeping `reserve` free and leaving room for
    the `claimed` bytes of downloads already under way."""
    return SpaceCheck(need_bytes=download + max(reserve, 0) + claimed, have_bytes=free)


def engine_platform(device_arch: str, os_type: str, machine: str) -> Platform:
    """The platform the engine pulls for: the device type's architecture when balena knows
    it, else the engine's machine."""
    architecture, variant = DEVICE_ARCH_PLATFORMS.get(device_arch) or MACHINE_PLATFORMS.get(
        machine, (machine, "")
    )
    return Platform(os_type or "linux", architecture, variant)


def free_bytes(data_root: str, host_root: str = "/") -> int:
    """Bytes an unprivileged writer may still use on the file system of `data_root`, seen
    from here or, when the agent runs in a container, under `host_root`."""
    candidates = [Path(data_root), Path(host_root) / data_root.lstrip("/")]
    path = next((p for p in candidates if p.exists()), candidates[0])
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


@dataclass
class DiskPreflight:
    """One apply round's disk check, shared by the round's concurrent fetches.

    `removable_images`: references the supervisor fetched that neither a container nor the
    target uses (the planner's unused images); only these are ever removed to make room.
    `on_image_removed` forgets a removed one; `log` says what happened on the device logs.
    """

    reserve_bytes: int
    device_arch: str
    host_root: str
    removable_images: Sequence[str]
    on_image_removed: Callable[[str], None]
    log: Callable[[str], None]
    # Checks, removals and claims happen one at a time; downloads still run side by side.
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _claimed: int = field(default=0, init=False)
    _removed: set[str] = field(default_factory=set, init=False)
    _storage: engine.EngineStorage | None = field(default=None, init=False)

    @contextmanager
    def room_for(self, image: str, auth: dict[str, str] | None) -> Iterator[None]:
        """Around a download of `image`: raises InsufficientStorage before it starts when it
        does not fit; while it runs its size is claimed against the next checks."""
        claim = self._claim(image, auth)
        try:
            yield
        finally:
            with self._lock:
                self._claimed -= claim

    def _engine_storage(self) -> engine.EngineStorage:
        """The engine's data root and platform, asked once per round (its free space is
        read at every check)."""
        if self._storage is None:
            self._storage = engine.engine_storage()
        return self._storage

    def _claim(self, image: str, auth: dict[str, str] | None) -> int:
        try:
            storage = self._engine_storage()
            free = free_bytes(storage.data_root, self.host_root)
            name = parse_image_name(image)
            platform = engine_platform(self.device_arch, storage.os, storage.machine)
            client = RegistryClient(
                name.registry, auth, uses_plain_http(name.registry, storage.insecure_registries)
            )
            layers = _image_layers(client, name, platform)
        except (ManifestUnavailable, OSError) as exc:
            logger.warning("disk pre-flight skipped for %s: %s", image, exc)
            self.log(f"Could not tell the size of image '{image}' ({exc}); downloading it unchecked")
            return 0
        download = download_bytes(layers, present=())
        with self._lock:
            check = self._check(download, free)
            if not check.fits:
                # Only worth the registry's time when counting every layer does not fit.
                download = download_bytes(layers, present=_layers_on_disk(client, name, platform))
                check = self._check(download, free)
            if not check.fits and self._make_room(image):
                # The images removed may have held layers counted as present.
                download = download_bytes(layers, present=_layers_on_disk(client, name, platform))
                check = self._check(download, free_bytes(storage.data_root, self.host_root))
            if not check.fits:
                raise InsufficientStorage(check.need_bytes, check.have_bytes)
            self._claimed += download
            return download

    def _check(self, download: int, free: int) -> SpaceCheck:
        return check_space(download=download, reserve=self.reserve_bytes, free=free, claimed=self._claimed)

    def _make_room(self, image: str) -> bool:
        """Remove the removable images; True when any went."""
        removed_any = False
        for reference in self.removable_images:
            if reference in self._removed:
                continue
            try:
                engine.remove_image(reference)
            except Exception as exc:  # a container not known to the round uses it: it stays
                logger.info("kept image %s: %s", reference, exc)
                continue
            self._removed.add(reference)
            removed_any = True
            self.on_image_removed(reference)
            self.log(f"Deleted image '{reference}' to make room for '{image}'")
        return removed_any


def _image_layers(client: RegistryClient, name: ImageName, platform: Platform) -> list[Layer]:
    if not name.reference.startswith("sha256:"):
        return client.image_layers(name, platform)
    key = (name.registry, name.repository, name.reference, platform)
    if key not in _LAYERS_BY_DIGEST:
        if len(_LAYERS_BY_DIGEST) >= MAX_CACHED_MANIFESTS:
            _LAYERS_BY_DIGEST.pop(next(iter(_LAYERS_BY_DIGEST)), None)
        _LAYERS_BY_DIGEST[key] = client.image_layers(name, platform)
    return _LAYERS_BY_DIGEST[key]


def _layers_on_disk(client: RegistryClient, name: ImageName, platform: Platform) -> set[str]:
    """Digests of the layers in the manifests of the engine's images from `name`'s registry."""
    present: set[str] = set()
    try:
        local_images = _local_images_of(name, [ref for ref in engine.list_image_references() if "@" in ref])[
            :MAX_LOCAL_MANIFESTS
        ]
    except OSError as exc:  # no layer counts as present: the safe side
        logger.info("local images unknown: %s", exc)
        return present
    for local in local_images:
        try:
            present.update(layer.digest for layer in _image_layers(client, local, platform))
        except ManifestUnavailable as exc:  # its layers count as missing: the safe side
            logger.info("layers of %s/%s unknown: %s", local.repository, local.reference, exc)
    return present


def _local_images_of(name: ImageName, repo_digests: Iterable[str]) -> list[ImageName]:
    """The engine's images pulled from `name`'s registry, those of its repository first."""
    local = {parse_image_name(d) for d in repo_digests}
    same_registry = [n for n in local if n.registry == name.registry]
    return sorted(same_registry, key=lambda n: (n.repository != name.repository, n.repository, n.reference))
