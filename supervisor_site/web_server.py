"""The web server as the agent runs it: daphne on every listen address, with request
bodies bounded before they are read.

The agent process runs `serve()` in a thread, first thing: importing this module loads
daphne and Twisted only, and the agent sets Django up once the port is bound
(liveness.DeferredApplication). `python -m supervisor_site.web_server` runs the web server
alone (development).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import socket
import sys
import threading
import types
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "supervisor_site.settings")
# Kept out of the agent's memory (about 12 MiB), as packages it never uses but that others
# import when they are installed: pyOpenSSL (the API is plain HTTP; Twisted then leaves TLS
# out), cryptography (redis-py's OCSP checks, for TLS connections only), Pygments (DRF's
# code highlighting: the device's install has no Pygments, the tests' has it for pytest)
# and autobahn's WAMP, which its Twisted package imports but daphne's WebSockets do not
# use (autobahn is pinned in requirements/base.txt for this).
for _unused in ("OpenSSL", "cryptography", "pygments"):
    sys.modules.setdefault(_unused, None)  # type: ignore[arg-type]
# autobahn's native UTF-8 validator and XOR masker load cffi and parse their C declarations
# with pycparser (1.2 MiB): the log streams send to clients and read nothing but their close,
# which its pure-Python code handles. AUTOBAHN_USE_NVX=1 in the environment turns them on
# (autobahn then refuses to load if they were not built).
os.environ.setdefault("AUTOBAHN_USE_NVX", "0")
_no_wamp = types.ModuleType("autobahn.twisted.wamp", "WAMP: not used by the agent")
_no_wamp.ApplicationSession = None  # type: ignore[attr-defined]
sys.modules.setdefault("autobahn.twisted.wamp", _no_wamp)

from daphne.endpoints import build_endpoint_description_strings  # noqa: E402
from daphne.http_protocol import HTTPFactory, WebRequest  # noqa: E402

# Importing daphne's server installs the asyncio reactor that the web server runs.
from daphne.server import Server  # noqa: E402
from daphne.ws_protocol import WebSocketProtocol  # noqa: E402
from django.conf import settings  # noqa: E402
from twisted.internet import reactor, task  # noqa: E402
from twisted.internet.endpoints import serverFromString  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402

from supervisor_site.slow_reader import SlowReaderGuard  # noqa: E402

logger = logging.getLogger("supervisor.web")

# docs/api.md "Requests": bodies of 10 MB at most.
MAX_BODY_BYTES = 10 * 1024 * 1024
LISTEN_RETRY_SECONDS = 10.0
LOG_STREAM_PATH = b"/v2/local/logs"
TOO_LARGE_BODY = json.dumps({"status": "failed", "message": "Request body larger than 10 MB"}).encode()
TOO_LARGE_ANSWER = (
    b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(TOO_LARGE_BODY), TOO_LARGE_BODY)
)


class CannotListen(Exception):
    pass


class BoundedRequest(WebRequest):
    """A request whose body may not pass MAX_BODY_BYTES: answered 413 and the connection
    closed as soon as its Content-Length says so, or once a chunked body grows past it.
    Twisted would otherwise keep the whole body, and daphne hand all of it to the app."""

    received = 0
    refused = False
    ended_for_a_slow_reader = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slow_reader = SlowReaderGuard()

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > MAX_BODY_BYTES:
            self.refuse_too_large()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.refused:
            return
        self.received += len(data)
        if self.received > MAX_BODY_BYTES:
            self.refuse_too_large()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.refused:
            return
        # The agent is not behind a proxy: a client may not move the paths' root.
        self.requestHeaders.removeHeader(b"daphne-root-path")
        super().requestReceived(command, path, version)

    def handle_reply(self, message: dict[str, Any]) -> None:
        streaming = message.get("type") == "http.response.body" and message.get("more_body")
        if streaming and self.channel is not None and not self.finished:
            behind = self.slow_reader.behind(self.channel.transport)
            if self.path.startswith(LOG_STREAM_PATH):
                body = self.slow_reader.whole_lines(message.get("body", b""), drop=behind)
                if not body:
                    return
                message = {**message, "body": body}
            elif behind:
                if not self.ended_for_a_slow_reader:
                    self.ended_for_a_slow_reader = True
                    logger.warning("web: %s: the client does not keep up; ending the stream", self.path)
                    # Aborted, not closed: a close waits to write what the client does not
                    # read, and the app (a root journalctl) would go on with it.
                    self.channel.transport.abortConnection()
                return
        super().handle_reply(message)

    def refuse_too_large(self) -> None:
        self.refused = True
        # Twisted would still say "100 Continue" after this answer, to a client that asked.
        self.requestHeaders.removeHeader(b"expect")
        transport = self.channel.transport
        transport.write(TOO_LARGE_ANSWER)
        transport.loseConnection()


class BoundedWebSocketProtocol(WebSocketProtocol):
    """A WebSocket whose reader may fall behind by slow_reader.STREAM_BACKLOG_BYTES at most: past it,
    log lines are dropped and counted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slow_reader = SlowReaderGuard()

    def handle_reply(self, message: dict[str, Any]) -> None:
        if message.get("type") == "websocket.send" and self.transport is not None:
            if self.slow_reader.behind(self.transport):
                self.slow_reader.drop(message.get("text") or message.get("bytes") or "")
                return
            if note := self.slow_reader.note():
                self.serverSend(note, False)
        super().handle_reply(message)


class BoundedHTTPFactory(HTTPFactory):
    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = BoundedRequest
        return protocol

    def log(self, request: Any) -> None:
        """No access log line: Twisted formats one per request for its own log, which
        nothing here reads (requests are counted in /metrics), at a few per cent of the
        cost of a cached answer."""


class PromptServer(Server):
    """daphne's server, forgetting each finished request at once. daphne keeps every
    request's entry (its protocol and application task, and through them the request's
    objects) until a check it runs once a second: under load that is thousands of entries
    swept in one go, a stall that delayed the requests in flight by up to 100 ms, and
    objects living long enough to be promoted to the collector's oldest generation.
    Entries whose application ended with an error, or has not ended, are still left to
    daphne's check (it logs the error, or cancels an application that outlives its
    connection by application_close_timeout)."""

    def create_application(self, protocol: Any, scope: dict[str, Any]) -> Any:
        queue = super().create_application(protocol, scope)
        instance = self.connections[protocol]["application_instance"]
        instance.add_done_callback(lambda _: self._forget_if_finished(protocol))
        return queue

    def protocol_disconnected(self, protocol: Any) -> None:
        super().protocol_disconnected(protocol)
        self._forget_if_finished(protocol)

    def _forget_if_finished(self, protocol: Any) -> None:
        details = self.connections.get(protocol)
        if details is None or "disconnected" not in details:
            return
        instance = details.get("application_instance")
        if instance is None or (
            instance.done() and not instance.cancelled() and instance.exception() is None
        ):
            del self.connections[protocol]


def listen_addresses() -> list[str]:
    return [a.strip() for a in settings.SUPERVISOR_LISTEN_ADDRESS.split(",") if a.strip()]


def bindable(address: str) -> bool:
    """Whether this host has `address` (or it is a wildcard), so that a listener can bind it."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address.strip("[]"), 0))
    except OSError:
        return False
    return True


def load_application() -> Any:
    """The ASGI application: Django (set up by the caller), the API and the log streams.
    Imported once the caller checked the device identity: the module prepares it at import."""
    return importlib.import_module("supervisor_site.asgi").application


def serve(
    listening: threading.Event | None = None, *, application: Any = None, signal_handlers: bool = False
) -> None:
    """Runs daphne's reactor until it is stopped; `listening` is set once it listens.
    `application`: the ASGI application (default: load_application(), Django set up).
    Addresses this host does not have yet (the supervisor0 gateway before the engine made
    the bridge) are listened on once it has them. Raises CannotListen when a port cannot be
    bound (at start or later)."""
    if application is None:
        application = load_application()
    port = settings.SUPERVISOR_PORT
    waiting = listen_addresses()
    descriptions = build_endpoint_description_strings(host="127.0.0.1", port=port)
    server = PromptServer(application=application, endpoints=descriptions, signal_handlers=signal_handlers,
                    action_logger=None, verbosity=0, application_close_timeout=5)  # fmt: skip
    # daphne wants an endpoint to be built, but listens on none of its own: ours (below)
    # give requests their bounded bodies.
    server.endpoints = []
    factory = BoundedHTTPFactory(server)

    failed: list[str] = []

    def cannot_listen(failure: Failure, address: str) -> None:
        logger.critical("web: cannot listen on %s:%d: %s", address, port, failure.getErrorMessage())
        failed.append(address)
        if reactor.running:  # type: ignore[attr-defined]
            reactor.stop()  # type: ignore[attr-defined,misc]

    def listen_where_possible() -> None:
        for address in [a for a in waiting if bindable(a)]:
            waiting.remove(address)
            for description in build_endpoint_description_strings(host=address, port=port):
                listened = serverFromString(reactor, description).listen(factory)
                listened.addErrback(cannot_listen, address)
            if address not in failed:
                logger.info("web: listening on %s:%d", address, port)

    def ready() -> None:  # daphne calls it just before it runs the reactor
        server.ws_factory.protocol = BoundedWebSocketProtocol
        listen_where_possible()
        if failed:
            reactor.callWhenRunning(reactor.stop)  # type: ignore[attr-defined,misc]
            return
        for address in waiting:
            logger.warning("web: %s is not an address of this host yet; listening there once it is", address)
        if waiting:
            task.LoopingCall(listen_where_possible).start(LISTEN_RETRY_SECONDS, now=False)
        if listening is not None:
            listening.set()

    server.ready_callable = ready
    server.run()
    if failed:
        raise CannotListen(f"cannot listen on {', '.join(failed)} (port {port})")


def stop() -> None:
    """From another thread: stop the server that serve() runs."""
    reactor.callFromThread(reactor.stop)  # type: ignore[attr-defined,misc]


def main() -> None:
    """The web server alone, until SIGTERM or SIGINT."""
    import django  # lazy: the agent process sets Django up only after the listen

    django.setup()
    serve(signal_handlers=True)


if __name__ == "__main__":
    main()
