"""`make run`: start the system services that are missing (dockerd; Redis when REDIS_URL is
TCP), then run the agent's supervising parent (supervisor_site.agent) in this process.

Ctrl-C stops the agent and then only the system services this run started.
With SUPERVISOR_EXPOSE_DOCKER_TCP=1 it also exposes the Docker engine on 127.0.0.1:2375,
where `balena push 127.0.0.1` builds (README "Local mode with the balena CLI").
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from supervisor_site import agent
from supervisor_site.system_services import (
    ServiceStartError,
    StartedService,
    docker_socket_path,
    ensure_dockerd,
    ensure_redis,
    wait_until,
)

PROJECT_DIR = Path(__file__).resolve().parent.parent
# Loopback only: the engine's API is root on this machine for whoever reaches it.
DOCKER_TCP_ADDRESS = ("127.0.0.1", 2375)
EXPOSE_DOCKER_TCP_VARIABLE = "SUPERVISOR_EXPOSE_DOCKER_TCP"


class ProcessGroupService(StartedService):
    """A started service whose forked children (socat's, one per connection) stop with it."""

    def stop(self, timeout: float = 20.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        super().stop(timeout)


def docker_tcp_answers(address: tuple[str, int] = DOCKER_TCP_ADDRESS) -> bool:
    try:
        with socket.create_connection(address, timeout=2) as sock:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            status_line = sock.recv(64).split(b"\r\n", 1)[0]
            return status_line.split(b" ")[1:2] == [b"200"]
    except OSError:
        return False


def expose_docker_tcp(docker_host: str, log_dir: Path, timeout: float = 20.0) -> StartedService | None:
    """Start socat to relay 127.0.0.1:2375 to the engine's socket, unless an engine answers
    there already; None when nothing was started."""
    host, port = DOCKER_TCP_ADDRESS
    if docker_tcp_answers():
        return None
    socket_path = docker_socket_path(docker_host)
    if socket_path is None:
        raise ServiceStartError(f"DOCKER_HOST={docker_host} is not a unix socket: nothing to expose")
    if shutil.which("socat") is None:
        raise ServiceStartError(
            f"socat is not installed (`make run` installs it when {EXPOSE_DOCKER_TCP_VARIABLE}=1)"
        )
    log_path = log_dir / "socat-docker.log"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        # Own session: a Ctrl-C must not reach it (or its children) before we stop it.
        process = subprocess.Popen(
            ["socat", f"TCP-LISTEN:{port},bind={host},reuseaddr,fork", f"UNIX-CONNECT:{socket_path}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    service = ProcessGroupService(f"socat (Docker engine on {host}:{port})", process)
    if not wait_until(lambda: docker_tcp_answers() or process.poll() is not None, timeout):
        service.stop()
        raise ServiceStartError(f"socat did not expose the engine within {timeout:.0f} s; see {log_path}")
    if process.poll() is not None:
        raise ServiceStartError(
            f"socat exited with {process.returncode} (port {port} taken?); see {log_path}"
        )
    return service


def _expose_docker_tcp_requested() -> bool:
    return os.environ.get(EXPOSE_DOCKER_TCP_VARIABLE, "").strip().lower() in {"1", "true"}


def main() -> int:
    env = os.environ
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log_dir = Path(settings.SUPERVISOR_DATA_DIR) / "log"
    started: list[StartedService] = []
    try:
        ensures: list[tuple[Callable[[str, Path], StartedService | None], str]] = [
            (ensure_dockerd, settings.DOCKER_HOST)
        ]
        if not settings.REDIS_URL.startswith("unix://"):  # a unix socket: the agent runs its own
            ensures.insert(0, (ensure_redis, settings.REDIS_URL))
        for ensure, target in ensures:
            try:
                service = ensure(target, log_dir)
            except ServiceStartError as exc:
                # The API still serves without them; /v1/healthy names what is missing.
                print(f"warning: {exc}", file=sys.stderr)
                continue
            if service is not None:
                print(f"started {service.name} (pid {service.process.pid})")
                started.append(service)
        if _expose_docker_tcp_requested():
            try:
                relay = expose_docker_tcp(settings.DOCKER_HOST, log_dir)
            except ServiceStartError as exc:
                print(f"warning: {exc}", file=sys.stderr)
            else:
                if relay is not None:
                    print(f"started {relay.name} (pid {relay.process.pid})")
                    started.append(relay)
        return agent.run()
    finally:
        for service in reversed(started):
            print(f"stopping {service.name}")
            service.stop()


if __name__ == "__main__":
    sys.exit(main())
