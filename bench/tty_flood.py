"""A tty container that writes without ever ending a line (a `\\r` progress bar left running,
or a hostile app): what it costs the agent that reads its output.

Starts the agent (bench/local_agent.py), runs a supervised tty container writing --mib MiB
of `x` with no newline, and meanwhile samples the agent process's RSS and asks /ping every
10 ms. Prints the RSS before and at its peak, and /ping's p50/p99 idle (measured first, in
the same run: the baseline) and during the flood, with their ratio.

    .venv/bin/python bench/tty_flood.py [--mib 64]
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

from bench.local_agent import (  # noqa: E402
    ensure_busybox_image,
    running_agent,
    start_missing_services,
    use_bench_environment,
)
from bench.logs import free_port  # noqa: E402

IMAGE = "local/bench-tty-flood:latest"
BENCH_LABEL = "io.balena.bench-tty-flood"
GOAL = "goal: the agent's RSS within +20 MiB, /ping p99 under 50 ms during the flood"


def agent_pid() -> int:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().startswith(b"supervisor: agent"):
                return int(cmdline.parent.name)
        except OSError:
            continue
    raise RuntimeError("no agent process")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def ping_latencies(port: int, stop: threading.Event, into: list[float]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while not stop.is_set():
        began = time.perf_counter()
        connection.request("GET", "/ping")
        connection.getresponse().read()
        into.append((time.perf_counter() - began) * 1000)
        time.sleep(0.01)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=64)
    arguments = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="supervisor-bench-"))
    use_bench_environment(data_dir)
    import docker

    started = start_missing_services(data_dir)
    client = docker.from_env()
    ensure_busybox_image(IMAGE, ("sh", "head", "tr", "sleep"))
    port = free_port()
    try:
        with running_agent(dict(os.environ), port=port, log_path=data_dir / "processes.log"):
            pid = agent_pid()
            time.sleep(5)
            idle: list[float] = []
            stop = threading.Event()
            pinger = threading.Thread(target=ping_latencies, args=(port, stop, idle))
            pinger.start()
            ticks_before = cpu_ticks(pid)
            time.sleep(5)
            idle_ticks_per_second = (cpu_ticks(pid) - ticks_before) / 5  # what the pings cost
            stop.set()
            pinger.join()

            before = rss_kib(pid)
            flooded: list[float] = []
            stop = threading.Event()
            pinger = threading.Thread(target=ping_latencies, args=(port, stop, flooded))
            pinger.start()
            labels = {BENCH_LABEL: "1", "io.balena.supervised": "true", "io.balena.service-name": "flood",
                      "io.balena.service-id": "1", "io.balena.app-id": "1"}  # fmt: skip
            command = f"head -c {arguments.mib * 1024 * 1024} /dev/zero | tr '\\0' x; echo; sleep 600"
            began = time.monotonic()
            client.containers.run(IMAGE, ["sh", "-c", command], labels=labels, tty=True, detach=True)
            # Read when the agent is back to what the pings alone cost, for 5 s in a row.
            peak, quiet_since = before, time.monotonic()
            window_ticks, window_began = cpu_ticks(pid), time.monotonic()
            while time.monotonic() - quiet_since < 5 and time.monotonic() - began < 900:
                peak = max(peak, rss_kib(pid))
                time.sleep(0.05)
                if (elapsed := time.monotonic() - window_began) >= 1:
                    rate = (cpu_ticks(pid) - window_ticks) / elapsed
                    if rate > 2 * idle_ticks_per_second + 5:
                        quiet_since = time.monotonic()
                    window_ticks, window_began = cpu_ticks(pid), time.monotonic()
            stop.set()
            pinger.join()
            seconds = quiet_since - began
            print(f"{arguments.mib} MiB without a newline, read in {seconds:.1f} s; {GOAL}")
            print(f"agent RSS: {before / 1024:.1f} MiB before, {peak / 1024:.1f} MiB at peak "
                  f"(+{(peak - before) / 1024:.1f} MiB)")  # fmt: skip
            idle_p50, idle_p99 = statistics.median(idle), percentile(idle, 0.99)
            flood_p50, flood_p99 = statistics.median(flooded), percentile(flooded, 0.99)
            print(f"/ping idle:  p50 {idle_p50:.1f} ms, p99 {idle_p99:.1f} ms ({len(idle)} requests)")
            print(f"/ping flood: p50 {flood_p50:.1f} ms, p99 {flood_p99:.1f} ms ({len(flooded)} requests); "
                  f"p99 ratio {flood_p99 / idle_p99:.1f}")  # fmt: skip
    finally:
        for container in client.containers.list(all=True, filters={"label": BENCH_LABEL}):
            container.remove(force=True)
        for service in started:
            service.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
