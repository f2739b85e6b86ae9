"""Networks the engine refuses to remove, round after round.

Seen on engines whose processes holding a network were killed: the network "has active
endpoints" while listing none, so even a forced disconnect leaves it in place. After
GIVE_UP_ROUNDS refusals in a row the apply stops trying: the planner holds the removal back
(`/v2/plan` shows it, with the engine's words), one line tells the user, `/v1/healthy`
fails, and the rest of the apply goes on. A new target tries again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from apps_api.engine.docker import has_active_endpoints
from apps_api.engine.executor import StepOutcome
from apps_api.logs.publisher import system_log
from apps_api.redis_store import REFUSED_FOR_TARGET_KEY, REFUSED_REMOVALS_KEY, redis_client

GIVE_UP_ROUNDS = 3


def record_removals(outcomes: Sequence[StepOutcome]) -> list[str]:
    """Count the round's network removals: a refusal adds one, a success forgets. Returns
    the engine names given up on in this round (their refusals reached GIVE_UP_ROUNDS)."""
    removals = [
        o for o in outcomes if o.step.kind == "removeNetwork" and o.step.current_network and not o.skipped
    ]
    if not removals:
        return []
    client = redis_client()
    entries = _entries(client)
    given_up: list[str] = []
    for outcome in removals:
        network = outcome.step.current_network
        assert network is not None
        if not has_active_endpoints(outcome.error):
            # Removed, or failed for another reason (the engine restarting…): that is no
            # refusal, and the count starts again.
            client.hdel(REFUSED_REMOVALS_KEY, network.docker_name)
            continue
        entry = entries.get(network.docker_name) or {"rounds": 0}
        rounds = int(entry["rounds"]) + 1
        error = str(getattr(outcome.error, "explanation", None) or outcome.error)  # the engine's words
        client.hset(REFUSED_REMOVALS_KEY, network.docker_name, json.dumps({"rounds": rounds, "error": error}))
        if rounds == GIVE_UP_ROUNDS:
            given_up.append(network.docker_name)
            system_log(
                f"Could not remove network '{network.name}' after {rounds} tries, leaving it in place "
                f"until the next target: {error}",
                is_stderr=True,
            )
    return given_up


def given_up_removals(existing: Iterable[str] | None = None) -> dict[str, str]:
    """Engine name → the engine's refusal, for each network given up on. With `existing`
    (the engine's networks now), entries of networks that are gone are dropped."""
    client = redis_client()
    entries = _entries(client)
    if existing is not None:
        existing = set(existing)
        gone = set(entries) - existing
        if gone:
            client.hdel(REFUSED_REMOVALS_KEY, *gone)
    return {
        name: str(entry.get("error", ""))
        for name, entry in entries.items()
        if int(entry.get("rounds", 0)) >= GIVE_UP_ROUNDS and (existing is None or name in existing)
    }


def refusals_for_target(target_pk: int) -> None:
    """Keep the refusals counted for this stored target; a new one tries every removal again."""
    client = redis_client()
    counted_for: Any = client.get(REFUSED_FOR_TARGET_KEY)
    if counted_for is None or int(counted_for) != target_pk:
        pipe = client.pipeline()
        pipe.delete(REFUSED_REMOVALS_KEY)
        pipe.set(REFUSED_FOR_TARGET_KEY, target_pk)
        pipe.execute()


def _entries(client: Any) -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    for name, raw in (client.hgetall(REFUSED_REMOVALS_KEY) or {}).items():
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries[name.decode() if isinstance(name, bytes) else str(name)] = entry
    return entries
