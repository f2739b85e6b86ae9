"""Soak: the agent under steady load for hours, watched for growth (issue #26 point 5).

Runs the agent as it ships (`python -m supervisor_site.agent`: the parent, its agent process
and its own redis-server) in local mode, on a private Docker engine in a network namespace of
its own (the tests use the system engine and remove every supervised container on it), with:

- a target of three busybox services (a sleeper, one with a named volume, and a chatty one
  printing about 10 lines/s), changed every 2 minutes (an environment value alternates, so
  one container is recreated each time);
- a restart-service every 30 s (the two quiet services in turn);
- 4 API clients asking the read endpoints in a loop, and a log stream (/v2/local/logs) held
  open and read all along.

Every --sample-minutes (and once at t=0, after the first apply) it prints the agent process's
RSS and PSS, open fds and threads, the parent's RSS, redis-server's used_memory, the SQLite
database's size (with its WAL) and the data dir's; at the end, each metric's growth from the
first sample at 10 minutes or later to the last (%) and its least-squares slope over those
samples (per hour), and the verdict: flat if no metric grew more than 5 %.

    .venv/bin/python bench/soak.py [--minutes 120] [--sample-minutes 10] [--keep]

Needs root (ip netns, dockerd), dockerd, redis-server and busybox-static.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests

PROJECT_DIR = Path(__file__).resolve().parent.parent
PYTHON = str(PROJECT_DIR / ".venv" / "bin" / "python")
IMAGE = "local/busybox:latest"
APPLETS = ("sh", "sleep", "echo", "cat", "ls", "env", "date", "seq", "true", "false", "kill")
PORT = 48484
BASE_URL = f"http://127.0.0.1:{PORT}"
APP_ID = "1"
QUIET_SERVICES = ("sleeper", "keeper")
READ_PATHS = ("/v2/applications/state", "/v1/device", "/v2/state/status", "/v2/local/target-state",
              "/ping", "/v1/healthy")  # fmt: skip
TARGET_EVERY = 120.0
RESTART_EVERY = 30.0
CLIENTS = 4
CLIENT_PAUSE = 0.75
WARMUP_MINUTES = 10.0
FLAT_PERCENT = 5.0
CLONE_NEWNET = 0x40000000
# `python -m supervisor_site.agent`, its parent titled `soak: supervisor parent` instead of
# `supervisor: parent`: the test suite refuses to start while a process with that title runs
# anywhere on the machine (tests/conftest.py), and the soak runs beside it.
AGENT_UNDER_ANOTHER_TITLE = (
    "import runpy, setproctitle\n"
    "title = setproctitle.setproctitle\n"
    "setproctitle.setproctitle = lambda name: title(\n"
    "    name.replace('supervisor: parent', 'soak: supervisor parent'))\n"
    "runpy.run_module('supervisor_site.agent', run_name='__main__', alter_sys=True)\n"
)


# --- the private engine and its namespace -------------------------------------------------


@dataclass
class Sandbox:
    """What the soak starts outside the agent: a temp dir, a network namespace, a dockerd."""

    root: Path
    netns: str
    dockerd: subprocess.Popen[bytes] | None = None
    agent: subprocess.Popen[bytes] | None = None

    @property
    def docker_host(self) -> str:
        return f"unix://{self.root / 'docker.sock'}"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"


def run(*command: str, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(command, check=True, capture_output=True, **kwargs)


def in_netns(netns: str, *command: str) -> list[str]:
    return ["ip", "netns", "exec", netns, *command]


def enter_netns(netns: str) -> None:
    """Move this process (before it starts any thread) into `netns`: the clients' loopback is the agent's."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open(f"/run/netns/{netns}") as handle:
        if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({netns})")


def wait_for(check: Any, timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def start_engine(box: Sandbox) -> None:
    run("ip", "netns", "add", box.netns)
    run(*in_netns(box.netns, "ip", "link", "set", "lo", "up"))
    enter_netns(box.netns)
    for name in ("docker", "exec"):
        (box.root / name).mkdir()
    # Not under `ip netns exec`: its fresh /sys has no cgroup mounts, which dockerd needs. This
    # process is in the namespace already, and so is what it starts.
    # Under another name, too: a test stops "the" dockerd, the first process it finds named so.
    dockerd = box.root / "soak-dockerd"
    dockerd.symlink_to(shutil.which("dockerd") or "/usr/bin/dockerd")
    command = [
        str(dockerd), "--data-root", str(box.root / "docker"), "--exec-root", str(box.root / "exec"),
        "--pidfile", str(box.root / "docker.pid"), "-H", box.docker_host, "--iptables=false",
        "--ip6tables=false",
    ]  # fmt: skip
    with open(box.root / "dockerd.log", "wb") as log:
        box.dockerd = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    engine = box.dockerd

    def answers() -> bool:
        if engine.poll() is not None:
            raise RuntimeError(f"dockerd exited with {engine.returncode}; see {box.root / 'dockerd.log'}")
        return (
            subprocess.run(["docker", "-H", box.docker_host, "version"], capture_output=True).returncode == 0
        )

    wait_for(answers, 60, "the private dockerd")


def import_image(box: Sandbox) -> None:
    """The test image: Debian's static busybox and a few applets, imported (no registry here)."""
    folder = box.root / "image"
    (folder / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", folder / "bin" / "busybox")
    for applet in APPLETS:
        (folder / "bin" / applet).symlink_to("busybox")
    tar = subprocess.Popen(["tar", "-C", str(folder), "-c", "."], stdout=subprocess.PIPE)
    run("docker", "-H", box.docker_host, "import", "-", IMAGE, stdin=tar.stdout)
    tar.wait()


# --- the agent --------------------------------------------------------------------------------


def agent_environment(box: Sandbox) -> dict[str, str]:
    """The unit's environment with this soak's engine, data dir, host root and port; no cloud
    in config.json (none is written), so the device is unmanaged: local mode, no key."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("SUPERVISOR_", "REDIS_URL", "DJANGO_SETTINGS", "DOCKER_"))}  # fmt: skip
    env.update(
        DOCKER_HOST=box.docker_host,
        SUPERVISOR_DATA_DIR=str(box.data_dir),
        SUPERVISOR_HOST_ROOT=str(box.root / "host"),
        SUPERVISOR_PORT=str(PORT),
        SUPERVISOR_LISTEN_ADDRESS="127.0.0.1",
        SUPERVISOR_LED_FILE=str(box.root / "led0"),
        # Never the host's system bus: nothing to reboot or reconfigure here.
        SUPERVISOR_DBUS_ADDRESS=f"unix:path={box.root / 'no-system-bus'}",
        PYTHONUNBUFFERED="1",
    )
    return env


def start_agent(box: Sandbox) -> None:
    (box.root / "host").mkdir()
    command = in_netns(box.netns, PYTHON, "-c", AGENT_UNDER_ANOTHER_TITLE)
    with open(box.root / "agent.log", "wb") as log:
        box.agent = subprocess.Popen(
            command, cwd=PROJECT_DIR, env=agent_environment(box), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    agent = box.agent

    def answers() -> bool:
        if agent.poll() is not None:
            raise RuntimeError(f"the agent exited with {agent.returncode}; see {box.root / 'agent.log'}")
        try:
            return requests.get(f"{BASE_URL}/ping", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_for(answers, 90, "the agent's /ping")


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM to the process (the head of its own session), SIGKILL to its session if it lingers."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def cleanup(box: Sandbox, keep: bool) -> None:
    if keep:
        print(f"kept: netns {box.netns}, {box.root} (dockerd -H {box.docker_host})", flush=True)
        return
    stop_process(box.agent, 60)
    stop_process(box.dockerd, 60)
    subprocess.run(["ip", "netns", "del", box.netns], capture_output=True)
    # dockerd leaves its data root's mounts behind only if it died hard; unmount what remains.
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
              if line.split()[1].startswith(str(box.root))]  # fmt: skip
    for mount in sorted(mounts, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)
    shutil.rmtree(box.root, ignore_errors=True)


# --- the load --------------------------------------------------------------------------------


def target(round_number: int) -> dict[str, Any]:
    """The local-mode document: the sleeper's SOAK_ROUND alternates, so each change recreates it."""

    def service(number: int, name: str, command: str, **extra: Any) -> dict[str, Any]:
        return {
            "serviceName": name, "serviceId": number, "imageId": number, "image": IMAGE,
            "environment": extra.pop("environment", {}), "labels": {}, "running": True,
            "command": command, "stop_signal": "SIGKILL", **extra,
        }  # fmt: skip

    services = {
        "1": service(1, "sleeper", "sleep 1000000", environment={"SOAK_ROUND": str(round_number % 2)}),
        "2": service(
            2, "keeper", "sh -c 'date >> /data/starts; exec sleep 1000000'", volumes=["soakdata:/data"]
        ),
        "3": service(3, "chatty", "sh -c 'while true; do echo chatty line $(date); sleep 0.1; done'"),
    }
    return {
        "local": {
            "name": "soak",
            "config": {},
            "apps": {
                APP_ID: {
                    "name": "soakapp",
                    "commit": "soakcommit",
                    "releaseId": "1",
                    "services": services,
                    "volumes": {"soakdata": {}},
                    "networks": {},
                }
            },
        }
    }


@dataclass
class Tally:
    """Requests made and failed, by kind (failures with their first few reasons)."""

    ok: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    reasons: dict[str, list[str]] = field(default_factory=dict)
    log_lines: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(
        self, kind: str, response: requests.Response | None, error: str = "", *, ok: bool = False
    ) -> bool:
        good = ok or (response is not None and 200 <= response.status_code < 300)
        with self.lock:
            if good:
                self.ok[kind] += 1
                return True
            self.failed[kind] += 1
            reason = f"{response.status_code} {response.text[:120]!r}" if response is not None else error
            if len(self.reasons.setdefault(kind, [])) < 3:
                self.reasons[kind].append(f"{time.strftime('%H:%M:%S')} {reason}")
        return False

    def request(self, session: requests.Session, kind: str, method: str, path: str, **kwargs: Any) -> bool:
        try:
            response = session.request(
                method, f"{BASE_URL}{path}", timeout=kwargs.pop("timeout", 30), **kwargs
            )
        except requests.RequestException as exc:
            return self.record(kind, None, f"{type(exc).__name__}: {exc}"[:160])
        return self.record(kind, response)


def post_target(session: requests.Session, tally: Tally, round_number: int) -> bool:
    return tally.request(session, "target", "POST", "/v2/local/target-state", json=target(round_number))


def status(session: requests.Session) -> dict[str, Any]:
    try:
        return dict(session.get(f"{BASE_URL}/v2/state/status", timeout=10).json())
    except (requests.RequestException, ValueError):
        return {}


def containers(state: dict[str, Any]) -> dict[str, str]:
    """serviceName → containerId of the running containers in a /v2/state/status answer."""
    return {
        c["serviceName"]: c["containerId"]
        for c in state.get("containers", [])
        if c.get("status") == "Running"
    }


def applied(session: requests.Session) -> bool:
    """Whether the engine runs the target: applied, its three containers running."""
    state = status(session)
    return state.get("appState") == "applied" and len(containers(state)) == 3


def target_changer(stop: threading.Event, tally: Tally, started: float) -> None:
    """Every TARGET_EVERY, the next round's target; then waits for the sleeper's new container."""
    session = requests.Session()
    round_number = 0
    while not stop.wait(max(0.0, started + (round_number + 1) * TARGET_EVERY - time.monotonic())):
        round_number += 1
        before = containers(status(session)).get("sleeper")
        if not post_target(session, tally, round_number):
            continue
        deadline = time.monotonic() + TARGET_EVERY / 2
        while not stop.wait(1):
            state = status(session)
            if state.get("appState") == "applied" and containers(state).get("sleeper") not in (None, before):
                tally.record("target applied", None, ok=True)
                break
            if time.monotonic() > deadline:
                tally.record("target applied", None, f"not applied {TARGET_EVERY / 2:.0f} s after the POST")
                break


def restarter(stop: threading.Event, tally: Tally) -> None:
    session = requests.Session()
    turn = 0
    while not stop.wait(RESTART_EVERY):
        name = QUIET_SERVICES[turn % len(QUIET_SERVICES)]
        turn += 1
        tally.request(session, "restart", "POST", f"/v2/applications/{APP_ID}/restart-service",
                      json={"serviceName": name}, timeout=90)  # fmt: skip


def reader(stop: threading.Event, tally: Tally, offset: int) -> None:
    session = requests.Session()
    turn = offset
    while not stop.is_set():
        path = READ_PATHS[turn % len(READ_PATHS)]
        turn += 1
        tally.request(session, path, "GET", path)
        stop.wait(CLIENT_PAUSE)


def log_follower(stop: threading.Event, tally: Tally) -> None:
    """Holds GET /v2/local/logs open and reads it; reconnects when it ends."""
    session = requests.Session()
    while not stop.is_set():
        try:
            with session.get(f"{BASE_URL}/v2/local/logs", stream=True, timeout=(10, 60)) as response:
                if not tally.record("/v2/local/logs", response):
                    stop.wait(5)
                    continue
                for line in response.iter_lines():
                    if line:
                        with tally.lock:
                            tally.log_lines += 1
                    if stop.is_set():
                        return
        except requests.RequestException as exc:
            if not stop.is_set():
                tally.record("/v2/local/logs", None, f"{type(exc).__name__}: {exc}"[:160])
                stop.wait(2)


# --- sampling --------------------------------------------------------------------------------

METRICS = (
    ("agent_rss", "agentRSS", "MiB"),
    ("agent_pss", "agentPSS", "MiB"),
    ("fds", "fds", ""),
    ("threads", "thr", ""),
    ("parent_rss", "parentRSS", "MiB"),
    ("redis", "redis", "MiB"),
    ("sqlite", "sqlite", "MiB"),
    ("data_dir", "datadir", "MiB"),
)


def status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    return 0


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def agent_child(parent: int) -> int | None:
    """The parent's child titled `supervisor: agent`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and title.startswith("supervisor: agent"):
            return int(entry.name)
    return None


def tree_bytes(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def sample(box: Sandbox) -> tuple[dict[str, float], int | None]:
    assert box.agent is not None
    mib = 1024 * 1024
    agent = agent_child(box.agent.pid)
    values: dict[str, float] = {}
    with contextlib.suppress(OSError):  # the agent or its parent ended meanwhile
        if agent is not None:
            values["agent_rss"] = status_field(agent, "VmRSS") / 1024
            values["agent_pss"] = pss_kib(agent) / 1024
            values["fds"] = len(os.listdir(f"/proc/{agent}/fd"))
            values["threads"] = status_field(agent, "Threads")
        values["parent_rss"] = status_field(box.agent.pid, "VmRSS") / 1024
    try:
        client = redis.Redis(unix_socket_path=str(box.data_dir / "redis.sock"), socket_timeout=5)
        info: dict[str, Any] = client.info("memory")  # type: ignore[assignment]
        values["redis"] = int(info["used_memory"]) / mib
    except redis.RedisError:
        pass
    database = box.data_dir / "supervisor.sqlite3"
    values["sqlite"] = (
        sum(path.stat().st_size for path in (database, Path(f"{database}-wal")) if path.exists()) / mib
    )
    values["data_dir"] = tree_bytes(box.data_dir) / mib
    return values, agent


def print_header() -> None:
    columns = "".join(f"{label:>10}" for _, label, _ in METRICS)
    print(f"{'t(min)':>7}{columns}{'reqs ok':>9}{'failed':>8}{'loglines':>10}  agent pid", flush=True)


def print_row(minutes: float, values: dict[str, float], tally: Tally, agent: int | None) -> None:
    cells = "".join(
        f"{values[key]:>10.0f}" if unit == "" and key in values else f"{values[key]:>10.2f}" if key in values
        else f"{'-':>10}"
        for key, _, unit in METRICS
    )  # fmt: skip
    with tally.lock:
        ok, failed, lines = sum(tally.ok.values()), sum(tally.failed.values()), tally.log_lines
    print(f"{minutes:>7.1f}{cells}{ok:>9}{failed:>8}{lines:>10}  {agent}", flush=True)


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (minutes, value), per hour."""
    count = len(points)
    mean_t = sum(t for t, _ in points) / count
    mean_v = sum(v for _, v in points) / count
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return 0.0
    return 60 * sum((t - mean_t) * (v - mean_v) for t, v in points) / spread


def summarize(samples: list[tuple[float, dict[str, float]]], tally: Tally) -> None:
    later = [(t, values) for t, values in samples if t >= WARMUP_MINUTES]
    if len(later) < 2:
        later = samples[1:] if len(samples) > 2 else samples
        print(f"(fewer than 2 samples at >= {WARMUP_MINUTES:.0f} min: growth over the samples after t=0)")
    print(f"\ngrowth from t={later[0][0]:.1f} to t={later[-1][0]:.1f} min:")
    print(f"{'metric':>10}{'first':>10}{'last':>10}{'growth %':>10}{'slope/h':>10}{'slope %/h':>10}")
    flat = True
    for key, label, _ in METRICS:
        points = [(t, values[key]) for t, values in later if key in values]
        if len(points) < 2:
            print(f"{label:>10}  (not enough samples)")
            flat = False
            continue
        first, last = points[0][1], points[-1][1]
        growth = 100 * (last - first) / first if first else 0.0
        slope = slope_per_hour(points)
        slope_pct = 100 * slope / first if first else 0.0
        flat = flat and growth <= FLAT_PERCENT
        print(f"{label:>10}{first:>10.2f}{last:>10.2f}{growth:>10.1f}{slope:>10.3f}{slope_pct:>10.1f}")
    with tally.lock:
        print(f"\nrequests ok: {dict(sorted(tally.ok.items()))}")
        print(f"failures: {dict(sorted(tally.failed.items())) or 'none'}")
        for kind, reasons in sorted(tally.reasons.items()):
            for reason in reasons:
                print(f"  {kind}: {reason}")
        print(f"log stream lines read: {tally.log_lines}")
    verdict = "flat" if flat else "NOT flat"
    print(f"verdict: {verdict} (goal: every metric's growth <= {FLAT_PERCENT:.0f} % after the first "
          f"{WARMUP_MINUTES:.0f} minutes)", flush=True)  # fmt: skip


# --- main --------------------------------------------------------------------------------------


def soak(box: Sandbox, minutes: float, sample_minutes: float) -> None:
    start_engine(box)
    import_image(box)
    start_agent(box)
    session = requests.Session()
    tally = Tally()
    if not post_target(session, tally, 0):
        raise RuntimeError(f"the first target was refused: {tally.reasons}")
    wait_for(lambda: applied(session), 180, "the first target's apply", interval=2)
    print(
        f"agent up, first target applied; engine {box.docker_host}, log {box.root / 'agent.log'}", flush=True
    )
    stop = threading.Event()
    started = time.monotonic()
    threads = [
        threading.Thread(target=target_changer, args=(stop, tally, started), name="target", daemon=True),
        threading.Thread(target=restarter, args=(stop, tally), name="restart", daemon=True),
        threading.Thread(target=log_follower, args=(stop, tally), name="logs", daemon=True),
        *(threading.Thread(target=reader, args=(stop, tally, n), name=f"client{n}", daemon=True)
          for n in range(CLIENTS)),
    ]  # fmt: skip
    samples: list[tuple[float, dict[str, float]]] = []
    print_header()
    values, agent = sample(box)
    samples.append((0.0, values))
    print_row(0.0, values, tally, agent)
    for thread in threads:
        thread.start()
    end = started + minutes * 60
    next_at = started + sample_minutes * 60
    try:
        while True:
            now = time.monotonic()
            at = min(next_at, end)
            if now < at:
                time.sleep(min(at - now, 5))
                continue
            elapsed = (at - started) / 60
            values, agent = sample(box)
            samples.append((elapsed, values))
            print_row(elapsed, values, tally, agent)
            if at >= end:
                break
            next_at += sample_minutes * 60
    finally:
        stop.set()
        if len(samples) >= 2:
            summarize(samples, tally)
    if applied(session):
        print("the engine runs the target at the end", flush=True)
    else:
        print("the target is NOT applied at the end", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=120.0, help="how long the load runs")
    parser.add_argument("--sample-minutes", type=float, default=10.0, help="minutes between samples")
    parser.add_argument("--keep", action="store_true", help="leave the namespace, dockerd and agent running")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (ip netns, dockerd)")
    root = Path(tempfile.mkdtemp(prefix="soak-", dir="/tmp"))
    box = Sandbox(root=root, netns=root.name)

    def terminate(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    print(f"soak: {args.minutes:g} min, a sample every {args.sample_minutes:g} min; netns {box.netns}, "
          f"dir {root}", flush=True)  # fmt: skip
    try:
        soak(box, args.minutes, args.sample_minutes)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cleanup(box, args.keep)


if __name__ == "__main__":
    main()
