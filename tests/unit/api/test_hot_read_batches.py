"""api/hot_reads.HotReadBatches: real asyncio and a real thread; the state the batches read
is a counter here (the point is when it is read, not what the API answers)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from apps_api.api.hot_reads import HotReadBatches

SCOPE: dict[str, Any] = {"type": "http", "method": "GET", "path": "/v1/device"}


def test_reads_that_arrive_during_a_batch_share_the_next_one_and_see_the_state_after_they_arrived() -> None:
    state = {"version": 1}
    batch_sizes: list[int] = []
    first_read, release_first = threading.Event(), threading.Event()

    def answer(scopes: list[dict[str, Any]]) -> list[bytes | None]:
        version = state["version"]  # the state, read once for the batch
        batch_sizes.append(len(scopes))
        if len(batch_sizes) == 1:
            first_read.set()
            release_first.wait(10)
        return [str(version).encode()] * len(scopes)

    async def scenario() -> None:
        batches = HotReadBatches(answer)
        first = asyncio.create_task(batches.body(SCOPE))
        assert await asyncio.get_running_loop().run_in_executor(None, first_read.wait, 10)
        later = [asyncio.create_task(batches.body(SCOPE)) for _ in range(3)]
        await asyncio.sleep(0)
        state["version"] = 2  # after the later reads arrived: they must see it
        release_first.set()
        assert await first == b"1"
        assert await asyncio.gather(*later) == [b"2", b"2", b"2"]

    asyncio.run(scenario())
    assert batch_sizes == [1, 3]


def test_a_failed_batch_leaves_its_reads_to_django_and_a_gone_client_leaves_the_others() -> None:
    calls: list[int] = []
    first_read, release_first = threading.Event(), threading.Event()

    def answer(scopes: list[dict[str, Any]]) -> list[bytes | None]:
        calls.append(len(scopes))
        if len(calls) == 1:
            first_read.set()
            release_first.wait(10)
            raise ConnectionError("Redis went away")
        return [b"answered"] * len(scopes)

    async def scenario() -> None:
        batches = HotReadBatches(answer)
        first = asyncio.create_task(batches.body(SCOPE))
        assert await asyncio.get_running_loop().run_in_executor(None, first_read.wait, 10)
        gone, stays = asyncio.create_task(batches.body(SCOPE)), asyncio.create_task(batches.body(SCOPE))
        await asyncio.sleep(0)
        gone.cancel()
        release_first.set()
        assert await first is None  # Django answers it, with its own error
        assert await stays == b"answered"

    asyncio.run(scenario())
    assert calls == [1, 2]
