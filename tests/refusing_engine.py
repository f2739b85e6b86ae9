"""A unix socket in front of the real Docker engine that answers chosen requests itself
with the engine's own error, and passes every other request through unchanged.

For engine faults this machine cannot produce on demand (a network that "has active
endpoints" while listing none); the agent under test is pointed at it with DOCKER_HOST.
Each forwarded request is sent with `Connection: close`, so that every request of a
pooled client connection comes through here again; upgraded connections (attach) are
passed through as they are."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path

ENGINE_SOCKET = "/var/run/docker.sock"
Refusal = tuple[int, str]
"""The status and the engine's `message` to answer with."""


class RefusingEngine:
    def __init__(self, path: Path, refuse: Callable[[str, str], Refusal | None]) -> None:
        """`refuse(method, path)`: a refusal to answer with, or None to pass the request on."""
        self.path = path
        self.refuse = refuse
        self.refused: list[str] = []
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def start(self) -> None:
        self._server.bind(str(self.path))
        self._server.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the accept
        self._server.close()
        self.path.unlink(missing_ok=True)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with contextlib.closing(client):
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(65536)
                if not chunk:
                    return
                head += chunk
            head, rest = head.split(b"\r\n\r\n", 1)
            method, target = head.split(b" ", 2)[:2]
            path = re.sub(r"^/v[\d.]+", "", target.decode().split("?", 1)[0])
            refusal = self.refuse(method.decode(), path)
            if refusal is not None:
                self.refused.append(f"{method.decode()} {path}")
                status, message = refusal
                body = json.dumps({"message": message}).encode()
                client.sendall(
                    f"HTTP/1.1 {status} Refused\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
                return
            lines = head.split(b"\r\n")
            if not any(line.lower().startswith(b"upgrade:") for line in lines):
                lines = [line for line in lines if not line.lower().startswith(b"connection:")]
                lines.append(b"Connection: close")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as engine:
                engine.connect(ENGINE_SOCKET)
                engine.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + rest)
                _pipe(client, engine)


def _pipe(client: socket.socket, engine: socket.socket) -> None:
    """Both ways until the engine closes (the client's half-close is passed on)."""

    def upstream() -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                engine.sendall(data)
            engine.shutdown(socket.SHUT_WR)

    threading.Thread(target=upstream, daemon=True).start()
    with contextlib.suppress(OSError):
        while data := engine.recv(65536):
            client.sendall(data)
