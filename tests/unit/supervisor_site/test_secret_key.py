"""The signing key kept in the data dir, with another process starting at the same time."""

from __future__ import annotations

import stat
from pathlib import Path

from supervisor_site.secret_key import kept_secret_key

OURS, THEIRS = "o" * 60, "t" * 60


def test_a_fresh_data_dir_gets_a_key_only_its_user_reads(tmp_path: Path) -> None:
    key_file = tmp_path / "secret_key"
    key = kept_secret_key(key_file)
    assert len(key) >= 32
    assert key_file.read_text() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert kept_secret_key(key_file) == key


def test_a_key_another_process_made_meanwhile_wins_and_is_used(tmp_path: Path) -> None:
    key_file = tmp_path / "secret_key"

    def generate_while_another_process_links_its_key() -> str:
        key_file.write_text(THEIRS)
        return OURS

    assert kept_secret_key(key_file, generate=generate_while_another_process_links_its_key) == THEIRS
    assert key_file.read_text() == THEIRS
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key"]


def test_a_corrupt_key_is_replaced(tmp_path: Path) -> None:
    key_file = tmp_path / "secret_key"
    key_file.write_bytes(bytes(range(256)))
    assert kept_secret_key(key_file, generate=lambda: OURS) == OURS
    assert key_file.read_text() == OURS
