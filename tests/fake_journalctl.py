#!/usr/bin/env python3
"""A stand-in for journalctl, because no systemd-journald runs in CI: tests point
SUPERVISOR_JOURNALCTL at this file.

It plays the runs planned in `$FAKE_JOURNAL_DIR/plan.json`, one per start: a list of
`{"entries": [<journal entry>...], "exit": <status> | null}`; it prints the entries as
`journalctl --output=json` does (one JSON object per line) and then exits with that
status, or, with `null`, follows forever (until killed). Past the last run it plays the
last again. Each start appends its arguments to `$FAKE_JOURNAL_DIR/argv` (one JSON list
per line), then waits for the file `$FAKE_JOURNAL_DIR/go` when the plan's run says
`"after_go": true`. Standard library only: it runs on whatever python3 the host has.
"""

import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    directory = Path(os.environ["FAKE_JOURNAL_DIR"])
    with open(directory / "argv", "a") as calls:
        calls.write(json.dumps(sys.argv[1:]) + "\n")
    started = len((directory / "argv").read_text().splitlines())
    runs = json.loads((directory / "plan.json").read_text())
    run = runs[min(started, len(runs)) - 1]
    while run.get("after_go") and not (directory / "go").exists():
        time.sleep(0.05)
    for entry in run["entries"]:
        sys.stdout.write(json.dumps(entry) + "\n")
    sys.stdout.flush()
    if run["exit"] is None:
        while True:
            time.sleep(3600)
    return int(run["exit"])


if __name__ == "__main__":
    sys.exit(main())
