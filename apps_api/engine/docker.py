"""The one module that talks to the Docker engine through the docker SDK."""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings

if TYPE_CHECKING:
    import docker  # lazy: the SDK adds ~20 MiB to a process that never drives the engine

logger = logging.getLogger(__name__)

# Pinning the API version saves a round trip per client and works on engines >= 20.10.
DOCKER_API_VERSION = "1.41"


class EngineUnavailable(Exception):
    """The Docker engine did not answer."""


ENGINE_CONNECTIONS = 32


@cache
def docker_client() -> docker.DockerClient:
    import docker  # lazy: the SDK adds ~20 MiB to a process that never drives the engine

    # Up to 16 step threads, one reader per followed container and the API's reads share it:
    # with the SDK's 10 pooled connections the rest were opened and thrown away each call.
    return docker.DockerClient(base_url=settings.DOCKER_HOST, version=DOCKER_API_VERSION, timeout=60,
                               max_pool_size=ENGINE_CONNECTIONS)  # fmt: skip


# A forked child must not share the parent's pooled connections to the engine (two processes
# writing one socket would mix their requests): it makes its own client.
os.register_at_fork(after_in_child=docker_client.cache_clear)


def ping_engine(timeout: float = 2.0) -> None:
    """Raise EngineUnavailable unless the engine answers within `timeout` seconds."""
    import docker  # lazy: the SDK adds ~20 MiB to a process that never drives the engine
    import requests  # lazy: ~18 MiB, only for the SDK's transport errors

    try:
        client = docker.APIClient(base_url=settings.DOCKER_HOST, version=DOCKER_API_VERSION, timeout=timeout)
        with client:
            client.ping()
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise EngineUnavailable(str(exc)) from exc


SUPERVISED_LABEL = "io.balena.supervised"


# --- log following -------------------------------------------------------------------
# Raw engine answers for apps_api/logs/collector.py, which interprets labels and lines.


def inspect_container(container_id: str) -> dict[str, Any] | None:
    """The engine's description of a container; None once it is gone."""
    try:
        return dict(docker_client().api.inspect_container(container_id))
    except Exception as exc:
        if _not_found(exc):
            return None
        raise


class ContainerEvents:
    """`(action, container id, attributes)` of every container as it starts, is sent a
    signal (`kill`, which `docker stop` and a forced removal also send), dies or is
    removed (`destroy`), from now on. Supervised or not: the engine's label filter cannot
    match the legacy label as an alternative; the attributes hold the labels. `close()`
    ends the iteration from another thread."""

    ACTIONS = ("start", "kill", "die", "destroy")

    def __init__(self) -> None:
        self._stream = docker_client().api.events(
            decode=True, filters={"type": "container", "event": list(self.ACTIONS)}
        )

    def __iter__(self) -> Iterator[tuple[str, str, dict[str, str]]]:
        for event in self._stream:
            actor = event.get("Actor") or {}
            yield str(event.get("Action") or ""), actor.get("ID", ""), actor.get("Attributes") or {}

    def close(self) -> None:
        self._stream.close()


class ContainerOutput:
    """A container's output from `since_ns` (nanoseconds since the epoch; 0 = its first
    line), followed until the container stops, as `(is_stderr, b"<RFC 3339 time> <text>")`
    per line. `close()` ends the iteration from another thread.

    Read as raw chunks and split here: the SDK's `logs(stream=True)` makes two reads per
    line, and one byte per read for a tty container (bench/logs.py: half the rate).
    """

    def __init__(
        self, container_id: str, *, tty: bool, since_ns: int, stdout: bool = True, stderr: bool = True
    ) -> None:
        from docker.types import CancellableStream  # lazy: the docker SDK, ~20 MiB

        api = docker_client().api
        params: dict[str, int | str] = {
            "stdout": int(stdout),
            "stderr": int(stderr),
            "follow": 1,
            "timestamps": 1,
        }
        if since_ns > 0:
            params["since"] = f"{since_ns // 1_000_000_000}.{since_ns % 1_000_000_000:09d}"
        url = f"{api.base_url}/v{api.api_version}/containers/{container_id}/logs"
        response = api.get(url, params=params, stream=True, timeout=None)
        if response.status_code in (404, 409):  # removed, or being removed: nothing to read
            response.close()
            chunks: Iterator[bytes] = iter(())
        else:
            response.raise_for_status()
            chunks = response.raw.stream(None, decode_content=False)
        lines = _tty_lines(chunks) if tty else _multiplexed_lines(chunks)
        self._stream = CancellableStream(lines, response)

    def __iter__(self) -> Iterator[tuple[bool, bytes]]:
        return iter(self._stream)

    def close(self) -> None:
        self._stream.close()


_FRAME_HEADER = struct.Struct(">BxxxL")
_STDERR_FRAME = 2


def _multiplexed_lines(chunks: Iterator[bytes]) -> Iterator[tuple[bool, bytes]]:
    """Docker's frames (8-byte header: stream, length) as lines: one frame is one line."""
    pending = b""
    for chunk in chunks:
        pending = pending + chunk if pending else chunk
        offset, size = 0, len(pending)
        while size - offset >= 8:
            stream, length = _FRAME_HEADER.unpack_from(pending, offset)
            end = offset + 8 + length
            if end > size:
                break
            payload = pending[offset + 8 : end]
            yield stream == _STDERR_FRAME, payload[:-1] if payload.endswith(b"\n") else payload
            offset = end
        pending = pending[offset:]


# A tty line longer than this is passed on in pieces of it, as Docker splits a long line
# into 16 KiB entries (and the timestamp before it): output that never ends a line (a `\r`
# progress bar, a flood) holds no more than this, and costs work in proportion to its size.
TTY_LINE_BYTES = 16 * 1024 + 64


def _tty_lines(chunks: Iterator[bytes], limit: int = TTY_LINE_BYTES) -> Iterator[tuple[bool, bytes]]:
    """A tty's output has no frames (and no stderr): split it on newlines, and a line that
    would pass `limit` into pieces of `limit` bytes (each after the first stamped when read)."""
    pending = bytearray()
    for chunk in chunks:
        start = 0
        while (newline := chunk.find(b"\n", start)) >= 0:
            pending += chunk[start:newline]
            line = bytes(pending).removesuffix(b"\r")
            pending.clear()
            start = newline + 1
            for offset in range(0, max(len(line), 1), limit):
                yield False, line[offset : offset + limit]
        pending += chunk[start:]
        while len(pending) >= limit:
            yield False, bytes(pending[:limit])
            del pending[:limit]
    if pending:
        yield False, bytes(pending)


# --- reconciliation ------------------------------------------------------------------
# Raw engine listings and actions for current.py and executor.py; they translate.

LEGACY_SUPERVISED_LABEL = "io.resin.supervised"


def _not_found(exc: Exception) -> bool:
    import docker  # lazy: the SDK adds ~20 MiB to a process that never drives the engine

    return isinstance(exc, docker.errors.NotFound)


@contextmanager
def _gone_is_fine() -> Iterator[None]:
    """Removing or stopping what is already gone has done its job."""
    try:
        yield
    except Exception as exc:
        if not _not_found(exc):
            raise


def list_supervised_containers() -> list[dict[str, Any]]:
    api = docker_client().api
    seen: dict[str, dict[str, Any]] = {}
    for label in (SUPERVISED_LABEL, LEGACY_SUPERVISED_LABEL):
        for summary in api.containers(all=True, filters={"label": label}):
            seen[summary["Id"]] = summary
    return list(seen.values())


def list_supervised_networks() -> list[dict[str, Any]]:
    return list(docker_client().api.networks(filters={"label": SUPERVISED_LABEL}))


def list_supervised_volumes() -> list[dict[str, Any]]:
    return list(docker_client().api.volumes(filters={"label": SUPERVISED_LABEL}).get("Volumes") or [])


def list_image_references() -> dict[str, str]:
    """Every tag and digest reference in the engine → its image id."""
    references: dict[str, str] = {}
    for image in docker_client().api.images():
        for ref in (image.get("RepoTags") or []) + (image.get("RepoDigests") or []):
            if ref != "<none>:<none>" and not ref.endswith("@<none>"):
                references[ref] = image["Id"]
    return references


def create_container(
    name: str, image: str, *, environment: dict[str, str], labels: dict[str, str],
    create: dict[str, Any], host_config: dict[str, Any], network: str | None, aliases: list[str],
    addresses: dict[str, Any] | None = None,
) -> str:  # fmt: skip
    """`addresses`: the fixed `ipv4_address`/`ipv6_address`/`link_local_ips` on `network`."""
    api = docker_client().api
    networking = None
    if network is not None:
        endpoint = api.create_endpoint_config(aliases=aliases, **(addresses or {}))
        networking = api.create_networking_config({network: endpoint})
    created = api.create_container(
        image,
        name=name,
        environment=environment,
        labels=labels,
        host_config=api.create_host_config(**host_config),
        networking_config=networking,
        **create,
    )
    return str(created["Id"])


def connect_container(
    container_id: str, network: str, aliases: list[str], addresses: dict[str, Any] | None = None
) -> None:
    docker_client().api.connect_container_to_network(
        container_id, network, aliases=aliases, **(addresses or {})
    )


def start_container(container_id: str) -> None:
    docker_client().api.start(container_id)


def _stop_timeout(details: dict[str, Any]) -> int:
    """The container's grace period, passed explicitly so that the client's HTTP timeout
    (60 s + this) covers it, however long it is."""
    return int((details.get("Config") or {}).get("StopTimeout") or 10)


def stop_container(container_id: str) -> None:
    """Stop with the container's own stop signal and grace period; tolerate one already gone."""
    with _gone_is_fine():
        api = docker_client().api
        api.stop(container_id, timeout=_stop_timeout(api.inspect_container(container_id)))


def remove_container(container_id: str, *, anonymous_volumes: bool = True) -> None:
    """Remove the container, with its anonymous volumes unless told to keep them; tolerate
    one already gone."""
    with _gone_is_fine():
        docker_client().api.remove_container(container_id, v=anonymous_volumes, force=True)


def kill_container(container_id: str) -> None:
    """Stop the container as its own stop signal and grace period say, then remove it with
    its anonymous volumes; tolerate one already gone."""
    api = docker_client().api
    with _gone_is_fine():
        details = api.inspect_container(container_id)
        running = (details.get("State") or {}).get("Running", False)
        signal = str((details.get("Config") or {}).get("StopSignal") or "").upper()
        if running and signal not in ("SIGKILL", "KILL", "9"):
            api.stop(container_id, timeout=_stop_timeout(details))
        # A SIGKILL stop is exactly a forced removal, which the engine does in one go.
        api.remove_container(container_id, v=True, force=True)


def rename_container(container_id: str, name: str) -> None:
    docker_client().api.rename(container_id, name)


def restart_policy(container_id: str) -> dict[str, Any]:
    host_config = docker_client().api.inspect_container(container_id).get("HostConfig") or {}
    return dict(host_config.get("RestartPolicy") or {"Name": ""})


def set_restart_policy(container_id: str, policy: dict[str, Any]) -> None:
    docker_client().api.update_container(container_id, restart_policy=policy)


def clear_restart_policy(container_id: str) -> None:
    set_restart_policy(container_id, {"Name": ""})


def create_network(name: str, *, driver: str, options: dict[str, str], ipam: dict[str, Any] | None,
                   enable_ipv6: bool, internal: bool, labels: dict[str, str],
                   config_only: bool = False) -> None:  # fmt: skip
    api = docker_client().api
    ipam_config = None
    if ipam:
        import docker  # lazy: the SDK adds ~20 MiB to a process that never drives the engine

        pools = [
            docker.types.IPAMPool(
                subnet=pool.get("subnet"),
                iprange=pool.get("ip_range"),
                gateway=pool.get("gateway"),
                aux_addresses=pool.get("aux_addresses"),
            )
            for pool in ipam.get("config", [])
        ]
        ipam_config = docker.types.IPAMConfig(
            driver=ipam.get("driver", "default"), pool_configs=pools, options=ipam.get("options") or None
        )
    try:
        if config_only:
            # The SDK has no argument for it: the engine's own request body, with ConfigOnly.
            body = {
                "Name": name,
                "Driver": driver,
                "Options": options or {},
                "EnableIPv6": enable_ipv6,
                "Internal": internal,
                "Labels": labels,
                "ConfigOnly": True,
            }
            if ipam_config is not None:
                body["IPAM"] = ipam_config
            api._result(api._post_json(api._url("/networks/create"), data=body), True)
        else:
            api.create_network(
                name, driver=driver, options=options or None, ipam=ipam_config, enable_ipv6=enable_ipv6,
                internal=internal, labels=labels, check_duplicate=True,
            )  # fmt: skip
    except Exception as exc:
        # A crash between create and record leaves the network there: creating it again is done.
        if "already exists" not in str(exc):
            raise


def ensure_supervisor_network(name: str, *, subnet: str, gateway: str) -> None:
    """The bridge between the supervisor and the services using its API; recreated when its
    addressing differs (only when no container uses it)."""
    import docker  # lazy: the SDK adds ~20 MiB to a process that never drives the engine

    api = docker_client().api
    try:
        details = api.inspect_network(name)
    except docker.errors.NotFound:
        details = None
    if details is not None:
        pools = (details.get("IPAM") or {}).get("Config") or []
        if any(p.get("Subnet") == subnet and p.get("Gateway") == gateway for p in pools):
            return
        if details.get("Containers"):
            logger.warning("network %s has other addressing but is in use; keeping it", name)
            return
        api.remove_network(name)
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet, gateway=gateway)])
    try:
        api.create_network(
            name,
            driver="bridge",
            ipam=ipam,
            options={"com.docker.network.bridge.name": name},
            labels={"io.balena.supervised": "true"},
            check_duplicate=True,
        )
    except docker.errors.APIError as exc:
        if "already exists" not in str(exc):
            raise


def remove_network(name: str) -> None:
    """Remove the network; one the engine says has active endpoints is first disconnected,
    by force, from every endpoint it still lists (a container it lost track of when its
    process holder died keeps its endpoint), then removed once more."""
    api = docker_client().api
    with _gone_is_fine():
        try:
            api.remove_network(name)
        except Exception as exc:
            if not has_active_endpoints(exc):
                raise
            for endpoint in (api.inspect_network(name).get("Containers") or {}).values():
                with _gone_is_fine():
                    api.disconnect_container_from_network(endpoint.get("Name") or "", name, force=True)
            api.remove_network(name)


def has_active_endpoints(error: BaseException | None) -> bool:
    """The engine's refusal to remove a network it says is still in use."""
    return error is not None and "active endpoints" in str(error)


def create_volume(name: str, *, driver: str, driver_opts: dict[str, str], labels: dict[str, str]) -> None:
    docker_client().api.create_volume(name, driver=driver, driver_opts=driver_opts or None, labels=labels)


def remove_volume(name: str) -> None:
    with _gone_is_fine():
        docker_client().api.remove_volume(name)


def pull_image(
    ref: str, *, auth: dict[str, str] | None = None, on_progress: Callable[[int], None] | None = None
) -> str:
    """Pull `ref`, reporting whole percent across all layers; returns the image id."""
    api = docker_client().api
    repository, _, tag = ref.rpartition(":") if "@" not in ref else (ref, "", "")
    if "/" in tag:  # the colon was a registry port, not a tag
        repository, tag = ref, "latest"
    # Layer id → (bytes done, bytes total); None while its size is unknown. Layers the
    # engine already has download nothing and count for nothing.
    layers: dict[str, tuple[int, int] | None] = {}
    reported = -1
    for event in api.pull(repository, tag=tag or None, stream=True, decode=True, auth_config=auth):
        if "error" in event:
            raise RuntimeError(event["error"])
        layer, status, detail = event.get("id"), event.get("status", ""), event.get("progressDetail") or {}
        if not layer or layer == tag:
            continue
        if status == "Already exists":
            layers.pop(layer, None)
        elif status in ("Pulling fs layer", "Waiting"):
            layers.setdefault(layer, None)
        elif status == "Downloading" and detail.get("total"):
            layers[layer] = (int(detail.get("current", 0)), int(detail["total"]))
        elif status in ("Download complete", "Verifying Checksum", "Extracting", "Pull complete"):
            known = layers.get(layer)
            layers[layer] = (known[1], known[1]) if known else (1, 1)
        sizes = list(layers.values())
        if on_progress is None or not sizes or any(size is None for size in sizes):
            continue
        done = sum(size[0] for size in sizes if size)
        total = sum(size[1] for size in sizes if size)
        percent = min(100, done * 100 // max(total, 1))
        if percent > reported:
            reported = percent
            on_progress(percent)
    if on_progress is not None and reported < 100:
        on_progress(100)
    return str(api.inspect_image(ref)["Id"])


def image_id(ref: str) -> str | None:
    """The id of the image `ref` names in the engine, or None."""
    try:
        return str(docker_client().api.inspect_image(ref)["Id"])
    except Exception as exc:
        if _not_found(exc):
            return None
        raise


def image_config(ref: str) -> dict[str, Any]:
    """The image's own `Config` (Env, Cmd, Entrypoint, Labels); {} when it is absent."""
    try:
        return dict(docker_client().api.inspect_image(ref).get("Config") or {})
    except Exception as exc:
        if _not_found(exc):
            return {}
        raise


def remove_image(ref: str) -> None:
    with _gone_is_fine():
        docker_client().api.remove_image(ref)


@dataclass(frozen=True)
class EngineStorage:
    """What the disk pre-flight asks of the engine (`docker info`)."""

    data_root: str
    """DockerRootDir: where layers are written."""
    os: str
    machine: str
    """The kernel's name for the CPU (`x86_64`, `aarch64`, `armv7l`)."""
    insecure_registries: tuple[str, ...]
    """Registries and CIDRs the engine reaches over plain HTTP."""


def engine_storage() -> EngineStorage:
    info = docker_client().api.info()
    registries = info.get("RegistryConfig") or {}
    indexes = registries.get("IndexConfigs") or {}
    insecure = [name for name, index in indexes.items() if not index.get("Secure")]
    return EngineStorage(
        data_root=str(info.get("DockerRootDir") or "/var/lib/docker"),
        os=str(info.get("OSType") or "linux"),
        machine=str(info.get("Architecture") or ""),
        insecure_registries=tuple(insecure + list(registries.get("InsecureRegistryCIDRs") or [])),
    )


def container_environment(container_id: str) -> dict[str, str]:
    config = docker_client().api.inspect_container(container_id).get("Config") or {}
    return dict(line.split("=", 1) for line in config.get("Env") or [] if "=" in line)


def remove_unused_supervised_volumes(keep: set[str]) -> list[str]:
    """Remove supervised volumes no container mounts (running or not) and not in `keep`;
    returns their names. Volumes without the supervisor's label are never touched."""
    api = docker_client().api
    mounted = {
        mount.get("Name")
        for container in api.containers(all=True)
        for mount in container.get("Mounts") or []
        if mount.get("Type") == "volume"
    }
    removed = []
    for volume in list_supervised_volumes():
        name = volume["Name"]
        if name in mounted or name in keep:
            continue
        with _gone_is_fine():
            api.remove_volume(name)
            removed.append(name)
    return removed


class EngineEvents:
    """Every container, network, volume and image event of the engine, from now on;
    `close()` ends the iteration from another thread."""

    def __init__(self) -> None:
        self._stream = docker_client().api.events(
            decode=True, filters={"type": ["container", "network", "volume", "image"]}
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        yield from self._stream

    def close(self) -> None:
        self._stream.close()


class ImageBuildFailed(Exception):
    """The engine refused a build (a Dockerfile error, a missing base image…)."""


def build_image(
    context: Path, *, tag: str, dockerfile: str | None, labels: dict[str, str], build_args: dict[str, str]
) -> Iterator[str]:
    """Build `context` into `tag` as `balena push` does (no pull, intermediate containers
    removed); yields the engine's output lines. Raises ImageBuildFailed."""
    stream = docker_client().api.build(
        path=str(context), tag=tag, dockerfile=dockerfile, labels=labels, buildargs=build_args,
        pull=False, rm=True, forcerm=True, decode=True,
    )  # fmt: skip
    for chunk in stream:
        if "error" in chunk:
            raise ImageBuildFailed(str(chunk.get("error", "")).strip())
        if line := str(chunk.get("stream", "")).rstrip():
            yield line


LOCAL_IMAGE_LABEL = "io.resin.local.image"


def list_local_mode_images() -> list[str]:
    """Ids of the images `balena push` (or `manage.py localmode push`) built on the engine."""
    return [image["Id"] for image in docker_client().api.images(filters={"label": f"{LOCAL_IMAGE_LABEL}=1"})]


def remove_image_by_id(image_id: str) -> None:
    """Remove the image with all its tags; tolerate one already gone."""
    with _gone_is_fine():
        docker_client().api.remove_image(image_id, force=True)
