"""Test settings: the pytest process sees what the session's agent sees.

The session's agent (`shipped_agent` in tests/conftest.py) runs with the shipped settings on
this data dir: the test database file is its database, and REDIS_URL its own redis-server's
unix socket, so what a test writes the agent reads, and the other way round. A subprocess
started with these settings inherits SUPERVISOR_TEST_DATA_DIR and shares them too.
"""

import os
import secrets
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
os.environ.pop("SUPERVISOR_DATABASE", None)
# The session agent listens on the device's port, 48484 (the one the balena CLI talks to), on
# a loopback address of this run's own: never a `make run`'s 127.0.0.1:48484 nor another run's.
if "SUPERVISOR_TEST_ADDRESS" not in os.environ:
    _octets = secrets.token_bytes(3)
    os.environ["SUPERVISOR_TEST_ADDRESS"] = f"127.{_octets[0] % 254 + 1}.{_octets[1]}.{_octets[2] % 254 + 1}"
os.environ["SUPERVISOR_LISTEN_ADDRESS"] = os.environ["SUPERVISOR_TEST_ADDRESS"]
os.environ["SUPERVISOR_PORT"] = "48484"
for _name in ("SUPERVISOR_BOOT_ROOT", "SUPERVISOR_CONFIG_JSON"):
    os.environ.pop(_name, None)
os.environ.pop("REDIS_URL", None)  # the agent's own: a unix socket in the data dir
# Tests act on their containers many times a minute; the limit's own tests turn it on.
os.environ.setdefault("SUPERVISOR_ACTION_RATE_LIMIT", "0")

from supervisor_site.settings import *  # noqa: E402, F403

DATABASES["default"]["TEST"]["NAME"] = DATABASES["default"]["NAME"]  # noqa: F405
# Django's test client calls the device `testserver`.
SUPERVISOR_API_HOST_NAMES = ["testserver"]
