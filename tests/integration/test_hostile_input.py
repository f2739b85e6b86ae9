"""Bad requests against the real web process: wrong types, odd and huge ids, odd methods,
oversized, truncated and malformed bodies, unknown fields. None may get a 5xx, none may
act (the running service is not restarted, no host action is asked for, the target stays),
and the web process stays healthy."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker
import pytest
import requests

from apps_api.apikeys import find_api_key, get_or_create_global_key
from apps_api.engine.docker import TTY_LINE_BYTES
from apps_api.models import TargetRecord
from tests.agent_process import Agent
from tests.host_bus import HostBus
from tests.integration.conftest import WebProcess
from tests.integration.engine_helpers import apply, local_target, set_target, supervised_containers
from tests.integration.log_stream_clients import NdjsonClient

pytestmark = pytest.mark.django_db(transaction=True)

ARABIC_ONE = "\u0661"  # str.isdigit() says yes, int() reads 1
BAD_IDS = ["²", ARABIC_ONE, "0", "-1", "1.5", "abc", "9" * 30, "1e3", "0x1", "+1", "%00", "1%20", "%C2%B2"]
BAD_VALUES: list[Any] = ["letters", [], {}, True, 1.5, -1, "²", "1 1", 2**64, {"a": 1}]
BAD_FLAGS: list[Any] = ["maybe", [], {}, 2, -1, 1.5, "yes please", {"force": True}]
MALFORMED_BODIES = ["{", '{"appId": 1', "[", '"text"', "123", "null", "[1, 2]", "\udcff", '{"appId": 1}}']
APP_ROUTES = [
    "/v1/apps/{id}/stop",
    "/v1/apps/{id}/start",
    "/v2/applications/{id}/restart-service",
    "/v2/applications/{id}/stop-service",
    "/v2/applications/{id}/start-service",
    "/v2/applications/{id}/restart",
    "/v2/applications/{id}/purge",
]
SERVICE_ROUTES = [route.format(id=1) for route in APP_ROUTES if route.endswith("-service")]
BODY_ROUTES = ["/v1/restart", "/v1/purge", "/v1/reboot", "/v1/shutdown", *SERVICE_ROUTES,
               "/v2/applications/1/restart", "/v2/applications/1/purge", "/v1/apps/1/stop"]  # fmt: skip


def hostile_requests() -> Iterator[tuple[str, str, Any]]:
    """(method, path, body): a body that is a str is sent as it is, else as JSON."""
    for route in APP_ROUTES:
        for bad in BAD_IDS:
            yield "POST", route.format(id=bad), {"serviceName": "main"}
    for bad in BAD_IDS:
        yield "GET", f"/v2/applications/{bad}/state", None
        yield "GET", f"/v1/apps/{bad}", None
        if bad != "0":  # since=0: every kept record, a fine request
            yield "GET", f"/v2/local/logs?since={bad}", None
    for route in ("/v1/restart", "/v1/purge"):
        for bad in [*BAD_VALUES, None, "", 2**53 + 1]:
            yield "POST", route, {"appId": bad, "unknown": "field"}
        for flag in BAD_FLAGS:
            yield "POST", route, {"appId": 1, "force": flag}
    for route in SERVICE_ROUTES:
        for bad in BAD_VALUES:
            if not isinstance(bad, str) or bad in ("letters", "²", "1 1"):
                yield "POST", route, {"imageId": bad}
            if not isinstance(bad, str):
                yield "POST", route, {"serviceName": bad}
        for flag in BAD_FLAGS:
            yield "POST", route, {"serviceName": "main", "force": flag}
    for route in ("/v1/reboot", "/v1/shutdown", "/v2/applications/1/restart", "/v2/applications/1/purge"):
        for flag in BAD_FLAGS:
            yield "POST", route, {"force": flag}
    for flag in BAD_FLAGS:
        yield "POST", "/v1/update", {"force": flag}
        yield "POST", "/v1/update", {"cancel": flag}
    for route in BODY_ROUTES:
        for body in MALFORMED_BODIES:
            yield "POST", route, body
        for method in ("PUT", "DELETE", "PATCH", "TRACE", "FOO"):
            yield method, route, {}
    for body in [
        *MALFORMED_BODIES,
        {},
        {"local": []},
        {"local": {"apps": {"x": 1}}},
        {"local": {"apps": "²"}},
    ]:
        yield "POST", "/v2/local/target-state", body
    for bad in [*BAD_VALUES, "", "a" * 300, "-bad-", "a b"]:
        yield "PATCH", "/v1/device/host-config", {"network": {"hostname": bad}}
        yield "PATCH", "/v1/device/host-config", {"network": {"proxy": {"port": bad}}}
    for body in [[], "x", {"tags": "x"}, {"tags": [1]}]:
        yield "PATCH", "/v2/device/tags", body
    for query in ("count=x", "count=-1", "unit=" + "x" * 300, "format=evil", "all=maybe"):
        yield "POST", f"/v2/journal-logs?{query}", {"count": "x", "format": "evil"}
    for path in every_route():
        yield "HEAD", path, None


# HEAD runs a route's GET view (Django); these act or stream by design (audited, or a stream
# whose HEAD would follow the logs).
HEAD_LEFT_OUT = {"/v2/cleanup-volumes", "/v2/local/logs", "/v2/local/logs/ws"}


def every_route() -> list[str]:
    """A path for each route of the device API and local mode, ids filled with 1."""
    from apps_api.api.urls import urlpatterns as api_routes
    from localmode.urls import urlpatterns as local_routes

    paths = ["/" + re.sub(r"<[^>]+>", "1", str(route.pattern)) for route in [*api_routes, *local_routes]]
    return sorted(set(paths) - HEAD_LEFT_OUT)


def send(web: WebProcess, method: str, path: str, body: Any) -> requests.Response:
    data = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if body is not None else {}
    return requests.request(method, web.base_url + path, data=None if body is None else data, headers=headers,
                            timeout=30, stream=True)  # fmt: skip


@pytest.fixture
def running_service(engine: str, host_bus: HostBus) -> str:
    apply(local_target({"main": {}}, image=engine))
    return engine


def test_hostile_requests_get_no_5xx_and_change_nothing(
    running_service: str, shared_web: WebProcess, host_bus: HostBus
) -> None:
    before = {name: (c.id, c.attrs["State"]["StartedAt"]) for name, c in supervised_containers().items()}
    targets = TargetRecord.objects.count()
    tried, server_errors = 0, []
    for method, path, body in hostile_requests():
        response = send(shared_web, method, path, body)
        tried += 1
        if path.startswith("/v2/local/logs") and response.status_code == 200:
            server_errors.append((method, path, body, "a bad since was streamed"))
        response.close()
        if response.status_code >= 500:
            server_errors.append((method, path, body, response.status_code))
        assert "ErrorDetail" not in (response.text if response.status_code != 200 else ""), (method, path)
    print(f"hostile requests tried: {tried}, answered 5xx: {len(server_errors)}")
    assert tried >= 300
    assert server_errors == []
    after = {name: (c.id, c.attrs["State"]["StartedAt"]) for name, c in supervised_containers().items()}
    assert after == before
    assert [c.member for c in host_bus.services.calls if c.member in ("Reboot", "PowerOff")] == []
    assert TargetRecord.objects.count() == targets
    assert shared_web.get("/v1/healthy").status_code == 200
    assert shared_web.process.poll() is None


def test_an_invalid_image_id_is_refused_before_anything_happens(
    running_service: str, shared_web: WebProcess
) -> None:
    container = supervised_containers()["main"]
    response = send(shared_web, "POST", "/v2/applications/1/restart-service", {"imageId": "letters"})
    assert response.status_code == 400
    assert response.text == "Invalid imageId: expected an integer"
    assert supervised_containers()["main"].id == container.id


def test_ids_are_ascii_digits_within_the_app_id_range(shared_web: WebProcess) -> None:
    for raw in ("%C2%B2", "%D9%A1", str(2**53 + 1)):
        response = shared_web.get(f"/v2/applications/{raw}/state")
        assert response.status_code == 400, raw
        assert response.json()["message"].startswith("Invalid application ID"), raw
    response = requests.post(shared_web.base_url + "/v1/restart", json={"appId": ARABIC_ONE}, timeout=10)
    assert (response.status_code, response.text) == (400, "Missing app id")


def test_a_wrong_method_gets_the_documented_shape(shared_web: WebProcess) -> None:
    json_route = requests.put(shared_web.base_url + "/v1/update", json={}, timeout=10)
    assert json_route.status_code == 405
    assert json_route.json() == {"status": "failed", "message": 'Method "PUT" not allowed.'}
    text_route = requests.put(shared_web.base_url + "/v1/restart", json={}, timeout=10)
    assert (text_route.status_code, text_route.text) == (405, 'Method "PUT" not allowed.')


def raw_exchange(web: WebProcess, head: bytes, chunks: Iterator[bytes]) -> bytes:
    """Send a request by hand (its body as `chunks`, stopping when the server closes) and
    return what the server answered."""
    address = urlsplit(web.base_url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(head)
        try:
            for chunk in chunks:
                connection.sendall(chunk)
        except OSError:
            pass  # the server closed the connection: the rest was refused unread
        answer = b""
        while data := connection.recv(65536):
            answer += data
    return answer


def test_a_body_over_10_mb_is_refused_before_it_is_read(running_service: str, shared_web: WebProcess) -> None:
    container = supervised_containers()["main"]
    size = 11 * 1024 * 1024
    body = json.dumps({"appId": 1, "padding": "x" * size}).encode()
    head = (f"POST /v1/restart HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
    declared = raw_exchange(shared_web, head, iter([]))  # the length alone is enough
    assert declared.startswith(b"HTTP/1.1 413 ")
    assert b'"Request body larger than 10 MB"' in declared
    expecting = raw_exchange(
        shared_web, head.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n"), iter([])
    )
    assert expecting.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in expecting, "nothing after the refusal"

    chunked_head = (b"POST /v1/restart HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
    pieces = (
        b"%x\r\n%s\r\n" % (len(piece), piece)
        for piece in (body[i : i + 65536] for i in range(0, len(body), 65536))
    )
    chunked = raw_exchange(shared_web, chunked_head, pieces)
    assert chunked.startswith(b"HTTP/1.1 413 ")
    assert supervised_containers()["main"].id == container.id
    assert shared_web.get("/ping").status_code == 200


def test_a_service_key_dies_when_its_service_leaves_or_loses_the_label(
    engine: str, shared_web: WebProcess
) -> None:
    labelled = {"labels": {"io.balena.features.supervisor-api": "1"}}
    apply(local_target({"main": labelled, "side": labelled}, image=engine))
    env = {
        name: dict(e.split("=", 1) for e in c.attrs["Config"]["Env"])
        for name, c in supervised_containers().items()
    }
    main_key, side_key = env["main"]["BALENA_SUPERVISOR_API_KEY"], env["side"]["BALENA_SUPERVISOR_API_KEY"]
    assert find_api_key(main_key) is not None
    assert find_api_key(side_key) is not None

    apply(local_target({"main": {}}, image=engine))  # side leaves; main loses the label

    assert find_api_key(main_key) is None
    assert find_api_key(side_key) is None
    assert docker.from_env().containers.list(filters={"label": "io.balena.service-name=side"}) == []


def test_a_client_cannot_move_the_root_of_the_paths(shared_web: WebProcess) -> None:
    root_moved = {"Daphne-Root-Path": "/x"}
    moved = requests.get(shared_web.base_url + "/x/admin/login/", headers=root_moved, timeout=10)
    assert moved.status_code == 404
    login = shared_web.get("/admin/login/")
    assert login.status_code == 200
    assert login.headers["X-Frame-Options"] == "DENY"


def websocket_handshake(web: WebProcess, headers: dict[str, str], query: str = "") -> int:
    """The status a log-stream WebSocket handshake gets (101: the socket is open)."""
    address = urlsplit(web.base_url)
    fields = {"Host": address.netloc, "Connection": "Upgrade", "Upgrade": "websocket",
              "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
              **headers}  # fmt: skip
    head = f"GET /v2/local/logs/ws{query} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(head.encode() + b"\r\n")
        answer = b""
        while b"\r\n" not in answer and (data := connection.recv(4096)):
            answer += data
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize(
    ("headers", "opened"),
    [
        pytest.param({}, True, id="the balena CLI: no Origin"),
        pytest.param({"Origin": "{device}"}, True, id="a page of the device itself"),
        pytest.param({"Origin": "http://evil.example"}, False, id="another origin"),
        pytest.param({"Origin": "null"}, False, id="an opaque origin"),
        pytest.param({"Sec-Fetch-Site": "cross-site"}, False, id="cross-site, no Origin"),
        pytest.param({"Sec-Fetch-Site": "same-site", "Origin": "{device}"}, False, id="same-site"),
        pytest.param({"Host": "evil.example", "Origin": "http://evil.example"}, False, id="DNS rebinding"),
        pytest.param({"Host": "evil.example"}, False, id="a name not of the device"),
    ],
)
def test_a_keyless_websocket_handshake_from_a_web_page_is_refused(
    shared_web: WebProcess, headers: dict[str, str], opened: bool
) -> None:
    """Local mode needs no key, so a browser on the LAN must not open the log stream
    (security review, M1: these headers were never looked at)."""
    device = shared_web.base_url
    given = {name: value.replace("{device}", device) for name, value in headers.items()}
    assert websocket_handshake(shared_web, given) == (101 if opened else 403)


def test_a_keyed_websocket_handshake_opens_whatever_page_made_it(shared_web: WebProcess) -> None:
    key = get_or_create_global_key().key
    hostile = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
    assert websocket_handshake(shared_web, hostile, query=f"?apikey={key}") == 101
    assert websocket_handshake(shared_web, hostile, query="?apikey=wrong") == 403


def resident_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_a_tty_container_that_never_ends_a_line_costs_the_agent_bounded_memory(
    engine: str, shared_web: Agent
) -> None:
    """8 MiB of output with no newline (a progress bar drawn with `\\r`, or a hostile app):
    the agent reads it all in bounded pieces, holds no more than one, answers meanwhile and
    stays up (security review, M2: it kept the whole line and copied it at every chunk)."""
    agent = shared_web.child("agent")
    assert agent is not None
    stream = NdjsonClient(shared_web.base_url)
    try:
        stream.wait_for(lambda records: len(records) >= 1)
        before = resident_kib(agent)
        flood = "head -c 8388608 /dev/zero | tr '\\0' x; echo; echo flood-done; sleep 100000"
        set_target(local_target({"flood": {"tty": True, "command": ["sh", "-c", flood]}}, image=engine))
        peak, busy, quiet_since = before, cpu_ticks(agent), time.monotonic()
        deadline = time.monotonic() + 120
        # Until the agent has been idle for 3 s once the flood is written: it has read it all.
        while time.monotonic() < deadline and time.monotonic() - quiet_since < 3:
            peak = max(peak, resident_kib(agent))
            assert shared_web.get("/ping").status_code == 200
            if (ticks := cpu_ticks(agent)) > busy + 5:
                busy, quiet_since = ticks, time.monotonic()
            time.sleep(0.1)
        pieces = [r for r in stream.records if r.get("serviceName") == "flood"]
    finally:
        stream.close()
    assert pieces, "the flood was read and streamed"
    assert max(len(piece["message"]) for piece in pieces) <= TTY_LINE_BYTES
    assert (peak - before) < 20 * 1024, f"the agent grew by {(peak - before) // 1024} MiB"
    assert shared_web.child("agent") == agent


def test_big_json_bodies_cannot_take_the_agents_memory(shared_web: Agent) -> None:
    """A 10 MB body of empty lists is 240 MB once parsed; four at once took the agent from 87
    to 430 MiB (security review, L10). Such a body is refused before it is parsed, and big
    bodies are handled one at a time."""
    agent = shared_web.child("agent")
    assert agent is not None
    body = b"[" + b"[]," * (3_300_000 - 1) + b"[]]"
    assert len(body) < 10 * 1024 * 1024
    before = resident_kib(agent)
    answers: list[requests.Response] = []

    def send_one() -> None:
        answers.append(requests.patch(shared_web.base_url + "/v2/device/tags", data=body, timeout=120,
                                      headers={"Content-Type": "application/json"}))  # fmt: skip

    threads = [threading.Thread(target=send_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    peak = before
    while any(thread.is_alive() for thread in threads):
        peak = max(peak, resident_kib(agent))
        time.sleep(0.02)
    assert [answer.status_code for answer in answers] == [413] * 4, answers[0].text
    assert answers[0].json()["message"] == "Request body holds more than 100000 JSON arrays and objects"
    assert (peak - before) < 100 * 1024, f"the agent grew by {(peak - before) // 1024} MiB"
