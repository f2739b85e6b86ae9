"""A small fake of the balena API (docs/cloud.md "Cloud endpoints"), served over real
HTTP on 127.0.0.1 for the tests of the cloud client.

It keeps devices, their target states with ETags, device keys and tags; records every
request it gets; and can be scripted to answer a route differently for a while (a 500,
a `Retry-After`, a body that is not JSON, a slow answer).
"""

from __future__ import annotations

import gzip
import json
import re
import ssl
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from uuid import uuid4


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)
    """When it arrived (time.monotonic)."""


@dataclass
class Scripted:
    """One canned answer: status, headers, raw body, and a delay before it (or, with
    `stall`, no answer until the test sets that event)."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    stall: threading.Event | None = None


@dataclass
class FakeDevice:
    uuid: str
    device_id: int
    api_key: str
    application: int
    device_type: str
    name: str = ""
    config_variables: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    pinned_release: int | None = None
    frozen: bool = False
    """As balenaCloud's frozen devices (open-balena-api's `is_frozen`): the target GET answers
    304, state reports and log streams 401."""


@dataclass(frozen=True)
class FakeRelease:
    """A successful release the cloud knows: set_target records those of each document."""

    release_id: int
    app_uuid: str
    commit: str
    images: frozenset[str]
    """Its services' image names (before any `@digest`)."""


class FakeCloud:
    def __init__(self, provisioning_key: str = "provisioning-key-0123456789abcdef") -> None:
        self.provisioning_key = provisioning_key
        self.devices: dict[str, FakeDevice] = {}
        self.targets: dict[str, tuple[str, bytes]] = {}
        """uuid → (ETag, body) of its target state."""
        self.releases: dict[tuple[str, str], FakeRelease] = {}
        """(app uuid, commit) → the release, for state reports and pins to refer to."""
        self.received: list[Received] = []
        self.scripts: dict[str, list[Scripted]] = {}
        """"METHOD /path/pattern" → answers used (and removed) before the normal behaviour."""
        self.log_lines: list[dict[str, Any]] = []
        """The records uploaded to any log stream, in the order they arrived."""
        self.log_arrivals: list[float] = []
        """When each of log_lines arrived (time.time(), for latencies)."""
        self.log_streams_ended = 0
        """Log streams whose body the device ended (after being idle)."""
        self._lock = threading.Lock()
        self._next_id = 100
        self._server: ThreadingHTTPServer | None = None
        self._tls = False

    # --- set-up ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def start(self, *, tls: tuple[Path, Path] | None = None) -> None:
        """Serve plain HTTP, or HTTPS with `tls` = (certificate, key) files."""
        cloud = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                cloud._handle(self, "GET")

            def do_POST(self) -> None:
                cloud._handle(self, "POST")

            def do_PATCH(self) -> None:
                cloud._handle(self, "PATCH")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._tls = tls is not None
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, name="fake-cloud", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def add_device(self, uuid: str, api_key: str, *, application: int = 1) -> FakeDevice:
        with self._lock:
            self._next_id += 1
            device = FakeDevice(uuid, self._next_id, api_key, application, "genericx86-64-ext")
            self.devices[uuid] = device
            return device

    def set_target(self, uuid: str, document: dict[str, Any]) -> str:
        """Make `document` the device's target, and its releases known; returns its new ETag
        (weak, as Express makes them)."""
        body = json.dumps(document).encode()
        with self._lock:
            etag = f'W/"{abs(hash(body)) % 10**12}-{len(self.targets)}-{time.monotonic_ns()}"'
            self.targets[uuid] = (etag, body)
        for app_uuid, app in (document.get(uuid, {}).get("apps") or {}).items():
            for commit, release in (app.get("releases") or {}).items():
                images = [service["image"] for service in (release.get("services") or {}).values()]
                self.add_release(app_uuid, commit, int(release["id"]), images)
        return etag

    def add_release(self, app_uuid: str, commit: str, release_id: int, images: list[str]) -> None:
        """A successful release of the app (what `balena deploy` leaves in the cloud)."""
        with self._lock:
            names = frozenset(image.partition("@")[0] for image in images)
            self.releases[app_uuid, commit] = FakeRelease(release_id, app_uuid, commit, names)

    @staticmethod
    def application_uuid(app_id: int) -> str:
        """The uuid the fake gives the application with this id."""
        return f"{app_id:08d}" + "a" * 24

    def script(self, route: str, *answers: Scripted) -> None:
        """Answer the next requests matching `route` ("GET /device/v3/*/state") with these."""
        with self._lock:
            self.scripts.setdefault(route, []).extend(answers)

    def requests_to(self, method: str, pattern: str) -> list[Received]:
        """The requests to paths matching `pattern` (its query string aside)."""
        with self._lock:
            return [r for r in self.received
                    if r.method == method and _matches(pattern, r.path.partition("?")[0])]  # fmt: skip

    # --- serving ---------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        if method == "POST" and _matches("/device/v2/*/log-stream", handler.path):
            self._log_stream(handler)
            return
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        body: Any
        try:
            body = json.loads(raw) if raw else raw
        except ValueError:
            body = raw
        path = handler.path
        with self._lock:
            self.received.append(Received(method, path, dict(handler.headers.items()), body))
            scripted = self._take_script(method, path)
        if scripted is not None:
            time.sleep(scripted.delay)
            if scripted.stall is not None:
                scripted.stall.wait()
            self._answer(handler, scripted.status, scripted.body, scripted.headers)
            return
        status, payload, headers = self._route(method, path, dict(handler.headers.items()), body)
        self._answer(handler, status, payload, headers)

    def _log_stream(self, handler: BaseHTTPRequestHandler) -> None:
        """Read a long-lived gzip NDJSON body as it comes, answering only when it ends (or
        at once, to refuse it, when scripted to)."""
        headers = dict(handler.headers.items())
        with self._lock:
            self.received.append(Received("POST", handler.path, headers, b""))
            scripted = self._take_script("POST", handler.path)
        key = headers.get("Authorization", "").removeprefix("Bearer ")
        # src/features/device-logs/index.ts: deleted and frozen devices get a 401 (after 55 s
        # there; at once here).
        if scripted is None and not any(d.api_key == key and not d.frozen for d in self.devices.values()):
            scripted = Scripted(401, b"Unauthorized")
        # src/features/device-logs/lib/store.ts: exactly this media type, else 415.
        if scripted is None and headers.get("Content-Type") != "application/x-ndjson":
            scripted = Scripted(415, b"Unsupported Media Type")
        if scripted is not None:
            time.sleep(scripted.delay)
            handler.close_connection = True
            self._answer(handler, scripted.status, scripted.body, scripted.headers)
            return
        decompressor = zlib.decompressobj(wbits=31)
        partial = b""
        while True:
            size_line = handler.rfile.readline()
            if not size_line:
                return  # the device went away
            size = int(size_line.strip() or b"0", 16)
            data = handler.rfile.read(size) if size else b""
            handler.rfile.readline()
            *lines, partial = (partial + decompressor.decompress(data)).split(b"\n")
            arrived = time.time()
            with self._lock:
                self.log_lines.extend(json.loads(line) for line in lines)
                self.log_arrivals.extend(arrived for _ in lines)
            if size == 0:
                break
        with self._lock:
            self.log_streams_ended += 1
        self._answer(handler, 201, b"", {})

    def _take_script(self, method: str, path: str) -> Scripted | None:
        for route, answers in self.scripts.items():
            route_method, _, pattern = route.partition(" ")
            if route_method == method and _matches(pattern, path.partition("?")[0]) and answers:
                return answers.pop(0)
        return None

    def _route(
        self, method: str, path: str, headers: dict[str, str], body: Any
    ) -> tuple[int, bytes, dict[str, str]]:
        bare = path.partition("?")[0]
        key = headers.get("Authorization", "").removeprefix("Bearer ")
        if method == "POST" and bare == "/device/register":
            return self._register(key, body)
        if method == "GET" and bare == "/v7/device":
            return self._find_device(key, path)
        if method == "POST" and (match := re.fullmatch(r"/api-key/device/(\d+)/device-key", bare)):
            return self._exchange_key(key, int(match.group(1)), body)
        if method == "GET" and (match := re.fullmatch(r"/device/v3/([^/]+)/state", bare)):
            return self._target(match.group(1), key, headers)
        device = next((d for d in self.devices.values() if d.api_key == key), None)
        if method == "GET" and (match := re.fullmatch(r"/v7/application\((\d+)\)", bare)):
            # src/lib/auth.ts: the provisioning key's role may create devices and nothing else.
            if device is None:
                return 401, b"Unauthorized", {}
            found = json.dumps({"d": [{"uuid": self.application_uuid(int(match.group(1)))}]})
            return 200, found.encode(), {"Content-Type": "application/json"}
        if device is None or device.frozen:
            return 401, b"Unauthorized", {}
        if method == "PATCH" and bare == "/device/v3/state":
            if not valid_state_patch(body, device.uuid):
                return 400, b"", {}  # the real server's zod refusal: an empty body
            if not self._known_releases(body[device.uuid]):
                return 401, b"Unauthorized", {}
            return 200, b"OK", {}
        if method == "PATCH" and bare == "/device/v3/tags":
            return self._patch_tags(device, body)
        if method == "POST" and bare == "/v7/device_config_variable":
            return self._create_config_variable(device, body)
        if method == "PATCH" and bare == f"/v7/device({device.device_id})":
            return self._patch_device(device, body)
        if method == "GET" and bare == "/v7/device_tag":
            tags = [{"id": i, "tag_key": k, "value": v} for i, (k, v) in enumerate(device.tags.items(), 1)]
            return 200, json.dumps({"d": tags}).encode(), {"Content-Type": "application/json"}
        return 404, b"Not found", {}

    def _target(self, uuid: str, key: str, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        """src/features/device-state/index.ts, middleware.ts: an unknown, deleted or frozen
        uuid is answered 304 before any key is checked, If-None-Match or not. state-get-v3.ts:
        the fleet app is always there, releases or not; state-get-utils.ts setMinPollInterval:
        `config` always carries RESIN_SUPERVISOR_POLL_INTERVAL, a string of at least 600000;
        src/index.ts: answers are compressed (gzip) for a client that takes it."""
        device = self.devices.get(uuid)
        if device is None or device.frozen:
            return 304, b"", {}
        if key != device.api_key:
            return 401, b"Unauthorized", {}
        app = {"id": device.application, "name": "fleet", "is_host": False, "class": "fleet"}
        empty = {uuid: {"name": device.name or "fleet-device", "config": {},
                        "apps": {self.application_uuid(device.application): app}}}  # fmt: skip
        etag, target = self.targets.get(uuid, ('W/"empty"', json.dumps(empty).encode()))
        if headers.get("If-None-Match") == etag:
            return 304, b"", {"ETag": etag}
        document = json.loads(target)
        config = document[uuid].setdefault("config", {})
        given = str(config.get("RESIN_SUPERVISOR_POLL_INTERVAL", "0"))
        config["RESIN_SUPERVISOR_POLL_INTERVAL"] = str(max(int(given) if given.isdigit() else 0, 600_000))
        answer = json.dumps(document).encode()
        answer_headers = {"ETag": etag, "Content-Type": "application/json; charset=utf-8"}
        if "gzip" in headers.get("Accept-Encoding", ""):
            answer, answer_headers["Content-Encoding"] = gzip.compress(answer), "gzip"
        return 200, answer, answer_headers

    def _known_releases(self, state: dict[str, Any]) -> bool:
        """src/features/device-state/routes/state-patch-v3.ts: each app's reported releases
        (and `release_uuid`) must be successful releases of that app, and each service's
        image one of theirs; else the whole report is refused (401)."""
        for app_uuid, app in (state.get("apps") or {}).items():
            commits = set(app.get("releases") or {}) | (
                {app["release_uuid"]} if app.get("release_uuid") else set()
            )
            known = [
                self.releases[app_uuid, commit] for commit in commits if (app_uuid, commit) in self.releases
            ]
            if len(known) != len(commits):
                return False
            images = set().union(*(r.images for r in known))
            for release in (app.get("releases") or {}).values():
                for service in (release.get("services") or {}).values():
                    if service["image"].partition("@")[0] not in images:
                        return False
        return True

    def _create_config_variable(self, device: FakeDevice, body: Any) -> tuple[int, bytes, dict[str, str]]:
        """src/features/vars-schema/env-vars.ts and hooks/config-var-validation.ts: a name in
        the RESIN_/BALENA_ namespace of letters, digits and `_`, not a bare namespace; a value
        without line breaks, of at most 100 000 characters (field-size-limits/hooks.ts); one
        variable per name and device (409, as Pine answers a unique-key violation)."""
        name, value = (body.get("name"), body.get("value")) if isinstance(body, dict) else (None, None)
        if body.get("device") != device.device_id or not isinstance(name, str) or not isinstance(value, str):
            return 400, b"Bad Request", {}
        if re.search(r"^\d|\W", name) or name in ("RESIN", "BALENA", "USER"):
            return (
                400,
                b"Configuration variable names can only contain alphanumeric characters and underscores.",
                {},
            )
        if not name.startswith(("RESIN_", "BALENA_")):
            return (
                400,
                b"Configuration variables must be part of one of the following namespaces: RESIN_, BALENA_",
                {},
            )
        if re.search(r"[\r\n]", value) or len(value) > 100_000:
            return 400, b"Bad Request", {}
        if name in device.config_variables:
            return 409, b'"device" and "name" must be unique.', {}
        device.config_variables[name] = value
        return (
            201,
            json.dumps({"id": len(device.config_variables), "name": name, "value": value}).encode(),
            {},
        )

    def _patch_device(self, device: FakeDevice, body: Any) -> tuple[int, bytes, dict[str, str]]:
        """src/features/devices/hooks/defaults-validation.ts: a device name without line breaks,
        of at most 255 characters (Short Text); balena.sbvr: a device is pinned only to a
        successful release (here: one the fake knows)."""
        if not isinstance(body, dict):
            return 400, b"Bad Request", {}
        name = body.get("device_name", device.name)
        if not isinstance(name, str) or "\n" in name or len(name) > 255:
            return 400, b"Device name cannot contain any newline characters.", {}
        pin = body.get("is_pinned_on__release", device.pinned_release)
        if pin is not None and pin not in {release.release_id for release in self.releases.values()}:
            return (
                400,
                b"a pinned release must be a successful release",
                {},
            )
        device.name, device.pinned_release = name, pin
        return 200, b"OK", {}

    def _patch_tags(self, device: Any, body: Any) -> tuple[int, bytes, dict[str, str]]:
        """As open-balena-api refuses a tags report: the whole body for one bad tag
        (src/features/device-state/routes/tags-patch-v3.ts, src/features/tags/validation.ts:
        a key with whitespace or starting io.resin./io.balena.; field-size-limits/hooks.ts:
        a value over 10 000 characters), and an empty body."""
        tags = body.get(device.uuid) if isinstance(body, dict) else None
        if not isinstance(tags, dict) or not tags:
            return 400, b"", {}
        for key, value in tags.items():
            reserved = key.startswith(("io.resin.", "io.balena."))
            if reserved or re.search(r"\s", key) or not isinstance(value, str) or len(value) > 10_000:
                return 400, b"Bad Request", {}
        device.tags.update(tags)
        return 200, b"OK", {}

    def _register(self, key: str, body: Any) -> tuple[int, bytes, dict[str, str]]:
        if key != self.provisioning_key:
            return 401, b"Unauthorized", {}
        # src/features/device-provisioning/register.ts and
        # gracefully-deny-conflicting-registrations.ts: `api_key` is optional (one is made).
        if not isinstance(body, dict) or not body.get("uuid") or not body.get("device_type"):
            return 400, b"Bad Request", {}
        if body["uuid"] in self.devices:
            return 409, b'"uuid" must be unique.', {}
        if body.get("api_key") and any(d.api_key == body["api_key"] for d in self.devices.values()):
            return 409, b'"key" must be unique.', {}
        api_key = str(body.get("api_key") or uuid4().hex)
        device = self.add_device(body["uuid"], api_key, application=int(body["application"]))
        answer = {"id": device.device_id, "uuid": device.uuid, "api_key": device.api_key}
        return 201, json.dumps(answer).encode(), {"Content-Type": "application/json"}

    def _find_device(self, key: str, path: str) -> tuple[int, bytes, dict[str, str]]:
        match = re.search(r"uuid eq '([0-9a-f]+)'", unquote(path))
        uuid = match.group(1) if match else ""
        device = self.devices.get(uuid)
        if key == self.provisioning_key:
            return 401, b"Unauthorized", {}  # src/lib/auth.ts: it may not read devices
        if device is None or key != device.api_key:
            return 200, b'{"d": []}', {"Content-Type": "application/json"}
        return (
            200,
            json.dumps({"d": [{"id": device.device_id}]}).encode(),
            {"Content-Type": "application/json"},
        )

    def _exchange_key(self, key: str, device_id: int, body: Any) -> tuple[int, bytes, dict[str, str]]:
        """On openBalena the provisioning key may not make device keys (src/lib/auth.ts: its
        role only creates devices), so the agent's exchange always ends in a new identity."""
        device = next((d for d in self.devices.values() if d.device_id == device_id), None)
        if device is None or key != device.api_key:
            return 401, b"Unauthorized", {}
        device.api_key = str(body["apiKey"])
        return 200, b"OK", {}

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str]) -> None:
        if status == 304:
            body = b""
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


# The device-level fields of PATCH /device/v3/state and the types open-balena-api's zod schema
# takes (src/features/device-state/routes/state-patch-v3.ts); other keys are stripped.
_STATE_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(["status", "supervisor_version", "ip_address", "mac_address"], (str,)),
    **dict.fromkeys(["os_version", "os_variant", "provisioning_state", "api_secret", "storage_block_device",
                     "cpu_id"], (str, type(None))),
    "api_port": (int, float),
    **dict.fromkeys(["provisioning_progress", "memory_usage", "memory_total", "storage_usage",
                     "storage_total", "cpu_temp", "cpu_usage"], (int, float, type(None))),
    **dict.fromkeys(["is_undervolted", "is_online"], (bool,)),
}  # fmt: skip
UPDATE_STATUSES = {"rejected", "aborted", "downloading", "downloaded", "applying changes", "done"}


def valid_state_patch(body: Any, uuid: str) -> bool:
    """Whether the real server's schema takes this state report of device `uuid`."""
    if not isinstance(body, dict) or set(body) != {uuid} or not isinstance(body[uuid], dict):
        return False
    state = body[uuid]
    for name, types in _STATE_FIELD_TYPES.items():
        value = state.get(name)
        if name in state and (
            not isinstance(value, types) or (bool not in types and isinstance(value, bool))
        ):
            return False
    apps = state.get("apps", {})
    if not isinstance(apps, dict):
        return False
    for app in apps.values():
        if not isinstance(app, dict) or not isinstance(app.get("release_uuid", ""), str):
            return False
        for release in (app.get("releases") or {}).values():
            if not isinstance(release, dict) or release.get("update_status", "done") not in UPDATE_STATUSES:
                return False
            for service in (release.get("services") or {}).values():
                if not isinstance(service, dict) or not isinstance(service.get("image"), str):
                    return False
                if not isinstance(service.get("status"), str):
                    return False
    return True


def _matches(pattern: str, path: str) -> bool:
    regex = "^" + re.escape(pattern).replace(r"\*", "[^/]+") + "$"
    return re.match(regex, path) is not None


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made with openssl."""
    import subprocess

    certificate, key = directory / "cloud.crt", directory / "cloud.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(certificate)],
        check=True, capture_output=True,
    )  # fmt: skip
    return certificate, key
