"""The progress bars `manage.py localmode push` draws while building and downloading."""

from __future__ import annotations

import io

from localmode.cli.push import ProgressBar


def test_build_steps_move_the_bar_and_done_fills_it() -> None:
    out = io.StringIO()
    bar = ProgressBar("build greeter", out)
    bar.step_line("Step 3/5 : RUN make")
    bar.done()
    frames = out.getvalue().split("\r")
    assert any(frame.startswith("build greeter |") and frame.endswith(" 40%") for frame in frames)
    assert out.getvalue().endswith("| 100%\n")


def test_a_failed_build_says_so_on_its_line() -> None:
    out = io.StringIO()
    bar = ProgressBar("build greeter", out)
    bar.show(30)
    bar.fail()
    assert out.getvalue().rsplit("\r", 1)[-1].startswith("build greeter failed |")
    assert out.getvalue().endswith(" 30%\n")
