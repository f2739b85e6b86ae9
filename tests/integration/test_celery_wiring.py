"""A request enqueues a task that a real worker process runs over the real Redis."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.conf import settings

from apps_api.redis_store import BLINK_LOCK_KEY, redis_client
from supervisor_site.system_services import wait_until
from tests.agent_client import Client


@pytest.mark.usefixtures("shipped_agent")
@pytest.mark.django_db(transaction=True)
def test_blink_request_runs_in_the_worker_and_leaves_the_led_off() -> None:
    led = Path(settings.SUPERVISOR_LED_FILE)
    led.write_text("0")

    response = Client().post("/v1/blink", content_type="application/json")
    assert (response.status_code, response.content) == (200, b"OK")

    assert wait_until(lambda: led.read_text() == "1", 15), "the worker never lit the LED"
    assert Client().post("/v1/blink", content_type="application/json").status_code == 200, (
        "a second request while blinking is accepted"
    )

    seen = set()
    deadline = time.monotonic() + 30
    while redis_client().exists(BLINK_LOCK_KEY) and time.monotonic() < deadline:
        seen.add(led.read_text())
        time.sleep(0.05)
    assert not redis_client().exists(BLINK_LOCK_KEY), "the blink did not end"
    assert seen == {"0", "1"}
    assert led.read_text() == "0"
