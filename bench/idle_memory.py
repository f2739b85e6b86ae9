"""Idle memory of the whole agent: PSS summed over every process it runs, Redis included.

Starts the agent in a fresh data dir the way a device's systemd units run it (Redis and
the agent process, no parent; the default) or the way `make run` does (`--layout
make-run`: the supervising parent, which starts Redis and the agent process), as the
tests start it (tests/agent_process.py), waits until it is ready and settles, then sums
the PSS of those processes and their children (dockerd excluded: it is the system's);
then again with 5 services, and under API load.
Prints the figure, a bare Python interpreter measured in the same run as a baseline,
and the ratio to the original supervisor's 97 MiB RSS on this machine kind.

    .venv/bin/python bench/idle_memory.py [--managed] [--layout systemd|make-run]
    .venv/bin/python bench/idle_memory.py --imports

--imports starts nothing: it loads the agent process's modules in the order the agent
does, in a fresh interpreter, and prints the RSS each step adds (where the agent's memory
goes, by package).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
ORIGINAL_SUPERVISOR_MIB = 97.0
SETTLE_SECONDS = 10


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, []))
    return tree


def command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:70]
    except OSError:
        return "?"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def managed_config(data_dir: Path) -> Any:
    """A fake cloud (tests/fake_cloud.py) in this process, and a config.json naming it with a
    provisioning key: the agent provisions itself, polls and reports as a managed device."""
    sys.path.insert(0, str(PROJECT_DIR))
    from tests.fake_cloud import FakeCloud

    cloud = FakeCloud()
    cloud.start()
    config = {"apiEndpoint": cloud.url, "apiKey": cloud.provisioning_key, "applicationId": "1",
              "deviceType": "genericx86-64-ext"}  # fmt: skip
    boot = data_dir / "boot"
    boot.mkdir()
    (boot / "config.json").write_text(json.dumps(config))
    return cloud


def agent_pss(roots: list[int], *, show: bool = False) -> tuple[int, int]:
    """(PSS in KiB, process count) of the agent's process trees, dockerd aside."""
    skip = ("dockerd", "containerd")
    processes = [p for root in roots for p in process_tree(root) if not command_name(p).startswith(skip)]
    total = 0
    for pid in processes:
        total += pss_kib(pid)
        if show:
            print(f"  {pss_kib(pid) / 1024:7.1f} MiB  {command_name(pid)}")
    return total, len(processes)


LAYOUTS = ("systemd", "make-run")


def started_agent(layout: str, data_dir: Path, port: int) -> Any:
    """The agent as its systemd units run it (tests/systemd_units.py: Redis and the agent
    process), or as `make run` runs it (its launcher, whose supervising parent starts Redis
    and the agent process)."""
    from tests.agent_process import Agent
    from tests.systemd_units import UnitsAgent

    where = {"port": port, "host_root": data_dir / "host", "log_file": data_dir / "bench-agent.log"}
    agent = (
        UnitsAgent(data_dir, **where)
        if layout == "systemd"
        else Agent(data_dir, entry="supervisor_site.launcher", **where)
    )
    agent.start()
    return agent


def agent_roots(agent: Any) -> list[int]:
    """The processes whose trees are the agent: the parent, or each unit's process."""
    return [agent.process.pid] + ([agent.redis.pid] if getattr(agent, "redis", None) else [])


def call(port: int, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def set_services(port: int, count: int) -> None:
    """A local-mode target of `count` busybox services; returns once it is applied."""
    services = {
        str(i): {"serviceName": f"s{i}", "serviceId": i, "imageId": i, "image": "local/bench-busybox:latest",
                 "command": "sleep 100000", "stop_signal": "SIGKILL", "environment": {}, "labels": {}}
        for i in range(1, count + 1)
    }  # fmt: skip
    apps = {"1": {"name": "bench", "commit": "c1", "releaseId": "1", "services": services}} if count else {}
    call(port, "POST", "/v2/local/target-state", {"local": {"name": "bench", "config": {}, "apps": apps}})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = call(port, "GET", "/v2/state/status")
        if status["appState"] == "applied" and len(status["containers"]) == count:
            return
        time.sleep(0.5)
    raise RuntimeError(f"{count} services not applied in 120 s")


def under_load(port: int, seconds: float, measure: Callable[[], tuple[int, int]]) -> tuple[int, int]:
    """`measure()` taken halfway through `seconds` of 16 clients reading the state."""
    stop = threading.Event()

    def client(path: str) -> None:
        while not stop.is_set():
            call(port, "GET", path)

    threads = [threading.Thread(target=client, args=(path,)) for path in
               ("/v2/applications/state", "/v1/device") * 8]  # fmt: skip
    for thread in threads:
        thread.start()
    time.sleep(seconds / 2)
    figures = measure()
    time.sleep(seconds / 2)
    stop.set()
    for thread in threads:
        thread.join()
    return figures


# The agent process's loading, step by step, as agent_main.py and agent_setup.py do it.
IMPORT_STEPS = [
    ("daphne, Twisted, asyncio (the web server, first)", "import supervisor_site.web_server"),
    ("django.setup(): settings, apps, models, the admin", "import django; django.setup()"),
    ("agent_setup: Celery, the engine, logs, cloud", "import supervisor_site.agent_setup"),
    ("rest_framework.views (DRF)", "import rest_framework.views"),
    ("the API's OpenAPI schemas (drf-spectacular)", "import apps_api.api.schemas"),
    ("the API's views", "import apps_api.api.v1, apps_api.api.v2, localmode.views"),
    (
        "the URLconf and the ASGI application",
        "from supervisor_site import web_server; web_server.load_application()",
    ),
    ("Celery's worker", "import celery.apps.worker"),
]
MEASURE_IMPORTS = """
import sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
last = rss()
print(f"  {last:6.1f} MiB   the interpreter")
for name, code in STEPS:
    exec(code)
    now = rss()
    print(f"  {now - last:+6.1f} MiB   {name}  ({len(sys.modules)} modules)")
    last = now
print(f"  {last:6.1f} MiB   in all (RSS)")
"""


def measure_imports() -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        env = {
            **os.environ,
            "SUPERVISOR_DATA_DIR": data_dir,
            "DJANGO_SETTINGS_MODULE": "supervisor_site.settings",
        }
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=PROJECT_DIR, env=env, check=True)
        script = f"STEPS = {IMPORT_STEPS!r}\n{MEASURE_IMPORTS}"
        print("the agent process, the RSS each step of its loading adds:")
        subprocess.run([sys.executable, "-c", script], cwd=PROJECT_DIR, env=env, check=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--managed", action="store_true", help="a device managed by a (fake) cloud")
    parser.add_argument("--imports", action="store_true", help="where the agent's memory goes, by package")
    parser.add_argument(
        "--layout", choices=LAYOUTS, default="systemd", help="as systemd runs it, or as make run does"
    )
    arguments = parser.parse_args()
    if arguments.imports:
        measure_imports()
        return
    managed = arguments.managed
    baseline = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    time.sleep(1)
    baseline_kib = pss_kib(baseline.pid)
    baseline.kill()

    port = free_port()
    sys.path.insert(0, str(PROJECT_DIR))
    from bench.local_agent import ensure_busybox_image

    ensure_busybox_image("local/bench-busybox:latest")
    with tempfile.TemporaryDirectory() as root:
        data_dir = Path(root) / "data"
        data_dir.mkdir(mode=0o700)
        cloud = managed_config(data_dir) if managed else None
        agent = started_agent(arguments.layout, data_dir, port)
        try:
            time.sleep(SETTLE_SECONDS)
            total_kib, count = agent_pss(agent_roots(agent), show=True)
            if not managed:
                set_services(port, 5)
                time.sleep(SETTLE_SECONDS)
                five_kib, _ = agent_pss(agent_roots(agent))
                load_kib, _ = under_load(port, 10, lambda: agent_pss(agent_roots(agent)))
                set_services(port, 0)
            if cloud is not None:
                provisioned = any(r.path == "/device/register" for r in cloud.received)
                print(f"  (managed: provisioned {provisioned}, {len(cloud.received)} requests to the cloud)")
        finally:
            agent.stop()
            if cloud is not None:
                cloud.stop()

    total_mib = total_kib / 1024
    kind = "managed" if managed else "unmanaged"
    print(f"agent idle PSS ({kind}, {arguments.layout}): {total_mib:.1f} MiB in {count} processes")
    if not managed:
        print(f"after 5 services: {five_kib / 1024:.1f} MiB")
        print(f"under API load (16 clients): {load_kib / 1024:.1f} MiB")
    print(
        f"bare python interpreter: {baseline_kib / 1024:.1f} MiB -> agent = {total_kib / baseline_kib:.1f}x"
    )
    print(
        f"original supervisor: {ORIGINAL_SUPERVISOR_MIB} MiB RSS"
        f" -> ratio {total_mib / ORIGINAL_SUPERVISOR_MIB:.2f}"
    )


if __name__ == "__main__":
    main()
