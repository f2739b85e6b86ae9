"""The identify pattern on the device's LED."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

logger = logging.getLogger(__name__)

BLINK_SECONDS = 15.0
BLINK_PERIOD = 0.2


def blink_led(led_file: Path, *, seconds: float = BLINK_SECONDS, period: float = BLINK_PERIOD) -> bool:
    """Write 1/0 to `led_file` every `period` for `seconds`, ending at 0.

    A device without that LED file has nothing to blink: returns False, no error.
    """
    try:
        # No O_CREAT: a missing LED stays missing. No O_TRUNC: each write replaces the
        # one byte in place, as sysfs brightness files expect.
        fd = os.open(led_file, os.O_WRONLY)
    except FileNotFoundError:
        logger.info("no LED at %s: identify request ignored", led_file)
        return False
    deadline = time.monotonic() + seconds
    state = b"1"
    try:
        while time.monotonic() < deadline:
            os.pwrite(fd, state, 0)
            state = b"0" if state == b"1" else b"1"
            time.sleep(period)
    finally:
        os.pwrite(fd, b"0", 0)
        os.close(fd)
    return True
