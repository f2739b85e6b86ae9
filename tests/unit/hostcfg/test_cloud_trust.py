"""config.json's balenaRootCA: trusted beside the system's CAs, or ignored (and said) when it
is not a base64 PEM certificate."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest
from pytest_django.fixtures import SettingsWrapper

from hostcfg.cloud_trust import cloud_ca_file, cloud_ssl_context

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.fixture
def config_json(tmp_path: Path, settings: SettingsWrapper) -> Path:
    settings.SUPERVISOR_DATA_DIR = str(tmp_path / "data")
    settings.SUPERVISOR_CONFIG_JSON = str(tmp_path / "config.json")
    return tmp_path / "config.json"


def test_without_a_root_ca_the_systems_defaults_apply(config_json: Path) -> None:
    config_json.write_text(json.dumps({"apiEndpoint": "https://api.example"}))
    assert cloud_ca_file() is None
    assert cloud_ssl_context() is None


def test_the_root_ca_is_trusted_beside_the_systems(config_json: Path) -> None:
    config_json.write_text(json.dumps({"balenaRootCA": base64.b64encode(PEM.encode()).decode()}))
    bundle = Path(str(cloud_ca_file()))
    text = bundle.read_text()
    assert text.endswith(PEM)
    assert text.count("BEGIN CERTIFICATE") > 1, "the system's CAs are kept"
    assert bundle.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("value", ["not base64!", base64.b64encode(b"hello").decode()])
def test_a_root_ca_that_is_not_a_pem_certificate_is_ignored_and_said(
    config_json: Path, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    config_json.write_text(json.dumps({"balenaRootCA": value}))
    with caplog.at_level(logging.WARNING, logger="hostcfg.cloud_trust"):
        assert cloud_ca_file() is None
    assert "balenaRootCA is not a base64 PEM certificate" in caplog.text
