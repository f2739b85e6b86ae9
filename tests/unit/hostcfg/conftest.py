"""Fixtures shared by the host-side unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def host_root(tmp_path: Path) -> Path:
    """A host root whose /tmp is world-writable and sticky, as on a device."""
    root = tmp_path / "host"
    (root / "tmp").mkdir(parents=True)
    (root / "tmp").chmod(0o1777)
    return root
