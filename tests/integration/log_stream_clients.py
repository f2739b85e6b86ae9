"""Clients of the log streams, as the balena CLI and a WebSocket user read them: each
collects the records it receives in a thread of its own."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from autobahn.asyncio.websocket import WebSocketClientFactory, WebSocketClientProtocol

from tests.route_coverage import record_route

Condition = Callable[[list[dict[str, Any]]], bool]


class _Collected:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.ended = threading.Event()
        self._changed = threading.Condition()

    def add(self, lines: list[str]) -> None:
        with self._changed:
            self.lines.extend(lines)
            self._changed.notify_all()

    def end(self) -> None:
        self.ended.set()
        with self._changed:
            self._changed.notify_all()

    @property
    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.lines)]

    def wait_for(self, condition: Condition, timeout: float = 30) -> list[dict[str, Any]]:
        """The records once `condition(records)` holds; fails the test after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                records = self.records
                if condition(records):
                    return records
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.ended.is_set():
                    pytest.fail(f"stream condition not met within {timeout} s; last records {records[-5:]}")
                self._changed.wait(remaining)

    def messages(self, service: str) -> list[str]:
        return [r["message"] for r in self.records if r.get("serviceName") == service]


class NdjsonClient(_Collected):
    """GET <path> read as the balena CLI reads it: one JSON object per line, as it comes."""

    def __init__(self, base_url: str, path: str = "/v2/local/logs") -> None:
        super().__init__()
        address = urlsplit(base_url)
        record_route("GET", path)
        self._connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=60)
        self._connection.request("GET", path, headers={"Accept-Encoding": "gzip, deflate"})
        self.response = self._connection.getresponse()
        self.status = self.response.status
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        pending = bytearray()
        try:
            while chunk := self.response.read1(65536):
                end = chunk.rfind(b"\n")
                if end < 0:
                    pending += chunk  # linear: a long line is not copied at every chunk
                    continue
                lines = (bytes(pending) + chunk[:end]).split(b"\n")
                pending[:] = chunk[end + 1 :]
                self.add([line.decode() for line in lines])
        except (OSError, http.client.HTTPException):
            pass
        finally:
            self.end()

    def close(self) -> None:
        if self._connection.sock is not None:
            self._connection.sock.shutdown(socket.SHUT_RDWR)
        self._reader.join(10)
        self._connection.close()


class WebSocketClient(_Collected):
    """The WebSocket stream; each message holds one or more NDJSON lines."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.opened = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._protocol: WebSocketClientProtocol | None = None
        address = urlsplit(url)
        record_route("GET", url)
        factory = WebSocketClientFactory(url, loop=self._loop)
        factory.protocol = self._protocol_class()
        connect = self._loop.create_connection(factory, address.hostname, address.port)
        asyncio.run_coroutine_threadsafe(connect, self._loop).result(10)
        if not self.opened.wait(10):
            pytest.fail(f"the WebSocket at {url} did not open")

    def _protocol_class(self) -> type[WebSocketClientProtocol]:
        client = self

        class Protocol(WebSocketClientProtocol):
            def onOpen(self) -> None:
                client._protocol = self
                client.opened.set()

            def onMessage(self, payload: bytes, isBinary: bool) -> None:
                client.add(payload.decode().splitlines())

            def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
                client.end()

        return Protocol

    def close(self) -> None:
        if self._protocol is not None:
            self._loop.call_soon_threadsafe(self._protocol.sendClose)
        self.ended.wait(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
