"""Logs uploaded to the cloud: throughput, loss and latency, against reading Docker
directly in the same run.

Runs the agent as a device runs it (bench/local_agent.py), its log uploader included, as
a provisioned device whose cloud is the tests' fake balena API (tests/fake_cloud.py, in
this process, over loopback HTTP). A supervised container prints N numbered lines as fast
as it can ("burst"), then at about 20 000 lines/s ("paced"). Figures:

- lines/s: lines received by the cloud / (last arrival - Docker's timestamp of the first);
- lost: numbers never uploaded, and how many the upload reported suppressed (its 256 KB
  buffer overflowing is the designed behaviour under a burst);
- latency p50/p99: arrival at the cloud - the line's Docker timestamp (ms).

The baseline is the same output read straight from Docker with the docker SDK.

    .venv/bin/python bench/cloud_logs.py [--lines 100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.local_agent import running_agent, start_missing_services, use_bench_environment
from bench.logs import (
    BENCH_LABEL,
    IMAGE,
    Figures,
    baseline,
    burst,
    ensure_image,
    free_port,
    paced,
    print_header,
    print_row,
    summarise,
)

SERVICE_ID = 41
SUPPRESSED = "Warning: Suppressed "


def uploaded(cloud: Any, since: int, expected: int) -> Figures:
    """What reached the cloud of the counter's lines, from log record `since` on."""
    stamps, arrivals, numbers, suppressed = [], [], set(), 0
    with cloud._lock:  # the server thread appends to both lists
        records, arrived = cloud.log_lines[since:], cloud.log_arrivals[since:]
    for record, arrival in zip(records, arrived, strict=True):
        if record.get("serviceId") == SERVICE_ID:
            stamps.append(record["timestamp"])
            arrivals.append(arrival * 1000)
            numbers.add(int(record["message"]))
        elif record.get("isSystem") and record["message"].startswith(SUPPRESSED):
            suppressed += int(record["message"].split()[2])
    return summarise(stamps, arrivals, numbers, expected, suppressed)


def through_cloud(client: Any, cloud: Any, command: str, lines: int) -> Figures:
    labels = {BENCH_LABEL: "1", "io.balena.supervised": "true", "io.balena.service-name": "counter",
              "io.balena.service-id": str(SERVICE_ID), "io.balena.app-id": "1"}  # fmt: skip
    since = len(cloud.log_lines)
    container = client.containers.run(IMAGE, ["sh", "-c", command], labels=labels, detach=True)
    try:
        container.wait(timeout=600)
        # Until nothing more arrives for 3 s: what is still missing then was dropped.
        seen, quiet_since = -1, time.monotonic()
        while time.monotonic() - quiet_since < 3:
            figures = uploaded(cloud, since, lines)
            if figures.received + figures.suppressed >= lines:
                break
            if figures.received != seen:
                seen, quiet_since = figures.received, time.monotonic()
            time.sleep(0.2)
        return uploaded(cloud, since, lines)
    finally:
        container.remove(force=True)


def warm_up(client: Any, cloud: Any, log_path: Path) -> None:
    """Until a line reaches the cloud: the first line opens the stream, which sends 5 s later."""
    from supervisor_site.system_services import wait_until

    labels = {BENCH_LABEL: "1", "io.balena.supervised": "true", "io.balena.service-name": "probe"}
    probe = client.containers.run(IMAGE, ["sh", "-c", "while true; do echo 0; sleep 0.2; done"],
                                  labels=labels, detach=True)  # fmt: skip
    try:
        assert wait_until(lambda: bool(cloud.log_lines), 60), f"nothing reached the cloud; see {log_path}"
    finally:
        probe.remove(force=True)


def provisioned_config(cloud: Any, data_dir: Path) -> Path:
    """A config.json of a device the fake cloud knows, provisioned already."""
    uuid, key = "b" * 32, "c" * 32
    device = cloud.add_device(uuid, key)
    config = {"uuid": uuid, "deviceApiKey": key, "apiEndpoint": cloud.url, "applicationId": "1",
              "deviceType": "genericx86-64-ext", "deviceId": device.device_id,
              "registered_at": 1}  # fmt: skip
    path = data_dir / "boot" / "config.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(config))
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3, help="burst runs (the median run is shown)")
    arguments = parser.parse_args()

    from tests.fake_cloud import FakeCloud

    data_dir = Path(tempfile.mkdtemp(prefix="supervisor-bench-"))
    cloud = FakeCloud()
    cloud.start()
    use_bench_environment(data_dir, SUPERVISOR_CONFIG_JSON=str(provisioned_config(cloud, data_dir)))
    import docker

    started = start_missing_services(data_dir)
    client = docker.from_env()
    ensure_image()
    try:
        with running_agent(dict(os.environ), port=free_port(), log_path=data_dir / "processes.log"):
            warm_up(client, cloud, data_dir / "processes.log")
            lines = arguments.lines
            print(f"{lines} lines per run, uploaded to a fake cloud over loopback HTTP")
            print_header()
            for scenario, command, runs in (
                ("burst", burst(lines), arguments.runs),
                ("paced", paced(lines), 1),
            ):
                base_runs = [baseline(client, command, lines) for _ in range(runs)]
                cloud_runs = [through_cloud(client, cloud, command, lines) for _ in range(runs)]
                base_runs.sort(key=lambda f: f.rate)
                cloud_runs.sort(key=lambda f: f.rate)
                base = base_runs[runs // 2]
                print_row(f"{scenario}: docker SDK", base, base)
                print_row(f"{scenario}: cloud upload", cloud_runs[runs // 2], base)
    finally:
        for container in client.containers.list(all=True, filters={"label": BENCH_LABEL}):
            container.remove(force=True)
        for service in started:
            service.stop()
        cloud.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
