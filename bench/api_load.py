"""Read throughput and latency of the device API with 5 services running.

Starts the agent (its web server and worker) in a temporary data
dir, applies a target of 5 busybox services, then loads GET /v2/applications/state and
GET /v1/device with 1 and 16 concurrent clients for 10 s each. GET /ping on the same
server, loaded the same way, is the baseline of this run.

    .venv/bin/python bench/api_load.py [--seconds 10] [--client wrk|python] [--runs 5] [--clients 16]

With --runs N, each figure is measured N times and the medians are printed.

wrk (Debian package `wrk`) is the load client when installed: written in C, it leaves the
two cores to the server; the Python client (threads) competes with it for them.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))
DATA_DIR = Path(tempfile.mkdtemp(prefix="supervisor-bench-"))

from bench.local_agent import ensure_busybox_image, running_agent, use_bench_environment  # noqa: E402

use_bench_environment(DATA_DIR)
from supervisor_site.system_services import ensure_dockerd, ensure_redis  # noqa: E402

IMAGE = "local/bench-busybox:latest"
# The original supervisor (v19) on this machine kind, wrk, 10 s, 16 clients, 5 services:
# (req/s, p99 ms). The ratio columns divide ours by these (issue 16's table).
ORIGINAL_AT_16 = {
    "/ping": (5224, 8.1),
    "/v1/device": (546, 47.9),
    "/v2/applications/state": (288, 78.5),
    "/v2/state/status": None,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load(port: int, path: str, clients: int, seconds: float) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of `clients` keep-alive clients hitting `path`."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    deadline = time.perf_counter() + seconds

    def client(out: list[float]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{path}: {response.status}")
            out.append(time.perf_counter() - began)
        connection.close()

    threads = [threading.Thread(target=client, args=(out,)) for out in latencies]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    every = sorted(value for out in latencies for value in out)
    p99 = every[min(len(every) - 1, int(len(every) * 0.99))]
    return len(every) / elapsed, statistics.median(every) * 1000, p99 * 1000


def load_with_wrk(port: int, path: str, clients: int, seconds: float) -> tuple[float, float, float]:
    """The same figures measured by wrk (C, so the client takes little of the 2 cores)."""
    threads = min(clients, 2)
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{clients}",
        f"-d{seconds:g}s",
        "--latency",
        f"http://127.0.0.1:{port}{path}",
    ]
    output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in output:
        raise RuntimeError(f"{path}: non-2xx answers\n{output}")
    percentiles = {}
    for line in output.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] in ("50%", "99%"):
            percentiles[fields[0]] = _milliseconds(fields[1])
        if line.startswith("Requests/sec:"):
            rate = float(fields[1])
    return rate, percentiles["50%"], percentiles["99%"]


def _milliseconds(value: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if value.endswith(unit):
            return float(value[: -len(unit)]) * factor
    raise ValueError(value)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=1, help="measure each figure this many times: medians")
    parser.add_argument("--clients", default="1,16", help="the client counts, comma-separated")
    parser.add_argument(
        "--client", choices=("wrk", "python"), default="wrk" if shutil.which("wrk") else "python"
    )
    arguments = parser.parse_args()
    seconds = arguments.seconds
    measure = load_with_wrk if arguments.client == "wrk" else load

    services = (
        ensure_redis(os.environ["REDIS_URL"], DATA_DIR),
        ensure_dockerd("unix:///var/run/docker.sock", DATA_DIR),
    )
    started = [s for s in services if s]
    ensure_busybox_image(IMAGE)
    port = free_port()
    env = {**os.environ, "SUPERVISOR_PORT": str(port)}
    try:
        with running_agent(dict(os.environ), port=port, log_path=DATA_DIR / "processes.log"):
            try:
                apply_target(env, bench_target(services=5))
                for path in ENDPOINTS:
                    load(port, path, 1, 1.0)  # warm-up: first-request imports and caches
                print(f"load client: {arguments.client}, {arguments.runs} run(s) of {seconds:g} s, medians")
                clients = [int(count) for count in arguments.clients.split(",")]
                print_table(port, measure, seconds, clients=clients, runs=arguments.runs)
            finally:
                apply_target(env, bench_target(services=0), check=False)
    finally:
        for service in started:
            service.stop()
        shutil.rmtree(DATA_DIR, ignore_errors=True)


ENDPOINTS = ("/ping", "/v2/applications/state", "/v1/device", "/v2/state/status")


def bench_target(*, services: int) -> dict[str, Any]:
    """App 1 with `services` busybox services (none: the app is removed)."""
    services_doc = {
        str(i): {"serviceName": f"s{i}", "serviceId": i, "imageId": i, "image": IMAGE, "environment": {},
                 "labels": {}, "command": "sleep 100000", "stop_signal": "SIGKILL"}
        for i in range(1, services + 1)
    }  # fmt: skip
    apps = (
        {"1": {"name": "bench", "commit": "c1", "releaseId": 1, "services": services_doc}} if services else {}
    )
    return {"local": {"name": "bench", "config": {}, "apps": apps}}


def apply_target(env: dict[str, str], document: dict[str, Any], *, check: bool = True) -> None:
    path = DATA_DIR / "target.json"
    path.write_text(json.dumps(document))
    subprocess.run([sys.executable, "manage.py", "apply_target", str(path), "--wait"],
                   cwd=PROJECT_DIR, env=env, check=check, stdout=subprocess.DEVNULL)  # fmt: skip


Measure = Callable[[int, str, int, float], tuple[float, float, float]]


def print_table(port: int, measure: Measure, seconds: float, *, clients: list[int], runs: int) -> None:
    print(f"{'endpoint':<24} {'clients':>7} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'vs /ping':>8}"
          f" {'original req/s':>14} {'orig p99':>8} {'ratio':>6}")  # fmt: skip
    for count in clients:
        # Run after run over every route, so that a noisy spell spreads over all of them.
        figures: dict[str, list[tuple[float, float, float]]] = {path: [] for path in ENDPOINTS}
        for _ in range(runs):
            for path in ENDPOINTS:
                figures[path].append(measure(port, path, count, seconds))
        ping_rate = statistics.median(rate for rate, _, _ in figures["/ping"])
        for path in ENDPOINTS:
            rate, p50, p99 = (statistics.median(column) for column in zip(*figures[path], strict=True))
            original = ORIGINAL_AT_16.get(path) if count == 16 else None
            compared = (
                f" {original[0]:>14} {original[1]:>8.1f} {rate / original[0]:5.2f}x" if original else ""
            )
            figure = f"{rate:8.0f} {p50:7.1f} {p99:7.1f} {rate / ping_rate:8.2f}"
            print(f"{path:<24} {count:>7} {figure}{compared}")
        if runs > 1:
            for path in ENDPOINTS:
                each = ", ".join(f"{rate:.0f}" for rate, _, _ in figures[path])
                print(f"  {path} @{count}, req/s of each run: {each}")


if __name__ == "__main__":
    main()
