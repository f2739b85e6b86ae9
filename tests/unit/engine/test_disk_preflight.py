"""The disk pre-flight's arithmetic: which manifest, which layers, how much room, and the
decision; the manifest reader against a token-protected stand-in registry; and the refusal
as the cloud's state report carries it."""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pytest_django.fixtures import SettingsWrapper

from apps_api.cloud.report import apps_report
from apps_api.engine.disk_preflight import (
    MB,
    InsufficientStorage,
    check_space,
    download_bytes,
    engine_platform,
)
from apps_api.engine.registry import (
    ImageName,
    Layer,
    ManifestUnavailable,
    Platform,
    RegistryClient,
    manifest_layers,
    parse_image_name,
    platform_manifest_digest,
    uses_plain_http,
)
from apps_api.engine.state import AppSpec, CurrentState, TargetState
from apps_api.engine.status import ServiceStatus
from apps_api.snapshot import DeviceSnapshot
from tests.fake_cloud import make_certificate
from tests.unit.engine.state_builders import svc

INDEX = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [
        {"digest": "sha256:amd64", "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": "sha256:armv6", "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
        {"digest": "sha256:armv7", "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
        {"digest": "sha256:arm64", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"digest": "sha256:attest", "platform": {"os": "unknown", "architecture": "unknown"}},
    ],
}


def manifest(*sizes: int, media_type: str = "application/vnd.docker.distribution.manifest.v2+json") -> dict:
    return {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"digest": "sha256:config", "size": 1000},
        "layers": [{"digest": f"sha256:layer{n}", "size": size} for n, size in enumerate(sizes)],
    }


# --- which manifest --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("platform", "digest"),
    [
        (Platform("linux", "amd64"), "sha256:amd64"),
        (Platform("linux", "arm", "v7"), "sha256:armv7"),
        (Platform("linux", "arm", "v6"), "sha256:armv6"),
        # An index that names arm64's variant still serves a device that does not.
        (Platform("linux", "arm64"), "sha256:arm64"),
    ],
)
def test_a_manifest_list_gives_the_devices_platform(platform: Platform, digest: str) -> None:
    assert platform_manifest_digest(INDEX, platform) == digest


def test_a_manifest_list_without_the_devices_platform_is_unavailable() -> None:
    with pytest.raises(ManifestUnavailable, match="no manifest for linux/riscv64"):
        platform_manifest_digest(INDEX, Platform("linux", "riscv64"))


@pytest.mark.parametrize(
    ("device_arch", "machine", "platform"),
    [
        ("amd64", "x86_64", Platform("linux", "amd64")),
        ("aarch64", "aarch64", Platform("linux", "arm64")),
        ("armv7hf", "aarch64", Platform("linux", "arm", "v7")),  # a 32-bit OS on a 64-bit kernel
        ("rpi", "armv6l", Platform("linux", "arm", "v6")),
        ("i386-nlp", "i686", Platform("linux", "386")),
        ("", "aarch64", Platform("linux", "arm64")),  # no device type: the engine's machine
    ],
)
def test_the_platform_is_the_device_types_else_the_engines(
    device_arch: str, machine: str, platform: Platform
) -> None:
    assert engine_platform(device_arch, "linux", machine) == platform


# --- which layers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "media_type",
    ["application/vnd.docker.distribution.manifest.v2+json", "application/vnd.oci.image.manifest.v1+json"],
)
def test_schema2_and_oci_manifests_give_their_layers(media_type: str) -> None:
    assert manifest_layers(manifest(10, 20, media_type=media_type)) == [
        Layer("sha256:layer0", 10),
        Layer("sha256:layer1", 20),
    ]


def test_a_schema1_manifest_is_unavailable() -> None:
    with pytest.raises(ManifestUnavailable):
        manifest_layers({"schemaVersion": 1, "fsLayers": [{"blobSum": "sha256:a"}]})


def test_only_layers_not_on_disk_are_downloaded() -> None:
    layers = manifest_layers(manifest(100, 200, 300))
    assert download_bytes(layers, present=set()) == 600
    assert download_bytes(layers, present={"sha256:layer0", "sha256:layer2"}) == 200
    assert download_bytes(layers, present={layer.digest for layer in layers}) == 0


def test_a_layer_listed_twice_is_downloaded_once() -> None:
    layer = Layer("sha256:same", 50)
    assert download_bytes([layer, layer, Layer("sha256:other", 7)], present=()) == 57


# --- room ---------------------------------------------------------------------------------------------


def test_the_reserve_is_part_of_the_need() -> None:
    check = check_space(download=100 * MB, reserve=256 * MB, free=400 * MB)
    assert (check.need_bytes, check.have_bytes, check.fits) == (356 * MB, 400 * MB, True)
    assert not check_space(download=100 * MB, reserve=256 * MB, free=300 * MB).fits


def test_exactly_filling_to_the_reserve_fits() -> None:
    assert check_space(download=1, reserve=2, free=3).fits
    assert not check_space(download=1, reserve=2, free=2).fits


def test_downloads_already_under_way_are_counted() -> None:
    assert check_space(download=100, reserve=0, free=150).fits
    assert not check_space(download=100, reserve=0, free=150, claimed=60).fits


def test_a_negative_reserve_counts_as_none() -> None:
    assert check_space(download=10, reserve=-1000, free=10).fits


def test_the_refusal_says_what_is_needed_and_what_there_is_in_whole_mb() -> None:
    # Need rounds up and have rounds down, so that the two never read as fitting.
    error = InsufficientStorage(need_bytes=356 * MB + 1, have_bytes=357 * MB - 1)
    assert str(error) == "Insufficient storage: need 357 MB, have 356 MB"


# --- names and transport ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "name"),
    [
        ("busybox", ImageName("registry-1.docker.io", "library/busybox", "latest")),
        ("docker.io/library/busybox:1.36", ImageName("registry-1.docker.io", "library/busybox", "1.36")),
        ("balena/open-balena-api:v1", ImageName("registry-1.docker.io", "balena/open-balena-api", "v1")),
        ("127.0.0.1:5000/test/app:v1", ImageName("127.0.0.1:5000", "test/app", "v1")),
        ("localhost/app", ImageName("localhost", "app", "latest")),
        (
            "registry2.balena-cloud.com/v2/abc@sha256:0123",
            ImageName("registry2.balena-cloud.com", "v2/abc", "sha256:0123"),
        ),
        ("127.0.0.1:5000/app:v1@sha256:0123", ImageName("127.0.0.1:5000", "app", "sha256:0123")),
    ],
)
def test_image_names_split_into_registry_repository_and_reference(image: str, name: ImageName) -> None:
    assert parse_image_name(image) == name


@pytest.mark.parametrize(
    ("registry", "insecure", "plain"),
    [
        ("127.0.0.1:5000", (), True),
        ("localhost:5000", (), True),
        ("registry.example.com", (), False),
        ("registry.example.com:5000", ("registry.example.com:5000",), True),
        ("10.1.2.3:5000", ("10.0.0.0/8",), True),
        ("192.168.1.2:5000", ("10.0.0.0/8",), False),
    ],
)
def test_loopback_and_insecure_registries_are_plain_http(
    registry: str, insecure: tuple[str, ...], plain: bool
) -> None:
    assert uses_plain_http(registry, insecure) is plain


# --- the reader against a token-protected registry -----------------------------------------------------


class StandInRegistry(BaseHTTPRequestHandler):
    """A registry that wants a bearer token from its token service (the same server).
    A stand-in: a real token-auth registry needs a token server and certificates."""

    manifests: dict[str, tuple[str, dict[str, Any]]] = {}
    odd_answers: dict[str, Any] = {}
    """Reference → a function answering it instead (a redirect, HTML, a huge body...)."""
    token_requests: list[dict[str, Any]] = []
    scheme = "http"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/token":
            self.token_requests.append(
                {"query": parse_qs(url.query), "authorization": self.headers.get("Authorization")}
            )
            self._send(200, "application/json", {"token": "let-me-in"})
            return
        reference = url.path.rsplit("/", 1)[-1]
        if reference in self.odd_answers:
            self.odd_answers[reference](self)
            return
        if self.headers.get("Authorization") != "Bearer let-me-in":
            port = self.server.server_address[1]
            self.send_response(401)
            self.send_header(
                "WWW-Authenticate",
                f'Bearer realm="{self.scheme}://127.0.0.1:{port}/token",service="stand-in",'
                'scope="repository:app:pull"',
            )
            self.end_headers()
            return
        if reference not in self.manifests:
            self._send(404, "application/json", {"errors": [{"code": "MANIFEST_UNKNOWN"}]})
            return
        media_type, body = self.manifests[reference]
        self._send(200, media_type, body)

    def _send(self, status: int, media_type: str, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_stand_in_registry(tls: tuple[Path, Path] | None = None) -> ThreadingHTTPServer:
    StandInRegistry.manifests = {
        "v1": ("application/vnd.oci.image.index.v1+json", INDEX),
        "sha256:armv7": ("application/vnd.docker.distribution.manifest.v2+json", manifest(5, 6)),
    }
    StandInRegistry.token_requests = []
    StandInRegistry.odd_answers = {}
    StandInRegistry.scheme = "https" if tls else "http"
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandInRegistry)
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def stand_in_registry() -> Iterator[str]:
    server = serve_stand_in_registry()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def private_ca_registry(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The stand-in over HTTPS, its token realm too, signed by a CA only config.json's
    balenaRootCA names (as an openBalena registry and API are)."""
    certificate, key = make_certificate(tmp_path)
    server = serve_stand_in_registry((certificate, key))
    yield f"127.0.0.1:{server.server_address[1]}", certificate
    server.shutdown()
    server.server_close()


def test_the_reader_answers_a_token_challenge_and_follows_the_list_to_the_platform(
    stand_in_registry: str,
) -> None:
    client = RegistryClient(stand_in_registry, {"username": "d_abc", "password": "key"}, plain_http=True)

    layers = client.image_layers(ImageName(stand_in_registry, "app", "v1"), Platform("linux", "arm", "v7"))

    assert layers == [Layer("sha256:layer0", 5), Layer("sha256:layer1", 6)]
    assert len(StandInRegistry.token_requests) == 1, "one token serves the repository's reads"
    [token_request] = StandInRegistry.token_requests
    assert token_request["query"] == {"service": ["stand-in"], "scope": ["repository:app:pull"]}
    assert token_request["authorization"] == "Basic " + base64.b64encode(b"d_abc:key").decode()


def test_a_registry_and_token_realm_signed_by_the_private_root_ca_are_trusted(
    private_ca_registry: tuple[str, Path], tmp_path: Path, settings: SettingsWrapper
) -> None:
    registry, certificate = private_ca_registry
    settings.SUPERVISOR_DATA_DIR = str(tmp_path / "data")
    settings.SUPERVISOR_CONFIG_JSON = str(tmp_path / "config.json")
    config = tmp_path / "config.json"
    client = RegistryClient(registry, {"username": "d_abc", "password": "key"})
    wanted = (ImageName(registry, "app", "v1"), Platform("linux", "arm", "v7"))

    config.write_text(json.dumps({"registryEndpoint": registry}))
    with pytest.raises(ManifestUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        client.image_layers(*wanted)

    root_ca = base64.b64encode(certificate.read_bytes()).decode()
    config.write_text(json.dumps({"registryEndpoint": registry, "balenaRootCA": root_ca}))
    assert client.image_layers(*wanted) == [Layer("sha256:layer0", 5), Layer("sha256:layer1", 6)]
    [token_request] = StandInRegistry.token_requests
    assert token_request["authorization"] == "Basic " + base64.b64encode(b"d_abc:key").decode()


def test_a_missing_manifest_is_unavailable(stand_in_registry: str) -> None:
    client = RegistryClient(stand_in_registry, None, plain_http=True)
    with pytest.raises(ManifestUnavailable, match="404"):
        client.image_layers(ImageName(stand_in_registry, "app", "v9"), Platform("linux", "amd64"))


class Elsewhere(BaseHTTPRequestHandler):
    """Another host (port): records what it is sent."""

    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:
        self.seen.append(dict(self.headers.items()))
        self.send_response(401)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def elsewhere() -> Iterator[str]:
    Elsewhere.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Elsewhere)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def redirect_to(location: str) -> Any:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return answer


def test_a_redirect_elsewhere_is_followed_without_the_devices_credentials(
    stand_in_registry: str, elsewhere: str
) -> None:
    StandInRegistry.odd_answers["moved"] = redirect_to(f"http://{elsewhere}/v2/app/manifests/moved")
    client = RegistryClient(stand_in_registry, {"username": "d_abc", "password": "key"}, plain_http=True)
    with pytest.raises(ManifestUnavailable):
        client.image_layers(ImageName(stand_in_registry, "app", "moved"), Platform("linux", "amd64"))
    [request] = Elsewhere.seen
    assert "Authorization" not in request


@pytest.mark.parametrize("location", ["ftp://127.0.0.1/x", "file:///etc/passwd"])
def test_a_redirect_out_of_http_is_refused(stand_in_registry: str, location: str) -> None:
    StandInRegistry.odd_answers["moved"] = redirect_to(location)
    client = RegistryClient(stand_in_registry, None, plain_http=True)
    with pytest.raises(ManifestUnavailable, match=r"(?i)redirect"):
        client.image_layers(ImageName(stand_in_registry, "app", "moved"), Platform("linux", "amd64"))


def test_a_token_realm_on_another_host_over_plain_http_is_not_sent_the_credentials(
    stand_in_registry: str, elsewhere: str
) -> None:
    def challenge(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(401)
        handler.send_header("WWW-Authenticate", f'Bearer realm="http://{elsewhere}/token",service="x"')
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    StandInRegistry.odd_answers["v1"] = challenge
    client = RegistryClient(stand_in_registry, {"username": "d_abc", "password": "key"}, plain_http=True)
    with pytest.raises(ManifestUnavailable, match="not HTTPS"):
        client.image_layers(ImageName(stand_in_registry, "app", "v1"), Platform("linux", "amd64"))
    assert Elsewhere.seen == []


def answer_with(status: int, headers: dict[str, str], body: bytes, *, dribble: float = 0.0) -> Any:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        for byte in range(len(body)) if dribble else ():
            handler.wfile.write(body[byte : byte + 1])
            handler.wfile.flush()
            time.sleep(dribble)
        if not dribble:
            handler.wfile.write(body)

    return answer


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (answer_with(200, {"Content-Type": "text/html"}, b"<html>captive portal</html>"), "Expecting value"),
        (answer_with(200, {"Content-Length": str(50 * 1024 * 1024)}, b"{}"), "over 4194304"),
        (answer_with(200, {}, b"[" + b"1," * (3 * 1024 * 1024) + b"1]"), "over 4194304"),
        (answer_with(200, {"Content-Length": "100"}, b'{"layers": ['), "IncompleteRead|Expecting"),
    ],
    ids=["html", "declared too large", "too large", "truncated"],
)
def test_an_answer_that_is_not_a_manifest_is_unavailable(
    stand_in_registry: str, answer: Any, said: str
) -> None:
    StandInRegistry.odd_answers["odd"] = answer
    client = RegistryClient(stand_in_registry, None, plain_http=True)
    with pytest.raises(ManifestUnavailable, match=said):
        client.image_layers(ImageName(stand_in_registry, "app", "odd"), Platform("linux", "amd64"))


def test_a_registry_that_sends_slowly_is_given_up_on(
    stand_in_registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("apps_api.engine.registry.EXCHANGE_SECONDS", 0.5)
    StandInRegistry.odd_answers["slow"] = answer_with(200, {}, b'{"layers": []}', dribble=0.1)
    client = RegistryClient(stand_in_registry, None, plain_http=True)
    with pytest.raises(ManifestUnavailable, match="took over"):
        client.image_layers(ImageName(stand_in_registry, "app", "slow"), Platform("linux", "amd64"))


def test_a_registry_that_does_not_answer_is_unavailable() -> None:
    client = RegistryClient("127.0.0.1:9", None, plain_http=True)
    with pytest.raises(ManifestUnavailable):
        client.image_layers(ImageName("127.0.0.1:9", "app", "v1"), Platform("linux", "amd64"))


# --- what the cloud is told ------------------------------------------------------------------------------


def test_the_state_report_carries_the_refusal_as_the_services_status() -> None:
    refusal = str(InsufficientStorage(need_bytes=300 * MB, have_bytes=200 * MB))
    app = AppSpec(app_id=1, app_uuid="appuuid", name="app", services=(svc("main", commit="c2"),), commit="c2")
    snapshot = DeviceSnapshot(
        target=TargetState(name="device", config={}, apps=(app,)),
        current=CurrentState(),
        statuses=(ServiceStatus(1, "main", refusal),),
        flags={"update_failed": True},
        image_progress={},
        applying=True,
    )

    release = apps_report(snapshot)["appuuid"]["releases"]["c2"]

    assert release["services"]["main"]["status"] == "Insufficient storage: need 300 MB, have 200 MB"
    assert release["update_status"] == "aborted", "the apply failed and will be retried"
