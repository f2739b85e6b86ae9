"""A key revoked by another process is refused at once, even on a fresh connection of this
one (security review, L9: the cache took a new connection at the old one's address, with
SQLite's data_version back at its start, for the connection that had read the keys)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.db import connection

from apps_api.apikeys import find_api_key
from apps_api.models import ApiKey

# Another process, which allocates nothing in this one: the next connection here is likely to
# take the address of the one just closed.
REVOKE = (
    "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
    "db.execute(\"DELETE FROM apps_api_apikey WHERE key = 'revoke-me-0123456789'\"); db.commit()"
)


@pytest.mark.django_db(transaction=True)
def test_a_key_deleted_by_another_process_is_refused_on_a_new_connection() -> None:
    ApiKey.objects.create(app_id=5, service_name="svc", key="revoke-me-0123456789", scopes=[])
    for _ in range(20):
        assert find_api_key("revoke-me-0123456789") is not None  # cached
        database = connection.settings_dict["NAME"]
        connection.close()
        subprocess.run([sys.executable, "-c", REVOKE, database], check=True)
        assert find_api_key("revoke-me-0123456789") is None
        ApiKey.objects.create(app_id=5, service_name="svc", key="revoke-me-0123456789", scopes=[])
