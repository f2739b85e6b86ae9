"""What the engine would do next: the inputs of one apply round, read once for the apply
loop and for the plan that GET/POST /v2/plan, `apply_target --dry-run` and the admin's
apply page show. Reading a plan stores nothing and changes nothing."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apps_api.apply.device_context import device_context, device_facts
from apps_api.apply.probation import images_on_hold
from apps_api.apply.refusals import given_up_removals
from apps_api.apply_status import read_image_progress, read_retry_at
from apps_api.device_settings import lock_override
from apps_api.engine.adoption import adopt_matching
from apps_api.engine.container_config import DeviceContext
from apps_api.engine.current import read_current_state
from apps_api.engine.locks import (
    UpdateLocks,
    apps_with_supervisor_lock_files,
    update_locks,
    user_lock_holders,
)
from apps_api.engine.planner import HeldStep, Plan, PlanConfig, explain
from apps_api.engine.state import CurrentState, Step, TargetState
from apps_api.host_ops.device_config import reboot_pending
from apps_api.models import Image
from apps_api.target.contracts import judge_contracts
from apps_api.target.store import load_target


@dataclass(frozen=True)
class RoundInputs:
    """What the planner plans a round from, besides the target."""

    current: CurrentState
    locks_held: frozenset[int]
    leftover_locks: frozenset[int]
    config: PlanConfig


def read_round_inputs(
    target: TargetState, device: DeviceContext, locks: UpdateLocks, *, downloading: Iterable[str] = ()
) -> RoundInputs:
    """The current state (foreign containers that already match adopted), the update locks
    held and left over, and the plan's configuration, for a round of `target`."""
    current = read_current_state(
        managed_images=Image.objects.values_list("reference", flat=True),
        app_uuids={app.app_id: app.app_uuid for app in target.apps},
        downloading=downloading,
    )
    refused = given_up_removals({network.docker_name for network in current.networks})
    return RoundInputs(
        current=adopt_matching(current, target.apps, device),
        locks_held=locks.held_apps(),
        leftover_locks=apps_with_supervisor_lock_files(Path(device.host_root)),
        config=PlanConfig(
            device,
            local_mode=target.source == "local",
            reboot_pending=reboot_pending(),
            images_on_hold=images_on_hold(),
            refused_removals=refused,
        ),
    )


@dataclass(frozen=True)
class ExplainedPlan:
    """A plan, with the current state it was made from (the admin page shows both)."""

    plan: Plan
    current: CurrentState


def explain_target(target: TargetState, *, force: bool, retry_at: float | None = None) -> ExplainedPlan:
    """The next round's steps for `target` and what holds the others back. `force`: update
    locks would be overridden (they hold nothing); `retry_at`: the engine waits until then
    (epoch seconds) after a failed round."""
    device = device_context(target, create_keys=False)
    inputs = read_round_inputs(target, device, update_locks(), downloading=read_image_progress())
    current = inputs.current
    holders: dict[int, list[str]] = {}
    if not (force or lock_override(target)):
        app_ids = {app.app_id for app in target.apps} | {s.app_id for s in current.services}
        holders = {app_id: user_lock_holders(Path(device.host_root), app_id) for app_id in app_ids}
    until = ""
    if retry_at is not None and retry_at > time.time():
        until = datetime.fromtimestamp(retry_at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    plan = explain(
        current,
        target.apps,
        locks_held=inputs.locks_held,
        config=inputs.config,
        leftover_locks=inputs.leftover_locks,
        lock_holders=holders,
        backoff_until=until,
    )
    return ExplainedPlan(plan, current)


def explain_stored_target() -> ExplainedPlan:
    """What the engine would do next against the stored target (nothing without one)."""
    loaded = load_target()
    if loaded is None:
        return ExplainedPlan(Plan(steps=[], held=[]), CurrentState())
    target, record = loaded
    return explain_target(target, force=record.force, retry_at=read_retry_at())


def explain_posted_target(target: TargetState, *, force: bool) -> ExplainedPlan:
    """What the engine would do first if `target` were stored now, its contracts judged as
    a stored target's are. A new target ends any wait after a failure, so none holds it."""
    judged = judge_contracts(target, device_facts()).target
    return explain_target(judged, force=force)


def plan_document(plan: Plan, *, app_ids: frozenset[int] | None = None) -> dict[str, Any]:
    """The JSON answer of /v2/plan: its steps and held-back steps, only those of `app_ids`
    when given (a scoped key's apps; steps of no app are left out then)."""

    def shown(app_id: int | None) -> bool:
        return app_ids is None or app_id in app_ids

    return {
        "status": "success",
        "steps": [step_document(s) for s in plan.steps if shown(s.app_id)],
        "heldBack": [held_document(h) for h in plan.held if shown(h.app_id)],
    }


def step_document(step: Step) -> dict[str, Any]:
    document: dict[str, Any] = {
        "action": step.kind,
        "appId": step.app_id,
        "serviceName": step.service_name,
        "reason": step.reason,
    }
    if step.image:
        document["image"] = step.image
    if step.services:
        document["services"] = list(step.services)
    return document


def held_document(held: HeldStep) -> dict[str, Any]:
    document: dict[str, Any] = {
        "action": held.kind,
        "appId": held.app_id,
        "serviceName": held.service_name,
        "cause": held.cause,
        "heldBy": held.held_by or None,
    }
    if held.until:
        document["until"] = held.until
    if held.detail:
        document["detail"] = held.detail
    return document
