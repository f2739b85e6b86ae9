"""`manage.py localmode push`: a compose project built, set as target and applied."""

from __future__ import annotations

import io
import os
import re
import selectors
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

import docker
import pytest
from django.core.management import CommandError, call_command

from tests.integration.conftest import PROJECT_DIR, WebProcess
from tests.integration.engine_helpers import supervised_containers

pytestmark = pytest.mark.django_db(transaction=True)

COMPOSE = """
services:
  greeter:
    build: ./greeter
    environment:
      GREETING: hello from greeter
  sleeper:
    image: local/busybox:latest
    command: sleep 100000
    stop_signal: SIGKILL
"""


def project(tmp_path: Path, run: str = "true") -> Path:
    (tmp_path / "greeter").mkdir()
    (tmp_path / "greeter" / "Dockerfile").write_text(
        f"FROM local/busybox:latest\nRUN {run}\nSTOPSIGNAL SIGKILL\n"
        'CMD ["sh", "-c", "while true; do echo $GREETING; sleep 1; done"]\n'
    )
    (tmp_path / "docker-compose.yml").write_text(COMPOSE)
    return tmp_path


def push(web: WebProcess, directory: Path) -> str:
    out = io.StringIO()
    call_command(
        "localmode", "--address", web.base_url, "push", str(directory), "--timeout", "120", stdout=out
    )
    return out.getvalue()


def test_push_builds_sets_the_target_and_waits_until_applied(shared_web: WebProcess, tmp_path: Path) -> None:
    output = push(shared_web, project(tmp_path))
    assert "build greeter |" in output
    assert "100%" in output
    assert "applied: " in output
    containers = supervised_containers()
    assert sorted(containers) == ["greeter", "sleeper"]
    image = docker.from_env().images.get("local_image_greeter:latest")
    assert image.labels["io.resin.local.image"] == "1"
    assert containers["greeter"].image.id == image.id
    assert containers["greeter"].attrs["Config"]["Env"].count("GREETING=hello from greeter") == 1
    state = shared_web.get("/v2/local/target-state").json()["state"]["local"]["apps"]["1"]
    assert [s["serviceName"] for s in state["services"].values()] == ["greeter", "sleeper"]


def test_a_failing_build_stops_the_push_and_sets_nothing(shared_web: WebProcess, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="building greeter: "):
        push(shared_web, project(tmp_path, run="false"))
    assert shared_web.get("/v2/local/target-state").json()["state"]["local"]["apps"] == {}


def test_a_folder_without_a_project_is_refused(shared_web: WebProcess, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"no docker-compose\.yml and no Dockerfile"):
        push(shared_web, tmp_path)


def test_logs_follow_prints_the_service_lines_like_the_balena_cli(
    shared_web: WebProcess, tmp_path: Path
) -> None:
    push(shared_web, project(tmp_path))
    command = [sys.executable, "manage.py", "localmode", "--address", shared_web.base_url, "logs", "--follow",
               "--service", "greeter"]  # fmt: skip
    with subprocess.Popen(
        command,
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as logs:
        try:
            assert logs.stdout is not None
            line = _next_line(logs.stdout, deadline=time.monotonic() + 60)
        finally:
            logs.kill()
    assert re.fullmatch(r"\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] \[greeter\] hello from greeter\n", line)


def _next_line(stream: TextIO, *, deadline: float) -> str:
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    while time.monotonic() < deadline:
        if selector.select(timeout=max(0.0, deadline - time.monotonic())):
            return stream.readline()
    pytest.fail("no log line within the deadline")
