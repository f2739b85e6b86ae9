"""Start → /ping: how long the agent takes from its command to its first answer.

The agent is started 5 times in one data dir that is already migrated (the first,
uncounted start migrates it), and stopped after each answer: as a device's systemd unit
starts it (the agent process, its Redis already up as the unit before it; the default),
or as `make run` does (`--layout make-run`: the parent, which starts Redis, then the agent
process).
Prints the median to /ping (answered from the listen) and to /v1/healthy (the API
loaded), a baseline measured in the same run (a bare interpreter's
`python -m http.server` until it answers) and the ratio to the original supervisor's
0.55 s on this machine kind.

    .venv/bin/python bench/startup.py [--runs 5] [--layout systemd|make-run]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
ORIGINAL_SUPERVISOR_SECONDS = 0.55


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers(url: str) -> bool:
    """Whether `url` gives an HTTP answer (whatever its status)."""
    try:
        urllib.request.urlopen(url, timeout=1).read()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def seconds_to_answers(argv: list[str], urls: list[str], env: dict[str, str]) -> list[float]:
    """Seconds from the command's start until each of `urls` answers, in turn."""
    began = time.monotonic()
    process = subprocess.Popen(argv, cwd=PROJECT_DIR, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    seconds = []
    try:
        for url in urls:
            while not answers(url):
                if time.monotonic() - began > 60:
                    raise RuntimeError(f"{argv} did not answer {url} within 60 s")
                time.sleep(0.01)
            seconds.append(time.monotonic() - began)
        return seconds
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--layout", choices=("systemd", "make-run"), default="systemd")
    arguments = parser.parse_args()
    runs = arguments.runs
    with tempfile.TemporaryDirectory() as root, contextlib.ExitStack() as cleanup:
        port = free_port()
        env = {**os.environ, "SUPERVISOR_DATA_DIR": f"{root}/data", "SUPERVISOR_HOST_ROOT": f"{root}/host",
               "SUPERVISOR_PORT": str(port)}  # fmt: skip
        agent = [sys.executable, "-m", "supervisor_site.agent"]
        if arguments.layout == "systemd":
            sys.path.insert(0, str(PROJECT_DIR))
            from tests.systemd_units import AGENT_UNIT, REDIS_UNIT, start_unit, stop_unit, unit_command

            Path(root, "data").mkdir(mode=0o700)
            redis = start_unit(REDIS_UNIT, env, Path(root) / "redis.log")
            cleanup.callback(stop_unit, redis, REDIS_UNIT)
            agent = unit_command(AGENT_UNIT, env)
        # /ping answers from the listen; /v1/healthy once the API is loaded (Django, the
        # state files checked): both are reported.
        urls = [f"http://127.0.0.1:{port}/ping", f"http://127.0.0.1:{port}/v1/healthy"]
        seconds_to_answers(agent, urls, env)  # installs: migrations, identity
        timings = [seconds_to_answers(agent, urls, env) for _ in range(runs)]
        baseline_port = free_port()
        server = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(baseline_port)]
        baselines = [
            seconds_to_answers(server, [f"http://127.0.0.1:{baseline_port}/"], {**os.environ, "PWD": root})[0]
            for _ in range(runs)
        ]
    median = statistics.median(t[0] for t in timings)
    api_median = statistics.median(t[1] for t in timings)
    baseline = statistics.median(baselines)
    print("start -> /ping, s:", " ".join(f"{t[0]:.2f}" for t in timings))
    print("start -> /v1/healthy (the API loaded), s:", " ".join(f"{t[1]:.2f}" for t in timings))
    print(f"agent median: {median:.2f} s to /ping, {api_median:.2f} s to the API")
    print(f"bare python http.server: {baseline:.2f} s -> agent = {median / baseline:.1f}x")
    ratio = median / ORIGINAL_SUPERVISOR_SECONDS
    print(f"original supervisor: {ORIGINAL_SUPERVISOR_SECONDS} s -> ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
