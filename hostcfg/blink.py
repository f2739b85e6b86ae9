"""The device's LED: the identify pattern, and the "no connectivity" one."""

from __future__ import annotations

import logging
import os
import threading
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


NO_CONNECTIVITY_BLINKS = 4
NO_CONNECTIVITY_PAUSE = 1.0


class _NoConnectivityPattern:
    """4 blinks then a 1 s pause, over and over, from a thread of its own while on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._off = threading.Event()
        self._thread: threading.Thread | None = None

    def show(self, led_file: Path, *, on: bool) -> None:
        with self._lock:
            running = self._thread is not None and self._thread.is_alive()
            if on and not running:
                self._off = threading.Event()
                self._thread = threading.Thread(
                    target=self._run, args=(led_file, self._off), name="led-no-connectivity", daemon=True
                )
                self._thread.start()
            elif not on and running:
                self._off.set()

    @staticmethod
    def _run(led_file: Path, off: threading.Event) -> None:
        try:
            fd = os.open(led_file, os.O_WRONLY)
        except FileNotFoundError:
            return
        try:
            while not off.is_set():
                for _ in range(NO_CONNECTIVITY_BLINKS):
                    os.pwrite(fd, b"1", 0)
                    off.wait(BLINK_PERIOD)
                    os.pwrite(fd, b"0", 0)
                    off.wait(BLINK_PERIOD)
                off.wait(NO_CONNECTIVITY_PAUSE)
        finally:
            os.pwrite(fd, b"0", 0)
            os.close(fd)


_no_connectivity = _NoConnectivityPattern()


def show_no_connectivity(led_file: Path, *, on: bool) -> None:
    """Start (on) or end the "no connectivity" pattern; a no-op when already so, or when
    the device has no LED."""
    _no_connectivity.show(led_file, on=on)
