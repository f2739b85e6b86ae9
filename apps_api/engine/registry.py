"""The one module that reads image manifests from a Docker registry (the v2 HTTP API).

Only what the disk pre-flight needs: the compressed layers an image reference stands for,
on this device's platform. Manifest lists and OCI indexes are followed to the platform's
manifest; Docker v2 schema 2 and OCI image manifests give the layers. Token auth (a
`WWW-Authenticate: Bearer` challenge) and Basic auth are answered with the credentials the
pull itself would use. Anything else (schema 1, a registry without the v2 API, a timeout,
an answer that is not JSON or is too large) is `ManifestUnavailable`: the caller decides
what not knowing means.

The device's credentials go only where the pull would send them: to the registry, over
the scheme it was reached with, and to its token service over HTTPS (or plain HTTP on the
registry's own host, for a plain-HTTP registry). A redirect is followed without them, and
never to anything but HTTP(S) nor from HTTPS down to HTTP.
Answers are bounded: 4 MiB for a manifest (Docker's own limit), 64 KiB for a token, and
30 s for each exchange, however slowly the server sends.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from hostcfg.cloud_trust import cloud_ssl_context

REQUEST_TIMEOUT_SECONDS = 10
EXCHANGE_SECONDS = 30
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_TOKEN_BYTES = 64 * 1024
DOCKER_HUB_REGISTRY = "registry-1.docker.io"
DOCKER_HUB_NAMES = ("docker.io", "index.docker.io", DOCKER_HUB_REGISTRY)

INDEX_TYPES = (
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)
MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)
ACCEPT = ", ".join(INDEX_TYPES + MANIFEST_TYPES)


class ManifestUnavailable(Exception):
    """The registry did not say which layers the image has."""


@dataclass(frozen=True)
class ImageName:
    """A reference split as the registry API wants it."""

    registry: str
    repository: str
    reference: str
    """A tag, or a `sha256:` digest."""


@dataclass(frozen=True)
class Platform:
    """What the engine pulls for: OCI names (`linux`, `arm64`, `arm` + `v7`)."""

    os: str
    architecture: str
    variant: str = ""


@dataclass(frozen=True)
class Layer:
    digest: str
    size: int
    """Compressed bytes, as the registry sends them."""


def parse_image_name(image: str) -> ImageName:
    """`[registry/]repository[:tag][@digest]` → its parts; Docker Hub's when no registry is
    named (a first component without `.` or `:` that is not `localhost` is a namespace)."""
    name, _, digest = image.partition("@")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = DOCKER_HUB_REGISTRY, name
    if registry in DOCKER_HUB_NAMES:
        registry = DOCKER_HUB_REGISTRY
    repository, tag = path, "latest"
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        repository, _, tag = path.rpartition(":")
    if registry == DOCKER_HUB_REGISTRY and "/" not in repository:
        repository = f"library/{repository}"
    return ImageName(registry, repository, digest or tag)


def platform_manifest_digest(index: dict[str, Any], platform: Platform) -> str:
    """The digest of `platform`'s manifest in a manifest list / OCI index: the exact
    os/architecture/variant, else the same os/architecture with any variant."""
    entries = [m for m in index.get("manifests") or [] if isinstance(m, dict)]

    def matches(entry: dict[str, Any], *, variant: bool) -> bool:
        wanted = entry.get("platform") or {}
        return (
            wanted.get("os") == platform.os
            and wanted.get("architecture") == platform.architecture
            and (not variant or (wanted.get("variant") or "") == platform.variant)
        )

    for exact in (True, False):
        for entry in entries:
            if matches(entry, variant=exact) and entry.get("digest"):
                return str(entry["digest"])
    wanted = "/".join(part for part in (platform.os, platform.architecture, platform.variant) if part)
    raise ManifestUnavailable(f"no manifest for {wanted}")


def manifest_layers(manifest: dict[str, Any]) -> list[Layer]:
    """The layers of an image manifest (Docker v2 schema 2 or OCI), in order."""
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise ManifestUnavailable("the manifest lists no layers")
    try:
        return [Layer(str(layer["digest"]), int(layer["size"])) for layer in layers]
    except (KeyError, TypeError, ValueError) as exc:
        raise ManifestUnavailable(f"a layer without digest or size: {exc}") from exc


@dataclass
class RegistryClient:
    """Reads manifests of one registry. `plain_http` for loopback and insecure registries;
    `auth` (`username`, `password`) as given to the engine's pull."""

    registry: str
    auth: dict[str, str] | None = None
    plain_http: bool = False

    def __post_init__(self) -> None:
        # Repository → the Authorization header that opened it (a token's scope is one repository).
        self._authorizations: dict[str, str] = {}

    def image_layers(self, name: ImageName, platform: Platform) -> list[Layer]:
        """The layers `name` stands for on `platform`."""
        media_type, body = self._manifest(name.repository, name.reference)
        if media_type in INDEX_TYPES or "manifests" in body:
            digest = platform_manifest_digest(body, platform)
            media_type, body = self._manifest(name.repository, digest)
        return manifest_layers(body)

    def _manifest(self, repository: str, reference: str) -> tuple[str, dict[str, Any]]:
        scheme = "http" if self.plain_http else "https"
        url = f"{scheme}://{self.registry}/v2/{repository}/manifests/{reference}"
        media_type, body = self._get(url, repository)
        if not isinstance(body, dict):
            raise ManifestUnavailable("the manifest is not a JSON object")
        return str(body.get("mediaType") or media_type), body

    def _get(self, url: str, repository: str) -> tuple[str, Any]:
        try:
            try:
                return _fetch_json(url, self._authorizations.get(repository), MAX_MANIFEST_BYTES)
            except urllib.error.HTTPError as exc:
                if exc.code != 401 or repository in self._authorizations:
                    raise
                challenge = exc.headers.get("WWW-Authenticate") or ""
                self._authorizations[repository] = self._answer(challenge, repository)
                return _fetch_json(url, self._authorizations[repository], MAX_MANIFEST_BYTES)
        # HTTPError and URLError are OSErrors; JSON that does not parse is a ValueError.
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise ManifestUnavailable(f"{url}: {exc}") from exc

    def _answer(self, challenge: str, repository: str) -> str:
        """The Authorization header that answers the registry's challenge."""
        scheme, _, params_text = challenge.partition(" ")
        basic = self._basic()
        if scheme.lower() == "basic" and basic:
            return basic
        if scheme.lower() != "bearer":
            raise ManifestUnavailable(f"unsupported auth challenge {challenge!r}")
        params = dict(re.findall(r'(\w+)="([^"]*)"', params_text))
        realm = params.pop("realm", "")
        if not self._may_ask(realm):
            raise ManifestUnavailable(f"refusing the token realm {realm!r}: not HTTPS")
        params.setdefault("scope", f"repository:{repository}:pull")
        token_url = f"{realm}?{urllib.parse.urlencode(params)}"
        _media_type, answer = _fetch_json(token_url, basic, MAX_TOKEN_BYTES)
        token = answer.get("token") or answer.get("access_token") if isinstance(answer, dict) else None
        if not token:
            raise ManifestUnavailable("the token service gave no token")
        return f"Bearer {token}"

    def _may_ask(self, realm: str) -> bool:
        """A token service may be sent the credentials: over HTTPS, or at the registry's own
        host and port when the registry itself is plain HTTP (a loopback or insecure one)."""
        parts = urllib.parse.urlsplit(realm)
        if parts.scheme == "https" and parts.hostname:
            return True
        return self.plain_http and parts.scheme == "http" and parts.netloc.lower() == self.registry.lower()

    def _basic(self) -> str | None:
        if not self.auth:
            return None
        pair = f"{self.auth.get('username', '')}:{self.auth.get('password', '')}".encode()
        return "Basic " + base64.b64encode(pair).decode()


def uses_plain_http(registry: str, insecure: tuple[str, ...]) -> bool:
    """Whether the engine reaches `registry` over plain HTTP: a loopback registry, or one its
    configuration calls insecure (by name, or an IP address inside an insecure CIDR)."""
    host = registry.split("]")[0].lstrip("[") if registry.startswith("[") else registry.rsplit(":", 1)[0]
    if host in ("localhost", "127.0.0.1", "::1") or registry in insecure or host in insecure:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name inside an insecure CIDR is not resolved: HTTPS fails, the check is skipped
    for entry in insecure:
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


class _GuardedRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects to HTTP(S) only, never from HTTPS down to HTTP. The credentials are an
    unredirected header: urllib never carries them to where a redirect leads."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        old, new = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
        if new.scheme not in ("http", "https") or (old.scheme == "https" and new.scheme == "http"):
            raise urllib.error.HTTPError(newurl, code, f"refused redirect to {newurl}", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _fetch_json(url: str, authorization: str | None, limit: int) -> tuple[str, Any]:
    """GET `url` as JSON: (its media type, the parsed body). Raises urllib's errors,
    ValueError for a body that is too large or not JSON, TimeoutError past EXCHANGE_SECONDS."""
    # Only http(s) URLs reach here: the registry's own, and the realm its challenge names.
    request = urllib.request.Request(url, headers={"Accept": ACCEPT})  # noqa: S310
    if authorization:
        request.add_unredirected_header("Authorization", authorization)
    # The cloud's registry may be an openBalena one, signed by its private root CA.
    opener = urllib.request.build_opener(
        _GuardedRedirects, urllib.request.HTTPSHandler(context=cloud_ssl_context())
    )
    deadline = time.monotonic() + EXCHANGE_SECONDS
    with opener.open(request, timeout=REQUEST_TIMEOUT_SECONDS) as response:
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ValueError(f"the answer is {declared} bytes, over {limit}")
        body = bytearray()
        while chunk := response.read1(65536):
            body += chunk
            if len(body) > limit:
                raise ValueError(f"the answer is over {limit} bytes")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the answer took over {EXCHANGE_SECONDS} s")
        return response.headers.get_content_type(), json.loads(body)
