"""Two processes writing to the one SQLite database at once, as web and worker do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from apps_api.models import ApiKey

PROJECT_DIR = Path(__file__).resolve().parents[2]
WRITES_PER_PROCESS = 150

# Each write reads first, then writes, inside one transaction: the pattern that fails
# with "database is locked" when two SQLite connections upgrade read locks at once.
WRITER = """
import sys, django
django.setup()
from django.db import transaction
from apps_api.models import ApiKey
name, count = sys.argv[1], int(sys.argv[2])
for i in range(count):
    with transaction.atomic():
        seen = ApiKey.objects.filter(service_name__startswith=name).count()
        ApiKey.objects.create(app_id=1, service_name=f"{name}-{i}", key=f"{name}{i:06d}", scopes=[seen])
    ApiKey.objects.filter(service_name=f"{name}-{i}").update(app_id=2)
"""


@pytest.mark.django_db(transaction=True)
def test_two_processes_write_at_once_without_database_is_locked() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, name, str(WRITES_PER_PROCESS)],
            cwd=PROJECT_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("web", "worker")
    ]
    results = [writer.communicate(timeout=300) for writer in writers]

    for writer, (_, stderr) in zip(writers, results, strict=True):
        assert "database is locked" not in stderr
        assert writer.returncode == 0, stderr
    for name in ("web", "worker"):
        rows = ApiKey.objects.filter(service_name__startswith=f"{name}-")
        assert rows.count() == WRITES_PER_PROCESS
        assert set(rows.values_list("app_id", flat=True)) == {2}
        assert sorted(row.scopes[0] for row in rows) == list(range(WRITES_PER_PROCESS))
