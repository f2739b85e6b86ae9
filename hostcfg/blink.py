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
    fd = _open_led(led_file)
    if fd is None:
        return False
    deadline = time.monotonic() + seconds
    state = b"1"
    try:
        while time.monotonic() < deadline:
            os.pwrite(fd, state, 0)
            state = b"0" if state == b"1" else b"1"
            time.sleep(period)
    finally:
        _switch_off_and_close(fd)
    return True


def _open_led(led_file: Path) -> int | None:
    try:
        # No O_CREAT: a missing LED stays missing. No O_TRUNC: each write replaces the
        # one byte in place, as sysfs brightness files expect.
        return os.open(led_file, os.O_WRONLY)
    except FileNotFoundError:
        logger.info("no LED at %s: nothing to blink", led_file)
    except OSError as exc:
        logger.warning("cannot use the LED at %s: %s", led_file, exc)
    return None


def _switch_off_and_close(fd: int) -> None:
    try:
        os.pwrite(fd, b"0", 0)
    except OSError as exc:
        logger.warning("could not switch the LED off: %s", exc)
    finally:
        os.close(fd)


NO_CONNECTIVITY_BLINKS = 4
NO_CONNECTIVITY_PAUSE = 1.0


class _NoConnectivityPattern:
    """4 blinks then a 1 s pause, over and over, from a thread of its own while on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._off = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def showing(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

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
        fd = _open_led(led_file)
        if fd is None:
            return
        try:
            while not off.is_set():
                for _ in range(NO_CONNECTIVITY_BLINKS):
                    os.pwrite(fd, b"1", 0)
                    off.wait(BLINK_PERIOD)
                    os.pwrite(fd, b"0", 0)
                    off.wait(BLINK_PERIOD)
                off.wait(NO_CONNECTIVITY_PAUSE)
        except OSError as exc:
            logger.warning("the LED stopped showing no connectivity: %s", exc)
        finally:
            _switch_off_and_close(fd)


_no_connectivity = _NoConnectivityPattern()


def show_no_connectivity(led_file: Path, *, on: bool) -> None:
    """Start (on) or end the "no connectivity" pattern; a no-op when already so, or when
    the device has no LED."""
    _no_connectivity.show(led_file, on=on)


def no_connectivity_shown() -> bool:
    """Whether the LED is showing the "no connectivity" pattern."""
    return _no_connectivity.showing
