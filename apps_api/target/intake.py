"""A parsed target becomes the device's: judged against this device, stored, applied.

Every way a target arrives (cloud poll, local mode, `manage.py apply_target`, a preload)
ends here, so contracts are judged and announced the same way for all of them.
"""

from __future__ import annotations

import logging
from typing import Any

from apps_api.apply.device_context import device_facts
from apps_api.engine.state import TargetState
from apps_api.logs.publisher import system_log
from apps_api.target.contracts import judge_contracts
from apps_api.target.store import set_target_state

logger = logging.getLogger(__name__)


def accept_target(
    target: TargetState, *, force: bool = False, posted_apps: dict[str, Any] | None = None
) -> int:
    """Store `target` for the engine, its apps' contracts judged against this device (an
    app whose release does not fit is kept, marked rejected, and left as it runs); returns
    the record id. Raises what `set_target_state` raises, with nothing stored."""
    verdict = judge_contracts(target, device_facts())
    record_id = set_target_state(verdict.target, force=force, posted_apps=posted_apps)
    for spec in target.apps:
        if spec.invalid:
            message = f"Could not move app '{spec.name}' to release {spec.commit}: {spec.rejected}"
            system_log(message, is_stderr=True)
    for app, reason in verdict.rejected.items():
        system_log(f"Some releases were rejected: app '{app}': {reason}", is_stderr=True)
    for service, reason in verdict.dropped.items():
        system_log(f"Optional service '{service}' left out: it requires {reason}")
    if target.unmanaged:
        logger.info("target: not managed by this agent: %s", ", ".join(target.unmanaged))
    return record_id
