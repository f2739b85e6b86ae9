"""What the supervisor does when asked: views and tasks call these, never the engine.

Callers are listed on each action.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from hostcfg.blink import BLINK_SECONDS

if TYPE_CHECKING:
    from apps_api.engine.state import TargetState

logger = logging.getLogger(__name__)

BLINK_LOCK_KEY = "supervisor:identify-blink"


def identify_device() -> bool:
    """Blink the LED for 15 s in the worker; a request while it blinks is ignored.

    Returns whether a blink was started. Called by: POST /v1/blink.
    """
    from hostcfg.tasks import blink
    from supervisor_site.redis_connection import redis_client

    # The key outlives the blink by a little so a lost worker cannot block blinking forever.
    if not redis_client().set(BLINK_LOCK_KEY, "1", nx=True, ex=int(BLINK_SECONDS) + 5):
        logger.info("identify request ignored: already blinking")
        return False
    blink.delay(BLINK_LOCK_KEY)
    return True


def set_target_state(target: TargetState, *, force: bool = False) -> int:
    """Store a validated target and start applying it; returns the target's record id.

    Called by: manage.py apply_target, POST /v2/local/target-state, the cloud poll.
    """
    from apps_api import apply_status
    from apps_api.engine.apply import request_apply
    from apps_api.target_store import store_target
    from apps_api.tasks import apply_target_state

    record = store_target(target, force=force)
    apply_status.set_flags(update_failed=False)
    request_apply(force=force)
    apply_target_state.delay()
    return record.pk
