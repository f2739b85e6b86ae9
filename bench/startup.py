"""Start → /ping: how long the agent takes from its command to its first answer.

The agent (`python -m supervisor_site.agent`) is started 5 times in one data dir that is
already migrated (the first, uncounted start migrates it), and stopped after each answer.
Prints the median, a baseline measured in the same run (a bare interpreter's
`python -m http.server` until it answers) and the ratio to the original supervisor's
0.55 s on this machine kind.

    .venv/bin/python bench/startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
ORIGINAL_SUPERVISOR_SECONDS = 0.55


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def seconds_to_answer(argv: list[str], url: str, env: dict[str, str]) -> float:
    began = time.monotonic()
    process = subprocess.Popen(argv, cwd=PROJECT_DIR, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        while time.monotonic() - began < 60:
            try:
                urllib.request.urlopen(url, timeout=1).read()
                return time.monotonic() - began
            except OSError:
                time.sleep(0.01)
        raise RuntimeError(f"{argv} did not answer {url} within 60 s")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as root:
        port = free_port()
        env = {**os.environ, "SUPERVISOR_DATA_DIR": f"{root}/data", "SUPERVISOR_HOST_ROOT": f"{root}/host",
               "SUPERVISOR_PORT": str(port)}  # fmt: skip
        agent = [sys.executable, "-m", "supervisor_site.agent"]
        url = f"http://127.0.0.1:{port}/ping"
        seconds_to_answer(agent, url, env)  # installs: migrations, identity
        timings = [seconds_to_answer(agent, url, env) for _ in range(runs)]
        baseline_port = free_port()
        server = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(baseline_port)]
        baselines = [
            seconds_to_answer(server, f"http://127.0.0.1:{baseline_port}/", {**os.environ, "PWD": root})
            for _ in range(runs)
        ]
    median, baseline = statistics.median(timings), statistics.median(baselines)
    print("start -> /ping, s:", " ".join(f"{t:.2f}" for t in timings))
    print(f"agent median: {median:.2f} s")
    print(f"bare python http.server: {baseline:.2f} s -> agent = {median / baseline:.1f}x")
    ratio = median / ORIGINAL_SUPERVISOR_SECONDS
    print(f"original supervisor: {ORIGINAL_SUPERVISOR_SECONDS} s -> ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
