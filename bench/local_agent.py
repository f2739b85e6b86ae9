"""The agent as a device runs it (`python -m supervisor_site.agent`: its parent and its
agent process, web server, worker and log collection), for the benchmarks: started in a data dir of its
own on a Redis database of the benchmark's own (which the benchmark reads too), stopped
afterwards."""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent

AGENT = ["-m", "supervisor_site.agent"]


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


def ensure_busybox_image(name: str, applets: tuple[str, ...] = ("sh", "sleep")) -> None:
    """A local image of Debian's static busybox with the given applets, imported unless the
    engine has it (no registry is reachable here)."""
    if subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0:
        return
    with tempfile.TemporaryDirectory() as root:
        Path(root, "bin").mkdir()
        shutil.copy("/bin/busybox", Path(root, "bin", "busybox"))
        for applet in applets:
            Path(root, "bin", applet).symlink_to("busybox")
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-", name], stdin=tar.stdout, check=True, capture_output=True)
        tar.wait()


def answers(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", "/ping")
        return connection.getresponse().status == 200
    except OSError:
        return False


@contextmanager
def running_agent(env: dict[str, str], *, port: int, log_path: Path) -> Iterator[None]:
    """Migrate, empty the Redis database, start the agent, wait until /ping answers and its
    worker is ready; stop it on exit."""
    from supervisor_site.system_services import wait_until

    python = sys.executable
    env = {**env, "SUPERVISOR_PORT": str(port), "SUPERVISOR_LISTEN_ADDRESS": "127.0.0.1"}
    subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=PROJECT_DIR, env=env, check=True)
    flush = (
        "import django; django.setup(); "
        "from apps_api.redis_store import redis_client; redis_client().flushdb()"
    )
    subprocess.run([python, "-c", flush], cwd=PROJECT_DIR, env=env, check=True)
    with open(log_path, "wb") as log:
        agent = subprocess.Popen([python, *AGENT], cwd=PROJECT_DIR, env=env, stdout=log, stderr=log)
    try:
        assert wait_until(lambda: answers(port), 60), f"the agent did not start; see {log_path}"
        assert wait_until(lambda: b" ready." in log_path.read_bytes(), 60), f"no worker; see {log_path}"
        yield
    finally:
        agent.terminate()
        try:
            agent.wait(30)
        except subprocess.TimeoutExpired:
            agent.kill()
