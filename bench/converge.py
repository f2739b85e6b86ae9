"""Time to converge N busybox services, against a plain docker SDK script in the same run.

For N = 1, 5, 20: a fresh target (nothing running), then a target changing every
service's environment. Each is timed from the request (the target stored and the apply
enqueued, as the API does) until all N containers run in Docker: the last of their
`start` events, confirmed by one listing (listing every few milliseconds instead would
load the engine, which the baselines do not). The baselines create and start the same N
containers with the docker SDK, sequentially and with a 4-thread pool (for the change:
remove and recreate them). Needs dockerd and redis-server (started if absent) and a real
Celery worker (started here, in a temporary data dir).

    .venv/bin/python bench/converge.py [--runs 5] [--sizes 20]
    .venv/bin/python bench/converge.py --count-calls [--sizes 20]

--count-calls times nothing: the worker's engine goes through a counting proxy
(tests/refusing_engine.py, refusing nothing), and the calls of a fresh install and of a
change of N services are printed by kind, per container.

With several runs, the summary gives the medians for N = 20 beside the original
supervisor's ratios (measured the same way, in an earlier run on this machine).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))
DATA_DIR = Path(tempfile.mkdtemp(prefix="supervisor-bench-"))
os.environ.update(
    DJANGO_SETTINGS_MODULE="supervisor_site.settings",
    SUPERVISOR_DATA_DIR=str(DATA_DIR),
    SUPERVISOR_HOST_ROOT=str(DATA_DIR / "host"),
    REDIS_URL=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
)

import django  # noqa: E402
import docker  # noqa: E402

django.setup()

from apps_api import actions  # noqa: E402
from apps_api.target.documents import parse_target  # noqa: E402
from bench.local_agent import ensure_busybox_image  # noqa: E402
from hostcfg.identity import load_device_identity  # noqa: E402
from supervisor_site.system_services import ensure_dockerd, ensure_redis  # noqa: E402
from tests.refusing_engine import RefusingEngine  # noqa: E402

IMAGE = "local/bench-busybox:latest"
SIZES = (1, 5, 20)
BASELINE_LABEL = "io.balena.bench-baseline"
# The original supervisor's time ÷ the 4-thread script's, N = 20 (issue #16).
ORIGINAL_RATIO = {"fresh": 0.96, "change": 1.43}
GOAL_RATIO = 0.8
# Not 1, which the integration tests use: their networks are not the benchmark's.
APP_ID = 16
EMPTY_TARGET = {"local": {"name": "bench", "config": {}, "apps": {}}}


def target_document(n: int, generation: int) -> dict:
    services = {
        str(i): {
            "serviceName": f"s{i}",
            "serviceId": i,
            "imageId": i,
            "image": IMAGE,
            "environment": {"GENERATION": str(generation)},
            "labels": {},
            "command": "sleep 100000",
            "stop_signal": "SIGKILL",
        }
        for i in range(1, n + 1)
    }
    app = {"name": "bench", "commit": f"c{generation}", "releaseId": generation, "services": services}
    return {"local": {"name": "bench", "config": {}, "apps": {str(APP_ID): app}}}


def running_generation(api: docker.APIClient, n: int, generation: int) -> bool:
    containers = api.containers(filters={"label": f"io.balena.app-id={APP_ID}", "status": "running"})
    fresh = [c for c in containers if c["Names"][0].endswith(f"_c{generation}")]
    return len(fresh) == n and len(containers) == n


def time_agent(api: docker.APIClient, n: int, generation: int) -> float:
    target = parse_target(target_document(n, generation), device_uuid=load_device_identity().uuid)
    events = api.events(
        decode=True,
        until=int(time.time()) + 60,
        filters={"type": "container", "event": "start", "label": f"io.balena.app-id={APP_ID}"},
    )
    began = time.perf_counter()
    actions.set_target_state(target)
    started: set[str] = set()
    for event in events:
        name = (event.get("Actor") or {}).get("Attributes", {}).get("name", "")
        if name.endswith(f"_c{generation}"):
            started.add(name)
        if len(started) >= n and running_generation(api, n, generation):
            events.close()
            return time.perf_counter() - began
    deadline = began + 60
    while not running_generation(api, n, generation):
        if time.perf_counter() > deadline:
            log = (DATA_DIR / "worker.log").read_text().splitlines()
            raise RuntimeError(
                f"N={n} generation {generation} did not converge; worker log:\n" + "\n".join(log[-30:])
            )
        time.sleep(0.005)
    return time.perf_counter() - began


def empty_the_agent(api: docker.APIClient) -> None:
    """The agent told to run nothing, and done: removing its containers behind its back
    would have it make them again while the baselines run."""
    actions.set_target_state(parse_target(EMPTY_TARGET, device_uuid=load_device_identity().uuid))
    deadline = time.monotonic() + 60
    while api.containers(all=True, filters={"label": f"io.balena.app-id={APP_ID}"}) or api.networks(
        filters={"label": f"io.balena.app-id={APP_ID}"}
    ):
        if time.monotonic() > deadline:
            raise RuntimeError("the agent did not remove the app within 60 s")
        time.sleep(0.1)


def remove_all(client: docker.DockerClient) -> None:
    for label in ("io.balena.supervised", BASELINE_LABEL):
        for container in client.containers.list(all=True, filters={"label": label}):
            container.remove(force=True, v=True)
    for network in client.networks.list(filters={"label": f"io.balena.app-id={APP_ID}"}):
        network.remove()
    if not client.networks.list(names=[BASELINE_NETWORK]):
        client.networks.create(BASELINE_NETWORK, labels={BASELINE_LABEL: "1"})


BASELINE_NETWORK = "bench_baseline"


def sdk_create_and_start(
    client: docker.DockerClient, name: str, generation: int, network: bool = False
) -> None:
    """The plain script's container; with `network`, on a user-defined network with an
    alias, as every compose-style service is."""
    container = client.containers.create(
        IMAGE,
        ["sleep", "100000"],
        name=name,
        environment={"GENERATION": str(generation)},
        labels={BASELINE_LABEL: "1"},
        stop_signal="SIGKILL",
        network=BASELINE_NETWORK if network else None,
    )
    container.start()


def sdk_replace(client: docker.DockerClient, name: str, generation: int, network: bool = False) -> None:
    client.containers.get(name).remove(force=True)
    sdk_create_and_start(client, name, generation, network)


def time_sdk(client: docker.DockerClient, n: int, threads: int, action) -> float:  # type: ignore[no-untyped-def]
    names = [f"baseline_s{i}" for i in range(n)]
    began = time.perf_counter()
    if threads == 1:
        for name in names:
            action(client, name)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda name: action(client, name), names))
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--count-calls", action="store_true", help="count the engine calls instead")
    args = parser.parse_args()
    services = (
        ensure_redis(os.environ["REDIS_URL"], DATA_DIR),
        ensure_dockerd("unix:///var/run/docker.sock", DATA_DIR),
    )
    started = [s for s in services if s]
    client = docker.from_env()
    ensure_busybox_image(IMAGE)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=PROJECT_DIR, check=True)
    from apps_api.redis_store import redis_client

    redis_client().flushdb()
    calls: list[str] = []
    worker_env = dict(os.environ)
    if args.count_calls:
        counting = RefusingEngine(
            DATA_DIR / "engine.sock", lambda method, path: calls.append(f"{method} {path}")
        )
        counting.start()
        worker_env["DOCKER_HOST"] = counting.url
    with open(DATA_DIR / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "supervisor_site", "worker", "--pool=threads",
             "--concurrency=4", "--queues=supervisor", "--without-heartbeat", "--without-gossip",
             "--without-mingle", "--loglevel=WARNING"],
            cwd=PROJECT_DIR, stdout=subprocess.DEVNULL, stderr=log, env=worker_env,
        )  # fmt: skip
    try:
        from supervisor_site.celery import app

        while not app.control.ping(timeout=0.5):
            time.sleep(0.2)
        remove_all(client)
        if args.count_calls:
            count_calls(client, args.sizes, calls)
            return
        header = (
            "N",
            "case",
            "agent s",
            "sdk seq s",
            "sdk x4 s",
            "x4+net s",
            "agent/x4",
            "agent/x4net",
            "agent/seq",
        )
        print("{:>3} {:<7} {:>8} {:>10} {:>9} {:>9} {:>9} {:>11} {:>10}".format(*header))
        ratios: dict[tuple[int, str], list[tuple[float, float]]] = {}
        for _run in range(args.runs):
            for n in args.sizes:
                for case, agent, pool in measure(client, n):
                    ratios.setdefault((n, case), []).append((agent, pool))
        if 20 in args.sizes:
            print(f"\nN = 20, medians of {args.runs} run(s): ours / the 4-thread SDK script")
            for case in ("fresh", "change"):
                agent = statistics.median(a for a, _ in ratios[(20, case)])
                pool = statistics.median(p for _, p in ratios[(20, case)])
                ratio = statistics.median(a / p for a, p in ratios[(20, case)])
                print(
                    f"  {case:<7} ours {agent:5.2f} s   sdk x4 {pool:5.2f} s   ratio {ratio:.2f}"
                    f"   (original {ORIGINAL_RATIO[case]:.2f}, goal <= {GOAL_RATIO})"
                )
    finally:
        actions.set_target_state(parse_target(EMPTY_TARGET, device_uuid=""))
        time.sleep(1)
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            print(f"the worker did not stop; its log: {DATA_DIR / 'worker.log'}")
            worker.kill()
        remove_all(client)
        for network in client.networks.list(names=[BASELINE_NETWORK]):
            network.remove()
        for service in started:
            service.stop()
        shutil.rmtree(DATA_DIR, ignore_errors=True)


ENGINE_OBJECT = re.compile(
    r"/(?:(images)/.+?(?=/json$|$)|(containers|networks|volumes)/(?!create$|json$|prune$|create\?)[^/]+)"
)
"""An object's id or name in an engine path (an image's may hold slashes), not an
endpoint of the kind's own."""


def count_calls(client: docker.DockerClient, sizes: list[int], calls: list[str]) -> None:
    """The engine calls of the worker for a fresh install, then a change, of each size."""
    for n in sizes:
        remove_all(client)
        for generation, case in ((1, "fresh install"), (2, "change")):
            calls.clear()
            time_agent(client.api, n, generation)
            time.sleep(1)  # the round's last calls (the state read after it)
            kinds = Counter(ENGINE_OBJECT.sub(lambda m: f"/{m[1] or m[2]}/{{id}}", call) for call in calls)
            print(f"N={n} {case}: {len(calls)} engine calls, {len(calls) / n:.1f} per container")
            for kind, count in kinds.most_common():
                print(f"  {count:5d}  {count / n:5.2f}/container  {kind}")


def measure(client: docker.DockerClient, n: int) -> list[tuple[str, float, float]]:
    """One row each for the fresh install and the change of `n` services; returns
    (case, agent seconds, 4-thread script seconds)."""
    remove_all(client)
    fresh = time_agent(client.api, n, 1)
    changed = time_agent(client.api, n, 2)
    empty_the_agent(client.api)
    remove_all(client)
    seq_fresh = time_sdk(client, n, 1, lambda c, name: sdk_create_and_start(c, name, 1))
    remove_all(client)
    pool_fresh = time_sdk(client, n, 4, lambda c, name: sdk_create_and_start(c, name, 1))
    seq_change = time_sdk(client, n, 1, lambda c, name: sdk_replace(c, name, 2))
    pool_change = time_sdk(client, n, 4, lambda c, name: sdk_replace(c, name, 3))
    remove_all(client)
    net_fresh = time_sdk(client, n, 4, lambda c, name: sdk_create_and_start(c, name, 1, True))
    net_change = time_sdk(client, n, 4, lambda c, name: sdk_replace(c, name, 2, True))
    remove_all(client)
    rows = (
        ("fresh", fresh, seq_fresh, pool_fresh, net_fresh),
        ("change", changed, seq_change, pool_change, net_change),
    )
    for case, agent, seq, pool, net in rows:
        print(
            f"{n:>3} {case:<7} {agent:8.2f} {seq:10.2f} {pool:9.2f} {net:9.2f}"
            f" {agent / pool:9.2f} {agent / net:11.2f} {agent / seq:10.2f}",
            flush=True,
        )
    return [(case, agent, pool) for case, agent, _seq, pool, _net in rows]


if __name__ == "__main__":
    main()
