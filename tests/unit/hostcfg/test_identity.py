"""config.json: created when missing, completed when partial, never overwritten when broken."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hostcfg.identity import DeviceConfigError, load_device_identity, write_config_json

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def test_missing_config_json_is_created_with_uuid_and_device_key(tmp_path: Path) -> None:
    path = tmp_path / "boot" / "config.json"
    identity = load_device_identity(path)

    stored = json.loads(path.read_text())
    assert stored == {"uuid": identity.uuid, "deviceApiKey": identity.device_api_key}
    assert HEX32.match(identity.uuid)
    assert HEX32.match(identity.device_api_key)
    assert identity.uuid != identity.device_api_key
    assert not identity.managed
    assert load_device_identity(path) == identity


def test_existing_fields_are_kept_and_missing_ones_added(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"uuid": "abc", "apiEndpoint": "http://127.0.0.1:9", "hostname": "dev"}))

    identity = load_device_identity(path)

    stored = json.loads(path.read_text())
    assert stored["uuid"] == "abc" == identity.uuid
    assert stored["hostname"] == "dev"
    assert HEX32.match(stored["deviceApiKey"])
    assert identity.managed


@pytest.mark.parametrize(("content", "complaint"), [("{oops", "not valid JSON"), ('"text"', "JSON object")])
def test_unusable_config_json_names_the_file_and_is_not_touched(
    tmp_path: Path, content: str, complaint: str
) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)

    with pytest.raises(DeviceConfigError) as error:
        load_device_identity(path)

    assert str(path) in str(error.value)
    assert complaint in str(error.value)
    assert path.read_text() == content


def test_write_replaces_the_file_whole_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    write_config_json(path, {"uuid": "1"})
    write_config_json(path, {"uuid": "2", "deviceApiKey": "k"})

    assert json.loads(path.read_text()) == {"uuid": "2", "deviceApiKey": "k"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
