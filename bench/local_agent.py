"""The agent's processes as the Procfile runs them, for the benchmarks: started in a data
dir of their own on a Redis database of their own, stopped afterwards."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent

WORKER = ["-m", "celery", "-A", "supervisor_site", "worker", "--pool=threads", "--concurrency=4",
          "--queues=supervisor", "--without-heartbeat", "--without-gossip", "--without-mingle",
          "--loglevel=WARNING"]  # fmt: skip
WEB = [
    "-m",
    "daphne",
    "--verbosity",
    "0",
    "-b",
    "127.0.0.1",
    "-p",
    "{port}",
    "supervisor_site.asgi:application",
]
COLLECTOR = ["manage.py", "collect_logs"]


def use_bench_environment(data_dir: Path, **overrides: str) -> None:
    """This process's environment (inherited by the agent's processes): a data dir and a
    Redis database of the benchmark's own."""
    os.environ.update(
        DJANGO_SETTINGS_MODULE="supervisor_site.settings",
        SUPERVISOR_DATA_DIR=str(data_dir),
        SUPERVISOR_HOST_ROOT=str(data_dir / "host"),
        REDIS_URL=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
        PYTHONUNBUFFERED="1",
        **overrides,
    )


def start_missing_services(data_dir: Path) -> list[Any]:
    """Redis and the Docker engine, each started unless running; returns the started ones
    (to stop at the end)."""
    from supervisor_site.system_services import ensure_dockerd, ensure_redis

    services = (
        ensure_redis(os.environ["REDIS_URL"], data_dir),
        ensure_dockerd("unix:///var/run/docker.sock", data_dir),
    )
    return [service for service in services if service]


def answers(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", "/ping")
        return connection.getresponse().status == 200
    except OSError:
        return False


@contextmanager
def running_agent(
    env: dict[str, str], *, port: int, log_path: Path, worker: bool = False, collector: bool = False
) -> Iterator[None]:
    """Migrate, empty the Redis database, start the web process (and the worker and the
    log collector when asked), wait until /ping answers; stop them all on exit."""
    from supervisor_site.system_services import wait_until

    python = sys.executable
    env = {**env, "SUPERVISOR_PORT": str(port)}
    subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=PROJECT_DIR, env=env, check=True)
    flush = (
        "import django; django.setup(); "
        "from apps_api.redis_store import redis_client; redis_client().flushdb()"
    )
    subprocess.run([python, "-c", flush], cwd=PROJECT_DIR, env=env, check=True)
    commands = [[python, *(part.format(port=port) for part in WEB)]]
    if worker:
        commands.append([python, *WORKER])
    if collector:
        commands.append([python, *COLLECTOR])
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with open(log_path, "wb") as log:
            for argv in commands:
                processes.append(subprocess.Popen(argv, cwd=PROJECT_DIR, env=env, stdout=log, stderr=log))
        assert wait_until(lambda: answers(port), 60), f"the web process did not start; see {log_path}"
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
