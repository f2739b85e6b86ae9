"""The current state the device reports to the cloud (docs/cloud.md "State report").

Only what changed since the last report the cloud accepted is sent (a two-level diff),
at most once per 10 s, with metric-only changes at most every 5 minutes; a refused report
is retried with backoff, honouring `Retry-After`. The update_* flags are never sent, and
in local mode neither are `apps` and `logs_channel`.

The last accepted report is kept in Redis with the pacing, and on the host
(hostcfg/report_cache.py), from where it is taken when Redis has none (a flushed Redis):
a restart then sends only the differences. SUPERVISOR_HARDWARE_METRICS=false sends the
metrics as null; `is_undervolted` is a health check, sent whatever that setting.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings

from apps_api.apikeys import get_or_create_global_key
from apps_api.cloud.client import (
    CloudError,
    TagsRefused,
    cloud_device,
    retry_delay,
    send_config_variable,
    send_device_name,
    send_device_tags,
    send_state_report,
)
from apps_api.device_settings import hardware_metrics_enabled, local_mode_active, poll_interval_seconds
from apps_api.host_ops.device_config import applied_device_config
from apps_api.redis_store import CLOUD_REPORT_KEY, CLOUD_TAGS_REPORT_KEY, get_json, set_json
from apps_api.snapshot import DeviceSnapshot, current_commit, read_snapshot, update_status
from hostcfg.atomic_file import write_file_atomically
from hostcfg.device_config import initial_config_variables
from hostcfg.hardware import read_hardware_metrics, undervoltage_detected
from hostcfg.host_info import host_addresses, os_variant, os_version
from hostcfg.report_cache import load_report_cache, save_report_cache
from hostcfg.tags import mark_reported, unreported_tags

if TYPE_CHECKING:
    from apps_api.cloud.client import CloudDevice, CloudError

logger = logging.getLogger(__name__)

MIN_REPORT_SECONDS = 10.0
METRICS_EVERY_SECONDS = 300.0
METRIC_FIELDS = frozenset({"cpu_usage", "cpu_temp", "cpu_id", "memory_usage", "memory_total",
                           "storage_usage", "storage_total", "storage_block_device"})  # fmt: skip
"""The fields held back for 5 minutes when nothing else changed, and sent as null when
SUPERVISOR_HARDWARE_METRICS is off."""


@dataclass
class ReportState:
    """The pacing of one kind of report (state, or tags), kept in Redis."""

    last_reported: dict[str, Any] = field(default_factory=dict)
    last_report_at: float = 0.0
    last_metrics_at: float = 0.0
    next_report_at: float = 0.0
    failures: int = 0


def read_report_state(key: str = CLOUD_REPORT_KEY) -> ReportState:
    return _report_state_from(get_json(key))


def _report_state_from(stored: Any) -> ReportState:
    try:
        return ReportState(**stored) if isinstance(stored, dict) else ReportState()
    except TypeError:
        return ReportState()


def _state_report_pacing(device: CloudDevice) -> ReportState:
    """The state report's pacing from Redis; without any there (a first start, or Redis
    lost its data), the last accepted report is the one cached on the host."""
    stored = get_json(CLOUD_REPORT_KEY)
    if stored is None:
        return ReportState(last_reported=load_report_cache(Path(settings.SUPERVISOR_HOST_ROOT), device.uuid))
    return _report_state_from(stored)


def _write_report_state(state: ReportState, key: str = CLOUD_REPORT_KEY) -> None:
    set_json(key, asdict(state))


def _due(state: ReportState, now: float) -> bool:
    return now >= state.next_report_at and now - state.last_report_at >= MIN_REPORT_SECONDS


def _refused(state: ReportState, error: CloudError, now: float, key: str) -> None:
    state.failures += 1
    cap = poll_interval_seconds()
    state.next_report_at = now + retry_delay(state.failures, cap=cap, retry_after=error.retry_after)
    _write_report_state(state, key)


def _accepted(state: ReportState, now: float, key: str) -> None:
    state.last_report_at, state.failures, state.next_report_at = now, 0, 0.0
    _write_report_state(state, key)


def current_report(*, local_mode: bool) -> dict[str, Any]:
    """Everything the device would report now."""

    snapshot = read_snapshot()
    ips, macs = host_addresses()
    report: dict[str, Any] = {
        "api_port": settings.SUPERVISOR_PORT,
        "api_secret": get_or_create_global_key().key,
        "ip_address": ips,
        "mac_address": macs,
        "os_version": os_version(),
        "os_variant": os_variant(),
        "supervisor_version": settings.SUPERVISOR_VERSION,
        "provisioning_progress": None,
        "provisioning_state": "",
        "status": "Updating" if snapshot.applying else "Idle",
        **_metrics(),
        "is_undervolted": undervoltage_detected(Path(settings.SUPERVISOR_HOST_ROOT)),
    }
    if not local_mode:
        report["logs_channel"] = None
        report["apps"] = apps_report(snapshot)
    return report


def apps_report(snapshot: DeviceSnapshot) -> dict[str, Any]:
    """The report's `apps`: each app of the target by uuid, its target release's update_status
    and services, and `release_uuid` when its containers agree on the commit they run."""
    apps: dict[str, Any] = {}
    for app in snapshot.target_apps():
        services = {}
        for service in app.services:
            status = snapshot.status_of(app.app_id, service.service_name)
            entry: dict[str, Any] = {
                "image": service.image,
                "status": status.status if status else "Downloading",
            }
            if status is not None and status.download_progress is not None:
                entry["download_progress"] = status.download_progress
            services[service.service_name] = entry
        releases: dict[str, Any] = {}
        if app.failed_commit and app.failed_commit != app.commit:
            # Rolled back: the failed release was aborted (the cloud knows no "failed") and
            # none of its services runs; the release running again is reported with its
            # services, or the cloud would retire the images it runs on.
            releases[app.failed_commit] = release_report("aborted", {})
            if app.commit:
                running = update_status(snapshot, replace(app, failed_commit=""))
                releases[app.commit] = release_report(running, services)
        elif commit := app.failed_commit or app.commit:
            # A first release that failed its probation stays, reported as aborted.
            release_status = update_status(snapshot, app)
            releases[commit] = release_report(
                "aborted" if release_status == "failed" else release_status, services
            )
        apps[app.app_uuid] = {"releases": releases}
        if commit := current_commit(snapshot, app.app_id):
            apps[app.app_uuid]["release_uuid"] = commit
    return apps


def release_report(status: str, services: dict[str, Any]) -> dict[str, Any]:
    """One release of the report's `apps`: its update_status (snapshot.update_status, the
    one place that names it) and its services; a rejected release reports none."""
    return {"update_status": status, "services": {} if status == "rejected" else services}


def _metrics() -> dict[str, Any]:
    """The metric fields now; all null when SUPERVISOR_HARDWARE_METRICS is off. cpu_temp
    and cpu_id are left out when the board does not give them."""
    if not hardware_metrics_enabled():
        return dict.fromkeys(METRIC_FIELDS)
    metrics = asdict(
        read_hardware_metrics(Path(settings.SUPERVISOR_HOST_ROOT), Path(settings.SUPERVISOR_DATA_DIR))
    )
    return {name: value for name, value in metrics.items() if value is not None}


def report_diff(current: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
    """The fields of `current` that differ from `last`, comparing objects one level down."""
    diff: dict[str, Any] = {}
    for key, value in current.items():
        before = last.get(key)
        if key in last and value == before:
            continue
        if isinstance(value, dict) and isinstance(before, dict):
            diff[key] = {k: v for k, v in value.items() if k not in before or before[k] != v}
        else:
            diff[key] = value
    return diff


def report_state_if_due(*, now: float | None = None) -> bool:
    """Send what changed when a report is due; returns whether one was sent.
    Raises CloudError when the cloud refused it (the next attempt is then delayed)."""

    device = cloud_device()
    if device is None or not device.provisioned:
        return False
    now = time.time() if now is None else now
    state = _state_report_pacing(device)
    if not _due(state, now):
        return False
    current = current_report(local_mode=local_mode_active())
    diff = report_diff(current, state.last_reported)
    if set(diff) <= METRIC_FIELDS and now - state.last_metrics_at < METRICS_EVERY_SECONDS:
        diff = {}
    if not diff:
        return False
    try:
        send_state_report(device, diff)
    except CloudError as exc:
        _refused(state, exc, now, CLOUD_REPORT_KEY)
        raise
    state.last_reported = current
    if set(diff) & METRIC_FIELDS:
        state.last_metrics_at = now
    _accepted(state, now, CLOUD_REPORT_KEY)
    save_report_cache(Path(settings.SUPERVISOR_HOST_ROOT), device.uuid, current)
    return True


def report_tags_if_due(*, now: float | None = None) -> bool:
    """Send the tags the cloud has not accepted yet, paced like the state report; returns
    whether some were sent. Raises CloudError when refused (the next attempt is then delayed)."""

    device = cloud_device()
    if device is None or not device.provisioned:
        return False
    now = time.time() if now is None else now
    state = read_report_state(CLOUD_TAGS_REPORT_KEY)
    if not _due(state, now):
        return False
    tags = unreported_tags()
    if not tags:
        return False
    try:
        send_device_tags(device, tags)
    except TagsRefused as exc:
        # One bad tag refuses the whole report: each alone, so that only it is held back.
        if len(tags) == 1:
            _drop_refused_tag(*next(iter(tags.items())), exc)
        else:
            try:
                for name, value in tags.items():
                    _send_tag_alone(device, name, value)
            except CloudError as unwell:
                _refused(state, unwell, now, CLOUD_TAGS_REPORT_KEY)
                raise
    except CloudError as exc:
        _refused(state, exc, now, CLOUD_TAGS_REPORT_KEY)
        raise
    else:
        mark_reported(tags)
    _accepted(state, now, CLOUD_TAGS_REPORT_KEY)
    return True


def _send_tag_alone(device: CloudDevice, name: str, value: str) -> None:
    try:
        send_device_tags(device, {name: value})
    except TagsRefused as exc:
        _drop_refused_tag(name, value, exc)
    else:
        mark_reported({name: value})


def _drop_refused_tag(name: str, value: str, error: CloudError) -> None:
    """A value the cloud refuses is never sent again; a new value of the tag is."""
    logger.warning("the cloud refuses the tag %r (%s); it is not sent again until it changes", name, error)
    mark_reported({name: value})


# --- what a newly provisioned device tells the cloud once -------------------------------

INITIAL_CONFIG_FILE = "cloud-initial-config.json"


def report_initial_config(device: CloudDevice, target_config: dict[str, str] | None) -> None:
    """Once per cloud (api endpoint): create in the cloud the config variables whose current
    values the target would otherwise reset, and name the device from config.json's
    initialDeviceName (docs/cloud.md "Provisioning", step 4).

    Worked out on the first target fetched from this cloud, before it is applied, and kept
    in the data dir until each part was accepted: a refusal (CloudError, raised) is retried
    on the next poll, with `target_config` None."""

    path = Path(settings.SUPERVISOR_DATA_DIR) / INITIAL_CONFIG_FILE
    try:
        pending = json.loads(path.read_text())
    except (OSError, ValueError):
        pending = {}
    if pending.get("endpoint") != device.api_endpoint:
        if target_config is None:
            return
        pending = {
            "endpoint": device.api_endpoint,
            "variables": initial_config_variables(applied_device_config(), target_config),
            "device_name": device.initial_device_name,
        }
        write_file_atomically(path, json.dumps(pending))
    while pending["variables"]:
        name, value = next(iter(pending["variables"].items()))
        send_config_variable(device, name, value)
        del pending["variables"][name]
        write_file_atomically(path, json.dumps(pending))
    if pending["device_name"]:
        send_device_name(device, pending["device_name"])
        pending["device_name"] = ""
        write_file_atomically(path, json.dumps(pending))
