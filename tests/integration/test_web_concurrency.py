"""The live web process answers reads while other requests wait for long actions.

Django runs each ASGI request's sync view in a thread of its own (ThreadSensitiveContext),
so this holds without anything of ours; the test keeps it so."""

from __future__ import annotations

import contextlib
import threading

import pytest
import requests

from apps_api.redis_store import redis_client
from supervisor_site.system_services import wait_until
from tests.agent_client import Client
from tests.integration.conftest import WebProcess
from tests.integration.engine_helpers import apply, local_target, wait_worker_idle

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_slow_restart_does_not_hold_up_reads(engine: str, shared_web: WebProcess) -> None:
    # `sleep` as PID 1 ignores SIGTERM: stopping it takes the whole grace period.
    slow = {"stop_signal": "SIGTERM", "stop_grace_period": "8s"}
    apply(local_target({"main": slow}, image=engine))
    outcome: dict[str, int] = {}

    def restart() -> None:
        url = f"{shared_web.base_url}/v2/applications/1/restart-service"
        response = requests.post(url, json={"serviceName": "main"}, timeout=60)
        outcome["restart"] = response.status_code

    def main_status() -> str:
        # Read in this process, not through the web process under test.
        return str(Client().get("/v2/applications/state").json()["testapp"]["services"]["main"]["status"])

    restarting = threading.Thread(target=restart)
    restarting.start()
    try:
        assert wait_until(lambda: main_status() != "Running", 20), "the restart never began"
        for path in ("/v2/state/status", "/v2/applications/state", "/ping"):
            assert shared_web.get(path).status_code == 200
        assert restarting.is_alive(), "the reads waited for the restart"
    finally:
        restarting.join(60)
    assert outcome["restart"] == 200


def test_health_probes_answer_while_64_restarts_wait_on_the_worker(
    engine: str, shared_web: WebProcess
) -> None:
    # Each restart takes the whole grace period (`sleep` as PID 1 ignores SIGTERM): the
    # worker's threads are busy and the other restarts wait for them, in the same process.
    slow = {"stop_signal": "SIGTERM", "stop_grace_period": "1s"}
    apply(local_target({"main": slow}, image=engine))
    url = f"{shared_web.base_url}/v2/applications/1/restart-service"

    def restart() -> None:
        with contextlib.suppress(requests.RequestException):
            requests.post(url, json={"serviceName": "main"}, timeout=5)

    waiting = [threading.Thread(target=restart) for _ in range(64)]
    try:
        for thread in waiting:
            thread.start()
        assert wait_until(lambda: redis_client().llen("supervisor") > 0, 10), "no restart was queued"
        assert shared_web.get("/ping").status_code == 200
        assert shared_web.get("/v1/healthy").status_code == 200
        assert shared_web.get("/v2/version").status_code == 200
        assert sum(thread.is_alive() for thread in waiting) >= 32, "the restarts did not wait"
    finally:
        redis_client().delete("supervisor")  # the restarts still queued never run
        for thread in waiting:
            thread.join(30)
        wait_worker_idle()  # those the worker took ahead end before the next test
