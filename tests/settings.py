"""Test settings: every path in one temporary data dir, Redis database 15.

The test database file is also the configured database, so a Celery worker or a
subprocess started with these settings (they inherit SUPERVISOR_TEST_DATA_DIR) sees
exactly what the test wrote.
"""

import os
import tempfile
from pathlib import Path

_data_dir = Path(os.environ.get("SUPERVISOR_TEST_DATA_DIR") or tempfile.mkdtemp(prefix="supervisor-test-"))
os.environ["SUPERVISOR_TEST_DATA_DIR"] = str(_data_dir)
os.environ["SUPERVISOR_DATA_DIR"] = str(_data_dir)
os.environ["SUPERVISOR_HOST_ROOT"] = str(_data_dir / "host")
os.environ["SUPERVISOR_LED_FILE"] = str(_data_dir / "led0")
# The private bus of tests/host_bus.py (started by the `host_bus` fixture).
os.environ["SUPERVISOR_DBUS_ADDRESS"] = f"unix:path={_data_dir / 'dbus' / 'bus.sock'}"
# HOST_FIREWALL_MODE's iptables run in this network namespace, never the host's: the
# `firewall_netns` fixture creates it; without it the firewall is logged as not applied.
os.environ["SUPERVISOR_FIREWALL_NETNS"] = f"supervisor-test-{_data_dir.name.rsplit('-', 1)[-1]}"
os.environ["SUPERVISOR_DATABASE"] = str(_data_dir / "test.sqlite3")
for _name in ("SUPERVISOR_BOOT_ROOT", "SUPERVISOR_CONFIG_JSON"):
    os.environ.pop(_name, None)
os.environ["REDIS_URL"] = os.environ.get("SUPERVISOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# Tests act on their containers many times a minute; the limit's own tests turn it on.
os.environ.setdefault("SUPERVISOR_ACTION_RATE_LIMIT", "0")

from supervisor_site.settings import *  # noqa: E402, F403

DATABASES["default"]["TEST"]["NAME"] = DATABASES["default"]["NAME"]  # noqa: F405
# Django's test client calls the device `testserver`.
SUPERVISOR_API_HOST_NAMES = ["testserver"]
