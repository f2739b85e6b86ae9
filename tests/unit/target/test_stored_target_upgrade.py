"""An upgrade keeps every container: a target stored by an older release loads as the same
target, and the same target gives the same config hashes (a different hash recreates the
container). The fixtures were written by the release at commit 225373c, from SOURCE below
(tests/fixtures/upgrade/)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from apps_api.engine.container_config import (
    DeviceContext,
    network_config_hash,
    service_config_hash,
    volume_config_hash,
)
from apps_api.target.documents import parse_target
from apps_api.target.store import TARGET_SCHEMA, target_from_document, target_to_document

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "upgrade"
DEVICE_UUID = "0123456789abcdef0123456789abcdef"

SOURCE = {"local": {"name": "old-device", "config": {"SUPERVISOR_POLL_INTERVAL": "600000"}, "apps": {"1": {
    "name": "oldapp", "commit": "c0ffee", "releaseId": 3,
    "services": {
        "1": {"serviceName": "main", "imageId": 11, "image": "local/busybox:latest",
              "environment": {"GREETING": "hi"}, "labels": {"io.balena.features.supervisor-api": "1"},
              "command": ["sleep", "100000"], "stop_signal": "SIGKILL", "ports": ["8080:80"],
              "volumes": ["data:/data"], "networks": ["backend"], "restart": "unless-stopped",
              "healthcheck": {"test": ["CMD", "true"], "interval": "30s"}, "mem_limit": "64m"},
        "2": {"serviceName": "side", "imageId": 12, "image": "local/busybox:latest",
              "environment": {}, "labels": {}, "command": ["sleep", "100000"], "depends_on": ["main"],
              "network_mode": "service:main"},
    },
    "volumes": {"data": {"driver": "local", "labels": {"keep": "yes"}}},
    "networks": {"backend": {"ipam": {"config": [{"subnet": "10.99.0.0/16"}]}}},
}}}}  # fmt: skip
DEVICE = DeviceContext(
    uuid=DEVICE_UUID, host_root="/mnt/root", device_type="raspberrypi4-64", arch="aarch64",
    os_version="balenaOS 5.1.20", device_name="old-device", device_api_key="device-key-0123",
    api_endpoint="https://api.example", registry_endpoint="registry.example",
    service_api_keys={"1/main": "scoped-key-0123"},
)  # fmt: skip


def stored_by_225373c() -> dict[str, Any]:
    return json.loads((FIXTURES / "target_225373c.json").read_text())


def test_a_target_stored_by_an_older_release_loads_as_the_same_target() -> None:
    assert "schema" not in stored_by_225373c(), "schema 1: written before the schema key"
    assert target_from_document(stored_by_225373c()) == parse_target(SOURCE, device_uuid=DEVICE_UUID)


def test_the_same_target_gives_the_config_hashes_the_older_release_gave() -> None:
    """A hash that moves recreates every container at the upgrade: changing what enters it
    must be deliberate, with an adoption path for the containers made before."""
    target = target_from_document(stored_by_225373c())
    hashes = {}
    for app in target.apps:
        hashes |= {f"service {s.service_name}": service_config_hash(app, s, DEVICE) for s in app.services}
        hashes |= {f"network {n.name}": network_config_hash(n) for n in app.networks}
        hashes |= {f"volume {v.name}": volume_config_hash(v) for v in app.volumes}
    assert hashes == json.loads((FIXTURES / "config_hashes_225373c.json").read_text())


def test_fields_a_newer_release_added_are_left_out_after_a_downgrade() -> None:
    newer = copy.deepcopy(stored_by_225373c())
    newer["schema"] = TARGET_SCHEMA
    newer["from_the_future"] = 1
    app = newer["apps"][0]
    app["from_the_future"] = {"x": 1}
    app["services"][0]["from_the_future"] = [1]
    app["networks"][0]["from_the_future"] = True
    app["volumes"][0]["from_the_future"] = "yes"
    assert target_from_document(newer) == target_from_document(stored_by_225373c())


def test_a_target_is_stored_with_its_schema_and_reads_back_the_same() -> None:
    target = parse_target(SOURCE, device_uuid=DEVICE_UUID)
    document = json.loads(json.dumps(target_to_document(target)))
    assert document["schema"] == TARGET_SCHEMA
    assert target_from_document(document) == target


def test_a_container_hashed_as_an_earlier_release_did_is_kept_and_any_other_difference_is_not() -> None:
    """BALENA_HOST_OS_VERSION is filled now; the containers made while it was always empty are
    up to date all the same (the upgrade recreates none), and get it at their next recreation."""
    import dataclasses

    from apps_api.engine.adoption import adopt_matching
    from apps_api.engine.state import CurrentState
    from tests.unit.engine.state_builders import container

    target = target_from_document(stored_by_225373c())
    [app] = target.apps
    main, side = app.services
    made_before = dataclasses.replace(DEVICE, os_version="")
    current = CurrentState(services=(
        container(app, main, config_hash=service_config_hash(app, main, made_before)),
        container(app, side, config_hash="0" * 32),  # made for another target: recreated as usual
    ))  # fmt: skip

    adopted = {s.service_name: s.config_hash for s in adopt_matching(current, target.apps, DEVICE).services}

    assert adopted == {"main": service_config_hash(app, main, DEVICE), "side": "0" * 32}
    assert service_config_hash(app, main, DEVICE) != service_config_hash(app, main, made_before)
