"""Log stream throughput, loss and latency, against reading Docker directly in the same run.

Starts the agent (its web server and log collector as a device runs them), in a
temporary data dir, with one NDJSON client (GET /v2/local/logs, as the balena CLI reads
it) and one WebSocket client (/v2/local/logs/ws), each in a process of its own. Then a
supervised container prints N numbered lines (`seq`) as fast as it can ("burst"), and
again at about 20 000 lines/s ("paced", 1 000 lines every 50 ms). For each client:

- lines/s: lines received / (last receipt - Docker's timestamp of the first line);
- lost: numbers never received, and how many records the stream reported suppressed;
- latency p50/p99: receipt time - the line's Docker timestamp (ms; same host clock).

The baseline is the same container output read directly with the docker SDK's
`logs(stream=True, follow=True, timestamps=True)` (what `docker logs --follow` does), from
an unsupervised container of the same command, with the agent idle.

    .venv/bin/python bench/logs.py [--lines 100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

from bench.local_agent import (  # noqa: E402
    ensure_busybox_image,
    running_agent,
    start_missing_services,
    use_bench_environment,
)

IMAGE = "local/bench-logs:latest"
BENCH_LABEL = "io.balena.bench-logs"
SERVICE = "counter"
GOAL = "goal: >= 20000 lines/s, p99 latency < 250 ms, no loss unless reported as suppressed"


@dataclass
class Figures:
    received: int
    lost: int
    suppressed: int
    rate: float
    p50: float
    p99: float


def summarise(
    stamps: list[int], receipts: list[float], numbers: set[int], expected: int, suppressed: int
) -> Figures:
    latencies = sorted(receipt - stamp for stamp, receipt in zip(stamps, receipts, strict=True))
    if not latencies:
        return Figures(0, expected, suppressed, 0.0, 0.0, 0.0)
    elapsed = (max(receipts) - min(stamps)) / 1000
    return Figures(
        received=len(stamps),
        lost=expected - len(numbers & set(range(expected))),
        suppressed=suppressed,
        rate=len(stamps) / elapsed if elapsed > 0 else 0.0,
        p50=statistics.median(latencies),
        p99=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    )


# --- the clients (each runs as `bench/logs.py --client ndjson|ws URL LINES`) --------------


class StreamTally:
    """What one client received of the counter's lines."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.stamps: list[int] = []
        self.receipts: list[float] = []
        self.numbers: set[int] = set()
        self.suppressed = 0
        self.done = threading.Event()
        self.ready = threading.Event()

    def lines(self, lines: list[bytes]) -> None:
        now = time.time() * 1000
        for line in lines:
            record = json.loads(line)
            if record.get("serviceName") == SERVICE:
                self.stamps.append(record["timestamp"])
                self.receipts.append(now)
                self.numbers.add(int(record["message"]))
            elif record.get("isSystem"):
                if record["message"] == "Streaming logs":
                    self.ready.set()
                elif record["message"].startswith("Warning: Suppressed "):
                    self.suppressed += int(record["message"].split()[2])
        if len(self.numbers) >= self.expected:
            self.done.set()


def ndjson_client(url: str, tally: StreamTally) -> None:
    address = url.split("//", 1)[1].split("/", 1)[0]
    host, port = address.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    connection.request("GET", "/v2/local/logs")
    response = connection.getresponse()
    pending = b""
    try:
        while not tally.done.is_set() and (chunk := response.read1(65536)):
            *lines, pending = (pending + chunk).split(b"\n")
            tally.lines(lines)
    except (OSError, http.client.HTTPException):
        return  # the server stopped
    connection.close()


def websocket_client(url: str, tally: StreamTally) -> None:
    import asyncio

    from autobahn.asyncio.websocket import WebSocketClientFactory, WebSocketClientProtocol

    class Protocol(WebSocketClientProtocol):
        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            tally.lines(payload.splitlines())

    loop = asyncio.new_event_loop()
    factory = WebSocketClientFactory(url.replace("http://", "ws://") + "/v2/local/logs/ws", loop=loop)
    factory.protocol = Protocol
    host, port = url.split("//", 1)[1].split(":")
    loop.run_until_complete(loop.create_connection(factory, host, int(port)))
    loop.run_forever()


def run_client(kind: str, url: str, expected: int) -> None:
    """Print `ready` once streaming, then the figures (JSON) once all lines came or the
    stream went quiet for 20 s."""
    tally = StreamTally(expected)
    reader = ndjson_client if kind == "ndjson" else websocket_client
    threading.Thread(target=reader, args=(url, tally), daemon=True).start()
    if not tally.ready.wait(30):
        sys.exit("no first line")
    print("ready", flush=True)
    received = -1
    while not tally.done.wait(20) and len(tally.stamps) != received:
        received = len(tally.stamps)
    figures = summarise(tally.stamps, tally.receipts, tally.numbers, expected, tally.suppressed)
    print(json.dumps(asdict(figures)), flush=True)


# --- the run -------------------------------------------------------------------------


def burst(lines: int) -> str:
    return f"seq 0 {lines - 1}"


def paced(lines: int) -> str:
    return (
        f"i=0; while [ $i -lt {lines // 1000} ]; do seq $((i * 1000)) $((i * 1000 + 999)); sleep 0.05; "
        "i=$((i + 1)); done"
    )


def ensure_image() -> None:
    """A busybox image with `seq` (the tests' image may have been built without it)."""
    ensure_busybox_image(IMAGE, ("sh", "seq", "sleep"))


def baseline(client: Any, command: str, lines: int) -> Figures:
    """The command's output read straight from Docker with the SDK."""
    from apps_api.logs.records import parse_timestamped_line

    container = client.containers.run(IMAGE, ["sh", "-c", command], labels={BENCH_LABEL: "1"}, detach=True)
    stamps: list[int] = []
    receipts: list[float] = []
    numbers: set[int] = set()
    try:
        for line in client.api.logs(container.id, stream=True, follow=True, timestamps=True):
            receipt = time.time() * 1000
            nanos, message = parse_timestamped_line(line.decode().rstrip("\n"))
            stamps.append(nanos // 1_000_000)
            receipts.append(receipt)
            numbers.add(int(message))
    finally:
        container.remove(force=True)
    return summarise(stamps, receipts, numbers, lines, 0)


def through_agent(client: Any, url: str, command: str, lines: int) -> dict[str, Figures]:
    """The command run as a supervised service, read by both stream clients."""
    readers = {
        kind: subprocess.Popen(
            [sys.executable, __file__, "--client", kind, url, str(lines)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for kind in ("ndjson", "ws")
    }
    for reader in readers.values():
        assert reader.stdout is not None
        assert reader.stdout.readline().strip() == "ready", "a stream client did not start"
    labels = {BENCH_LABEL: "1", "io.balena.supervised": "true", "io.balena.service-name": SERVICE,
              "io.balena.service-id": "1", "io.balena.app-id": "1"}  # fmt: skip
    container = client.containers.run(IMAGE, ["sh", "-c", command], labels=labels, detach=True)
    try:
        results = {}
        for kind, reader in readers.items():
            output, _ = reader.communicate(timeout=600)
            results[kind] = Figures(**json.loads(output.strip().splitlines()[-1]))
    finally:
        container.remove(force=True)
    return results


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_collector(client: Any, url: str) -> None:
    """Until a line of a probe container reaches an NDJSON client."""
    tally = StreamTally(1)
    threading.Thread(target=ndjson_client, args=(url, tally), daemon=True).start()
    assert tally.ready.wait(30), "no stream"
    labels = {BENCH_LABEL: "1", "io.balena.supervised": "true", "io.balena.service-name": SERVICE}
    probe = client.containers.run(IMAGE, ["sh", "-c", "echo 0; sleep 600"], labels=labels, detach=True)
    try:
        assert tally.done.wait(60), "the collector did not start"
    finally:
        probe.remove(force=True)


def print_header() -> None:
    header = f"{'':<26} {'lines/s':>9} {'ratio':>7} {'lost':>6} {'suppressed':>10}"
    print(f"{header} {'p50 ms':>8} {'p99 ms':>8}")


def print_row(name: str, figures: Figures, base: Figures) -> None:
    print(
        f"{name:<26} {figures.rate:>9.0f} {figures.rate / base.rate if base.rate else 0:>7.2f}"
        f" {figures.lost:>6} {figures.suppressed:>10} {figures.p50:>8.0f} {figures.p99:>8.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3, help="burst runs (the median run is shown)")
    parser.add_argument("--client", choices=("ndjson", "ws"), help=argparse.SUPPRESS)
    parser.add_argument("client_args", nargs="*", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.client:
        run_client(arguments.client, arguments.client_args[0], int(arguments.client_args[1]))
        return

    data_dir = Path(tempfile.mkdtemp(prefix="supervisor-bench-"))
    use_bench_environment(data_dir)
    import docker

    started = start_missing_services(data_dir)
    client = docker.from_env()
    ensure_image()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        with running_agent(dict(os.environ), port=port, log_path=data_dir / "processes.log"):
            wait_for_collector(client, url)

            lines = arguments.lines
            print(f"{lines} lines per run; {GOAL}")
            print_header()
            for scenario, command, runs in (
                ("burst", burst(lines), arguments.runs),
                ("paced", paced(lines), 1),
            ):
                base_runs = sorted(
                    (baseline(client, command, lines) for _ in range(runs)), key=lambda f: f.rate
                )
                agent_runs = sorted(
                    (through_agent(client, url, command, lines) for _ in range(runs)),
                    key=lambda r: r["ndjson"].rate,
                )
                base, agent = base_runs[runs // 2], agent_runs[runs // 2]
                print_row(f"{scenario}: docker SDK", base, base)
                print_row(f"{scenario}: NDJSON stream", agent["ndjson"], base)
                print_row(f"{scenario}: WebSocket stream", agent["ws"], base)
    finally:
        for container in client.containers.list(all=True, filters={"label": BENCH_LABEL}):
            container.remove(force=True)
        for service in started:
            service.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
