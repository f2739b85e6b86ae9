"""What the supervisor does when asked: views and tasks call these, never the engine.

Callers are listed on each action.
"""

from __future__ import annotations

import logging

from hostcfg.blink import BLINK_SECONDS

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
