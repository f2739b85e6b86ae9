"""The LED identify pattern (the LED is a plain file here, as under /sys/class/leds)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from hostcfg.blink import blink_led


def test_blink_alternates_one_and_zero_and_ends_at_zero(tmp_path: Path) -> None:
    led = tmp_path / "brightness"
    led.write_text("0")
    seen: list[str] = []
    blinker = threading.Thread(target=blink_led, args=(led,), kwargs={"seconds": 0.6, "period": 0.1})
    blinker.start()
    while blinker.is_alive():
        seen.append(led.read_text())
        time.sleep(0.02)

    assert "1" in seen
    assert "0" in seen
    assert led.read_text() == "0"


def test_missing_led_is_not_an_error_and_is_not_created(tmp_path: Path) -> None:
    led = tmp_path / "no-led"
    assert blink_led(led, seconds=0.1) is False
    assert not led.exists()
