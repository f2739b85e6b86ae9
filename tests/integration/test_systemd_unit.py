"""The systemd unit a device installs (supervisor_site/deploy), checked by systemd itself."""

from __future__ import annotations

import subprocess
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]
UNIT = PROJECT_DIR / "supervisor_site" / "deploy" / "balena-supervisor-python.service"
INSTALL_DIR = "/opt/balena-supervisor-python"


def verify(unit_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / UNIT.name
    path.write_text(unit_text)
    return subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)


def installed_here(text: str) -> str:
    """The unit as installed with the project in this checkout instead of /opt."""
    return text.replace(INSTALL_DIR, str(PROJECT_DIR))


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    result = verify(installed_here(UNIT.read_text()), tmp_path)
    assert result.returncode == 0, result.stderr


def test_systemd_would_refuse_a_unit_whose_agent_is_missing(tmp_path: Path) -> None:
    broken = UNIT.read_text().replace(INSTALL_DIR, str(tmp_path / "nowhere"))
    assert verify(broken, tmp_path).returncode != 0


def test_the_unit_restarts_the_agent_and_leaves_the_apps_alone() -> None:
    lines = [line for line in UNIT.read_text().splitlines() if "=" in line and not line.startswith("#")]
    settings = dict(line.split("=", 1) for line in lines)
    assert settings["ExecStart"].endswith("/.venv/bin/python -m supervisor_site.agent")
    assert settings["Restart"] == "always"
    assert settings["KillMode"] == "mixed"  # SIGTERM to the parent, which stops its children
    assert settings["EnvironmentFile"] == "-/etc/default/balena-supervisor-python"
    assert settings["UMask"] == "0077"
