"""When and how the device asks the cloud for its target (docs/cloud.md "Target poll").

The worker's cloud tick (every few seconds, from the embedded beat) calls `cloud_tick`:
it provisions the device until that succeeds (every 30 s), then polls the target every
SUPERVISOR_POLL_INTERVAL plus up to 60 s of jitter, backing off after errors. A new target
is stored and applied, cancelling a running apply; an invalid one is logged and ignored,
and the device keeps running what it runs. POST /v1/update asks for a poll at once.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from apps_api.apply.single_flight import cancel_running_apply, schedule_apply
from apps_api.cloud.client import (
    CloudError,
    cloud_device,
    cloud_reachable,
    fetch_target,
    provision,
    retry_delay,
)
from apps_api.cloud.report import report_initial_config, report_state_if_due, report_tags_if_due
from apps_api.device_settings import instant_updates_enabled, stored_device_config
from apps_api.engine.state import InvalidTargetState
from apps_api.logs.publisher import system_log
from apps_api.redis_store import (
    CLOUD_POLL_NOW_KEY,
    CLOUD_POLL_STATE_KEY,
    CLOUD_REPORT_KEY,
    CLOUD_TAGS_REPORT_KEY,
    CLOUD_TICK_LOCK_KEY,
    PRELOAD_REFUSED_KEY,
    LockError,
    get_json,
    lock,
    redis_client,
    set_json,
    take,
)
from apps_api.target.documents import parse_cloud_target
from apps_api.target.intake import accept_target
from apps_api.target.preload import load_preloaded_apps, pin_to_preloaded_release
from hostcfg.blink import show_no_connectivity
from hostcfg.host_info import vpn_connected

if TYPE_CHECKING:
    from apps_api.cloud.client import CloudDevice

logger = logging.getLogger(__name__)

TICK_LOCK_SECONDS = 600.0
"""Longer than a tick can take: a few requests of at most 59 s each."""
PROVISION_RETRY_SECONDS = 30.0
JITTER_SECONDS = 60.0
CONNECTIVITY_CHECK_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 5.0


@dataclass
class PollState:
    """Kept in Redis: it only paces the polls (the target itself is in the database)."""

    next_poll_at: float = 0.0
    failures: int = 0
    etag: str | None = None
    last_success_at: float | None = None
    forced: bool = False
    first_tick_at: float | None = None
    """When this device first ticked: the health check's reference before any poll worked."""
    reachable: bool | None = None
    """The last connectivity check's result; None while the check is off."""
    connectivity_checked_at: float = 0.0
    preload_retry_at: float = 0.0
    """When a v2 apps.json whose apps the cloud could not name may be tried again."""


def read_poll_state() -> PollState:
    stored = get_json(CLOUD_POLL_STATE_KEY)
    try:
        return PollState(**stored) if isinstance(stored, dict) else PollState()
    except TypeError:
        return PollState()


def _write_poll_state(state: PollState) -> None:
    set_json(CLOUD_POLL_STATE_KEY, state.__dict__)


def request_poll_now(*, force: bool) -> None:
    """The next tick polls at once; `force` makes that apply override update locks.
    A key of its own, taken by the tick: a tick running meanwhile cannot write it away."""

    if force:
        redis_client().set(CLOUD_POLL_NOW_KEY, "force")
    else:
        redis_client().set(CLOUD_POLL_NOW_KEY, "now", nx=True)  # never weakens a forced request


def cloud_tick() -> None:
    """Provision (until that works), poll the target and report the state, each when due.
    Never raises for cloud trouble: it is logged, and the next attempt backs off. One
    tick at a time: one that finds another running (a slow cloud) does nothing."""

    device = cloud_device()
    if device is None:
        return
    tick_lock = lock(CLOUD_TICK_LOCK_KEY, timeout=TICK_LOCK_SECONDS)
    if not tick_lock.acquire(blocking=False):
        return
    try:
        _tick(device)
    finally:
        with contextlib.suppress(LockError):  # it outlived its timeout: no longer ours
            tick_lock.release()


def _tick(device: CloudDevice) -> None:
    state = read_poll_state()
    if state.first_tick_at is None:
        state.first_tick_at = time.time()
        if device.provisioned and not instant_updates_enabled():
            # docs/cloud.md "Target poll": with instant updates off, the first poll waits one interval.
            state.next_poll_at = state.first_tick_at + poll_interval_seconds()
        _write_poll_state(state)
    asked = take(CLOUD_POLL_NOW_KEY)
    if asked:
        state.next_poll_at = 0.0
        state.forced = state.forced or asked == b"force"
        _write_poll_state(state)
    for side_task in (
        lambda: _check_connectivity(device, state),
        # Again at each tick: a v2 apps.json may be waiting for the cloud to name its apps.
        lambda: _load_preloaded_apps(state),
    ):
        try:
            side_task()
        except Exception:
            logger.exception("cloud tick")
    if time.time() >= state.next_poll_at:
        _poll_when_due(device, state)
    if cloud_device().provisioned:  # type: ignore[union-attr]
        for report in (report_state_if_due, report_tags_if_due):
            try:
                report()
            except CloudError as exc:
                logger.warning("cloud: %s", exc)


def _load_preloaded_apps(state: PollState, *, now: bool = False) -> None:
    if time.time() < state.preload_retry_at and not now:
        return
    try:
        load_preloaded_apps()
    except CloudError as exc:
        state.preload_retry_at = time.time() + PROVISION_RETRY_SECONDS
        _write_poll_state(state)
        logger.warning("cloud: preloaded apps wait (%s); again in %.0f s", exc, PROVISION_RETRY_SECONDS)


def reset_at_start() -> None:
    """A worker starting: the cloud side starts afresh. A tick lock left by a killed worker
    is stale; pacing kept in Redis may be another installation's (a Redis that outlived
    its agent), so none of it is trusted: the first poll and the first (full) report come
    at once, and this start is the reference of the first-poll delay and of the health
    check."""
    redis_client().delete(
        CLOUD_TICK_LOCK_KEY,
        CLOUD_POLL_STATE_KEY,
        CLOUD_REPORT_KEY,
        CLOUD_TAGS_REPORT_KEY,
        PRELOAD_REFUSED_KEY,
    )


def _check_connectivity(device: CloudDevice, state: PollState) -> None:
    """When due (every 10 s), unless SUPERVISOR_CONNECTIVITY_CHECK is off: can the device reach its
    cloud's API? While the VPN is up it can (the check pauses). The LED shows when not."""

    if time.time() - state.connectivity_checked_at < CONNECTIVITY_CHECK_SECONDS:
        return
    if not stored_device_config().connectivity_check:
        reachable = None
    elif vpn_connected():
        reachable = True
    else:
        reachable = cloud_reachable(device, timeout=CONNECT_TIMEOUT_SECONDS)
    if reachable is False and state.reachable is not False:
        logger.warning("cloud: %s is not reachable", device.api_endpoint)
    show_no_connectivity(Path(settings.SUPERVISOR_LED_FILE), on=reachable is False)
    state.reachable = reachable
    state.connectivity_checked_at = time.time()
    _write_poll_state(state)


def _poll_when_due(device: CloudDevice, state: PollState) -> None:
    try:
        if not device.provisioned:
            provision()
            # A v2 apps.json waits for this: only the device key may name its apps.
            _load_preloaded_apps(state, now=True)
        try:
            # Before the first poll: the cloud then sends the pinned release, not the latest.
            pin_to_preloaded_release()
        except CloudError as exc:
            logger.warning("cloud: %s; trying again at the next poll", exc)
        poll_target(state)
    except Exception as exc:
        state.failures += 1
        if device.provisioned:
            delay = retry_delay(state.failures, cap=poll_interval_seconds())
        else:
            delay = PROVISION_RETRY_SECONDS
        if isinstance(exc, CloudError):
            logger.warning("cloud: %s; retrying in %.0f s", exc, delay)
        else:
            logger.exception("cloud: poll failed; retrying in %.0f s", delay)
        state.next_poll_at = time.time() + delay
        _write_poll_state(state)


def poll_target(state: PollState) -> None:
    """Fetch the target; store and apply it when it changed and is valid."""

    device = cloud_device()
    assert device is not None
    fetched = fetch_target(device, etag=state.etag)
    forced, state.forced = state.forced, False
    if fetched.document is None:
        _report_initial_config(device, None)
        if forced:  # /v1/update on an unchanged target: apply it again
            schedule_apply(force=True)
    else:
        try:
            target = parse_cloud_target(fetched.document, device_uuid=device.uuid)
        except InvalidTargetState as exc:
            # The original's words; its ETag kept, as the original marks such a target seen:
            # it is not fetched and refused again until the cloud changes it.
            system_log(f"Could not move to new release: Invalid target state. {exc}", is_stderr=True)
        else:
            # Before the target is applied: it works out what the target would reset.
            _report_initial_config(device, dict(target.config))
            cancel_running_apply("cancel")
            accept_target(target, force=forced)
    state.etag = fetched.etag
    state.failures = 0
    state.last_success_at = time.time()
    state.next_poll_at = state.last_success_at + poll_interval_seconds() + random.uniform(0, JITTER_SECONDS)  # noqa: S311
    _write_poll_state(state)


def _report_initial_config(device: CloudDevice, target_config: dict[str, str] | None) -> None:
    try:
        report_initial_config(device, target_config)
    except CloudError as exc:
        logger.warning("cloud: initial configuration not reported yet (%s); retrying at the next poll", exc)


def poll_interval_seconds() -> float:
    return stored_device_config().poll_interval_ms / 1000


def cloud_health_problem(*, now: float | None = None) -> str | None:
    """Why the cloud side is unhealthy (the connectivity check fails, or no target was
    fetched within twice the poll interval), or None; an unmanaged device has no cloud side."""

    if cloud_device() is None:
        return None
    state = read_poll_state()
    since = state.last_success_at or state.first_tick_at
    if since is None:
        return None
    if state.reachable is False:
        return "the cloud API is not reachable"
    waited = (time.time() if now is None else now) - since
    if waited > 2 * poll_interval_seconds():
        return f"no target state fetched for {waited:.0f} s"
    return None
