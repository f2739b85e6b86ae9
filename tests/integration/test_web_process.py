"""The web process as `make run` starts it: identity on first start, ping, health, faults."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from supervisor_site.system_services import wait_until
from tests.integration.conftest import StartWeb, free_port, manage

HEX32 = re.compile(r"^[0-9a-f]{32}$")
pytestmark = pytest.mark.usefixtures("docker_engine", "redis_server")


def test_first_start_creates_device_identity_and_global_key(start_web: StartWeb) -> None:
    web = start_web()
    config_path = Path(web.env["SUPERVISOR_DATA_DIR"]) / "boot" / "config.json"
    config = json.loads(config_path.read_text())
    assert HEX32.match(config["uuid"])
    assert HEX32.match(config["deviceApiKey"])
    assert "apiEndpoint" not in config

    printed = manage(web.env, "apikey")
    assert printed.returncode == 0, printed.stderr
    assert HEX32.match(printed.stdout.strip())
    assert manage(web.env, "apikey").stdout == printed.stdout, "the global key is stable"
    assert json.loads(config_path.read_text()) == config, "a second start keeps the identity"


def test_ping_answers_ok_in_text_with_or_without_a_key(start_web: StartWeb) -> None:
    web = start_web()
    for params in ({}, {"apikey": "not-a-key"}):
        response = web.get("/ping", params=params)
        assert response.status_code == 200
        assert response.text == "OK"
        assert response.headers["Content-Type"].startswith("text/plain")


def test_healthy_when_database_redis_and_docker_answer(start_web: StartWeb) -> None:
    response = start_web().get("/v1/healthy")
    assert (response.status_code, response.text) == (200, "OK")


def test_health_names_redis_while_it_is_down_and_recovers(start_web: StartWeb, tmp_path: Path) -> None:
    port = free_port()
    redis_argv = [
        "redis-server",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    redis = subprocess.Popen(redis_argv, stdout=subprocess.DEVNULL)
    try:
        web = start_web(REDIS_URL=f"redis://127.0.0.1:{port}/0")
        assert wait_until(lambda: web.get("/v1/healthy").status_code == 200, 10)

        subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], check=False, capture_output=True)
        redis.wait(10)
        unhealthy = web.get("/v1/healthy")
        assert unhealthy.status_code == 500
        assert unhealthy.text == "Unhealthy"  # the reasons go to the log: this route needs no key
        assert "health check redis failed" in web.output()
        assert "health check docker failed" not in web.output()
        assert web.get("/ping").text == "OK"
        assert web.process.poll() is None

        redis = subprocess.Popen(redis_argv, stdout=subprocess.DEVNULL)
        assert wait_until(lambda: web.get("/v1/healthy").status_code == 200, 20), web.output()
    finally:
        redis.terminate()
        redis.wait(10)


def test_missing_docker_socket_still_serves_and_health_names_docker(
    start_web: StartWeb, tmp_path: Path
) -> None:
    web = start_web(DOCKER_HOST=f"unix://{tmp_path}/no-such-docker.sock")
    assert web.get("/ping").text == "OK"
    unhealthy = web.get("/v1/healthy")
    assert (unhealthy.status_code, unhealthy.text) == (500, "Unhealthy")
    assert "health check docker failed" in web.output()
    assert "health check redis failed" not in web.output()


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_unusable_config_json_stops_start_up_and_is_kept(
    start_web: StartWeb, tmp_path: Path, content: str
) -> None:
    config_path = tmp_path / "broken" / "config.json"
    config_path.parent.mkdir()
    config_path.write_text(content)

    web = start_web(wait=False, SUPERVISOR_CONFIG_JSON=str(config_path))
    assert web.process.wait(60) != 0
    assert str(config_path) in web.output()
    assert config_path.read_text() == content

    printed = manage(web.env, "apikey")
    assert printed.returncode != 0
    assert str(config_path) in printed.stderr
    assert config_path.read_text() == content


def test_journal_logs_stream_journalctl_output(start_web: StartWeb) -> None:
    import shutil

    import requests

    assert shutil.which("journalctl"), "make test installs systemd, which brings journalctl"
    web = start_web()
    response = requests.post(web.base_url + "/v2/journal-logs", json={"count": 1}, timeout=20)
    assert response.status_code == 200
    assert response.text.strip(), "journalctl printed something (an entry, or that there is none)"
    # journalctl's own complaints about the command line it was given are not entries.
    complaints = ("invalid option", "unrecognized option", "Usage:", "Failed to parse", "Unknown")
    assert not [line for line in response.text.splitlines() if any(c in line for c in complaints)], (
        response.text
    )
    bad = requests.post(web.base_url + "/v2/journal-logs", json={"count": -1}, timeout=20)
    assert bad.status_code == 400
    assert bad.json() == {"status": "failed", "message": "count: must be a positive integer"}


def test_app_state_answers_500_when_the_engine_cannot_be_read(start_web: StartWeb, tmp_path: Path) -> None:
    web = start_web(DOCKER_HOST=f"unix://{tmp_path}/no-such-docker.sock")
    response = web.get("/v2/applications/1/state")
    assert response.status_code == 500
    assert response.json()["status"] == "failed"
    assert web.get("/v2/applications/abc/state").status_code == 400, "a bad id is refused before any read"


def test_a_key_check_that_fails_answers_503_text(start_web: StartWeb) -> None:
    web = start_web()
    config_path = Path(web.env["SUPERVISOR_DATA_DIR"]) / "boot" / "config.json"
    config_path.write_text("{broken")

    response = web.get("/v2/version", params={"apikey": "anything"})

    assert response.status_code == 503
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.text.startswith("Unexpected error:")
    assert str(config_path) in response.text
    assert web.get("/ping").text == "OK"


def stand_in_journalctl(directory: Path, script: str) -> Path:
    """A journalctl in `directory`/bin that runs `script` for the API's streams; the agent's
    host-unit follower (JSON output) gets a quiet one."""
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    journalctl = bin_dir / "journalctl"
    journalctl.write_text(
        f'#!/bin/sh\ncase "$*" in *--output=json*) exec /bin/sleep 100000;; esac\n{script}\n'
    )
    journalctl.chmod(0o755)
    return journalctl


def test_a_journal_reader_that_stops_reading_ends_the_stream(start_web: StartWeb, tmp_path: Path) -> None:
    # One that prints without end: the host's journal is too small here to fill the buffers.
    journalctl = stand_in_journalctl(tmp_path, 'while :; do echo "Dec 01 host kernel: a journal line"; done')
    web = start_web(PATH=f"{journalctl.parent}:{os.environ['PATH']}")
    address = urlsplit(web.base_url)
    with socket.socket() as stalled:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect((address.hostname, address.port))
        body = b'{"follow": true}'
        head = b"POST /v2/journal-logs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        stalled.sendall(head + b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        assert wait_until(lambda: "the client does not keep up; ending the stream" in web.output(), 60)
        # The client still reads nothing (security review, L3: a close waited on it forever,
        # and journalctl ran on).
        assert wait_until(lambda: not _processes_running(str(journalctl), unless="--output=json"), 30), (
            "journalctl was left running"
        )
    assert web.get("/ping").status_code == 200


def test_journal_streams_at_once_are_bounded(start_web: StartWeb, tmp_path: Path) -> None:
    from hostcfg.journal import JOURNAL_STREAMS_AT_ONCE

    follow_forever = (
        'echo "Dec 01 host kernel: a journal line"; case "$*" in *--follow*) exec /bin/sleep 100000;; esac'
    )
    journalctl = stand_in_journalctl(tmp_path, follow_forever)
    web = start_web(PATH=f"{journalctl.parent}:{os.environ['PATH']}")
    url = f"{web.base_url}/v2/journal-logs"
    # Each stream's session and answer are kept: either one let go closes its connection.
    streams: list[tuple[requests.Session, requests.Response]] = []
    try:
        for _ in range(JOURNAL_STREAMS_AT_ONCE):
            session = requests.Session()
            stream = session.post(url, json={"follow": True}, stream=True, timeout=20)
            streams.append((session, stream))
            assert stream.status_code == 200
            # It runs. (Read from the raw answer: a generator of requests' let go would close it.)
            assert stream.raw.read(3) == b"Dec"
        refused = requests.post(url, json={"follow": True}, timeout=20)
        assert refused.status_code == 503
        assert "journal streams are open already" in refused.json()["message"]
        for closing in streams.pop():
            closing.close()
        assert wait_until(lambda: requests.post(url, json={"count": 1}, timeout=20).status_code == 200, 30)
    finally:
        for session, stream in streams:
            stream.close()
            session.close()


def _processes_running(command: str, *, unless: str) -> bool:
    """Whether a process runs `command`, leaving out those whose arguments hold `unless`."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            arguments = cmdline.read_bytes()
            if command.encode() in arguments and unless.encode() not in arguments:
                return True
    return False
