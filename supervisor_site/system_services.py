"""Start the system services the supervisor needs (dockerd, redis-server) when absent.

Used by `make run` (supervisor_site.launcher) and the test fixtures. Only a service
started here is stopped here: a developer's own dockerd or Redis is left alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock"


class ServiceStartError(Exception):
    """A service could not be started; the message says which and where its log is."""


@dataclass
class StartedService:
    name: str
    process: subprocess.Popen[bytes]

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop in %.0f s; killing it", self.name, timeout)
            self.process.kill()
            self.process.wait()


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def docker_socket_path(docker_host: str) -> str | None:
    """The unix socket path of DOCKER_HOST, or None for a TCP engine."""
    if docker_host.startswith("unix://"):
        return docker_host[len("unix://") :]
    return None


def docker_answers(socket_path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(socket_path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            status_line = sock.recv(64).split(b"\r\n", 1)[0]
            return status_line.split(b" ")[1:2] == [b"200"]
    except OSError:
        return False


def redis_address(redis_url: str) -> tuple[str, int]:
    parsed = urlparse(redis_url)
    return parsed.hostname or "127.0.0.1", parsed.port or 6379


def redis_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _start_and_wait(
    name: str, argv: list[str], log_path: Path, answers: Callable[[], bool], timeout: float
) -> StartedService:
    """Start `argv` in a session of its own, logging to `log_path`, and wait until it answers."""
    if shutil.which(argv[0]) is None:
        raise ServiceStartError(f"{argv[0]} is not installed (make run installs it)")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        # Own session: a Ctrl-C in the terminal must not reach it before we stop it.
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    service = StartedService(name, process)
    if not wait_until(lambda: answers() or process.poll() is not None, timeout):
        service.stop()
        raise ServiceStartError(f"{name} did not answer within {timeout:.0f} s; see {log_path}")
    if process.poll() is not None:
        raise ServiceStartError(f"{name} exited with {process.returncode}; see {log_path}")
    return service


def ensure_dockerd(docker_host: str, log_dir: Path, timeout: float = 60.0) -> StartedService | None:
    """Start dockerd unless the engine at `docker_host` answers; None when nothing was started."""
    socket_path = docker_socket_path(docker_host)
    if socket_path is None or docker_answers(socket_path):
        return None
    argv = ["dockerd"]
    if socket_path != DEFAULT_DOCKER_SOCKET:
        argv += ["--host", f"unix://{socket_path}"]
    return _start_and_wait(
        "dockerd", argv, log_dir / "dockerd.log", lambda: docker_answers(socket_path), timeout
    )


def ensure_redis(redis_url: str, log_dir: Path, timeout: float = 20.0) -> StartedService | None:
    """Start redis-server for `redis_url` unless one answers there; None when nothing was started."""
    host, port = redis_address(redis_url)
    if redis_answers(host, port):
        return None
    argv = ["redis-server", "--bind", host, "--port", str(port), "--save", "", "--appendonly", "no"]
    return _start_and_wait(
        "redis-server", argv, log_dir / f"redis-{port}.log", lambda: redis_answers(host, port), timeout
    )


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


def expose_docker_tcp(
    docker_host: str, log_dir: Path, timeout: float = 20.0, *, address: tuple[str, int] = DOCKER_TCP_ADDRESS
) -> StartedService | None:
    """Start socat to relay `address` (127.0.0.1:2375) to the engine's socket, unless an
    engine answers there already; None when nothing was started."""
    host, port = address
    if docker_tcp_answers(address):
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
    if not wait_until(lambda: docker_tcp_answers(address) or process.poll() is not None, timeout):
        service.stop()
        raise ServiceStartError(f"socat did not expose the engine within {timeout:.0f} s; see {log_path}")
    if process.poll() is not None:
        raise ServiceStartError(
            f"socat exited with {process.returncode} (port {port} taken?); see {log_path}"
        )
    return service
