"""Target state intake: v2 local-mode and v3 cloud documents become one validated TargetState."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest

from apps_api.engine.state import AppSpec, InvalidTargetState, NetworkSpec, ServiceSpec, VolumeSpec
from apps_api.target.documents import parse_cloud_target, parse_local_target, parse_target

DEVICE_UUID = "f0e1d2c3b4a5"

# The body of the `POST /v2/local/target-state` example of the balena Supervisor API reference, v9, verbatim.
SEED_DOCUMENT: dict[str, Any] = {
    "local": {
        "name": "Home",
        "config": {
            "HOST_CONFIG_disable_splash": "1",
            "HOST_CONFIG_dtparam": "i2c_arm=on,i2s=on",
            "HOST_CONFIG_gpio": '"2=op","3=op"',
            "SUPERVISOR_LOCAL_MODE": "1",
            "SUPERVISOR_POLL_INTERVAL": "600000",
        },
        "apps": {
            "1": {
                "name": "localapp",
                "commit": "localcommit",
                "releaseId": "1",
                "services": {
                    "1": {
                        "environment": {},
                        "labels": {},
                        "imageId": 1,
                        "serviceName": "one",
                        "serviceId": 1,
                        "image": "local_image_one:latest",
                        "running": True,
                    },
                    "2": {
                        "environment": {},
                        "labels": {},
                        "network_mode": "container:one",
                        "imageId": 2,
                        "serviceName": "two",
                        "serviceId": 2,
                        "image": "local_image_two:latest",
                        "running": True,
                    },
                },
                "volumes": {},
                "networks": {},
            }
        },
    },
    "dependent": {"apps": [], "devices": []},
}


def service(name: str = "main", **fields: Any) -> dict[str, Any]:
    """A v2 service entry with the required keys; `fields` add or replace keys."""
    base = {
        "serviceName": name,
        "imageId": 1,
        "image": f"local_image_{name}:latest",
        "environment": {},
        "labels": {},
    }
    return {**base, **fields}


def local_document(*services: dict[str, Any], **app_fields: Any) -> dict[str, Any]:
    """A v2 document with app "1"; services are keyed "1", "2", ... in the order given."""
    app = {
        "name": "localapp",
        "commit": "abc",
        "releaseId": "1",
        "services": {str(i): s for i, s in enumerate(services or (service(),), start=1)},
        "volumes": {},
        "networks": {},
        **app_fields,
    }
    return {"local": {"name": "dev", "config": {}, "apps": {"1": app}}}


def cloud_document(services: dict[str, Any] | None = None, **release_fields: Any) -> dict[str, Any]:
    """A v3 document for DEVICE_UUID with app "appuuid1" and release "c0ffee"."""
    if services is None:
        services = {
            "main": {
                "id": 7,
                "image_id": 70,
                "image": "registry/main@sha256:aa",
                "environment": {},
                "labels": {},
            }
        }
    release = {"id": 5, "services": services, "volumes": {}, "networks": {}, **release_fields}
    app = {"id": 3, "name": "fleetapp", "releases": {"c0ffee": release}}
    return {DEVICE_UUID: {"name": "dev", "config": {}, "apps": {"appuuid1": app}}}


def only_app(document: dict[str, Any]) -> AppSpec:
    (app,) = parse_target(document, device_uuid=DEVICE_UUID).apps
    return app


def only_service(document: dict[str, Any]) -> ServiceSpec:
    (spec,) = only_app(document).services
    return spec


def composition_of(**fields: Any) -> dict[str, Any]:
    """The normalised composition of a single v2 service given these compose fields."""
    document = local_document(service(**fields), volumes={"data": {}}, networks={"backend": {}})
    return only_service(document).composition


# --- whole documents -------------------------------------------------------------------


def test_seed_example_parses_and_drops_the_unsupported_container_network_mode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        target = parse_local_target(SEED_DOCUMENT)

    assert target.source == "local"
    assert target.name == "Home"
    assert target.config["HOST_CONFIG_gpio"] == '"2=op","3=op"'
    (app,) = target.apps
    assert (app.app_id, app.app_uuid, app.name, app.commit, app.release_id) == (
        1,
        "1",
        "localapp",
        "localcommit",
        1,
    )
    one, two = app.services
    assert one == ServiceSpec(
        service_name="one",
        service_id=1,
        image_id=1,
        image="local_image_one:latest",
        release_id=1,
        commit="localcommit",
        composition={"restart": "always"},
    )
    assert (two.service_name, two.service_id, two.image_id) == ("two", 2, 2)
    assert "network_mode" not in two.composition
    assert two.depends_on == ()
    assert "container:one" in caplog.text


def test_balena_cli_push_document_parses_into_one_local_app() -> None:
    document = {
        "local": {
            "name": "my-device",
            "config": {"SUPERVISOR_LOCAL_MODE": "1", "HOST_CONFIG_gpu_mem": "16"},
            "apps": {
                "1": {
                    "name": "localapp",
                    "commit": "abc",
                    "releaseId": "1",
                    "services": {
                        "1": {
                            "serviceName": "main",
                            "serviceId": 1,
                            "imageId": 1,
                            "image": "local_image_main:latest",
                            "environment": {},
                            "labels": {},
                            "running": True,
                            "restart": "unless-stopped",
                            "command": "sleep 1000",
                        }
                    },
                    "volumes": {},
                    "networks": {},
                }
            },
        }
    }

    target = parse_local_target(document, current_name="ignored")

    assert target.name == "my-device"
    assert target.config == {"SUPERVISOR_LOCAL_MODE": "1", "HOST_CONFIG_gpu_mem": "16"}
    assert target.apps == (
        AppSpec(
            app_id=1,
            app_uuid="1",
            name="localapp",
            commit="abc",
            release_id=1,
            services=(
                ServiceSpec(
                    service_name="main",
                    service_id=1,
                    image_id=1,
                    image="local_image_main:latest",
                    release_id=1,
                    commit="abc",
                    composition={"restart": "unless-stopped", "command": ["sleep", "1000"]},
                ),
            ),
        ),
    )


def test_cloud_document_uses_only_the_first_release_of_an_app() -> None:
    document = cloud_document()
    releases = document[DEVICE_UUID]["apps"]["appuuid1"]["releases"]
    releases["deadbeef"] = {"id": "not even valid", "services": []}

    target = parse_cloud_target(document, device_uuid=DEVICE_UUID)

    assert target.source == "cloud"
    assert target.name == "dev"
    (app,) = target.apps
    assert (app.app_id, app.app_uuid, app.name, app.commit, app.release_id) == (
        3,
        "appuuid1",
        "fleetapp",
        "c0ffee",
        5,
    )
    assert app.app_class == "fleet"
    assert app.is_host is False
    assert app.services == (
        ServiceSpec(
            service_name="main",
            service_id=7,
            image_id=70,
            image="registry/main@sha256:aa",
            release_id=5,
            commit="c0ffee",
            composition={"restart": "always"},
        ),
    )


def test_cloud_app_without_releases_installs_nothing() -> None:
    document = cloud_document()
    app_doc = document[DEVICE_UUID]["apps"]["appuuid1"]
    app_doc.update(releases={}, **{"class": "block"})

    assert only_app(document) == AppSpec(app_id=3, app_uuid="appuuid1", name="fleetapp", app_class="block")


SUPERVISOR_APP_UUID = "52e35121417640b1b28a680504e4039b"  # amd64


def test_the_supervisors_own_release_and_host_apps_are_left_out_and_named() -> None:
    document = cloud_document()
    user_app = document[DEVICE_UUID]["apps"]["appuuid1"]
    supervisor = {**user_app, "id": 8, "name": "balena_supervisor"}
    host_os = {**user_app, "id": 9, "name": "balenaos", "is_host": True}
    document[DEVICE_UUID]["apps"].update({SUPERVISOR_APP_UUID: supervisor, "hostosuuid": host_os})

    target = parse_target(document, device_uuid=DEVICE_UUID)

    assert [app.app_uuid for app in target.apps] == ["appuuid1"]
    assert target.unmanaged == (SUPERVISOR_APP_UUID, "hostosuuid")


@pytest.mark.parametrize(
    ("name", "labels"),
    [
        ("balena-supervisor", {}),
        ("resin-supervisor", {}),
        ("ext", {"io.balena.image.class": "overlay"}),
        ("ext", {"io.balena.image.class": "fileset"}),
        ("ext", {"io.balena.image.store": "root"}),
    ],
)
def test_supervisor_images_and_host_extensions_are_left_out_of_a_user_app(
    name: str, labels: dict[str, str]
) -> None:
    kept = {"id": 1, "image_id": 2, "image": "img", "environment": {}, "labels": {}}
    skipped = {"id": 5, "image_id": 6, "image": "ext", "environment": {}, "labels": labels}
    document = cloud_document({"main": kept, name: skipped})

    target = parse_target(document, device_uuid=DEVICE_UUID)

    assert [s.service_name for s in target.apps[0].services] == ["main"]
    assert target.unmanaged == (f"appuuid1/{name}",)


def test_a_data_store_service_image_is_an_ordinary_service() -> None:
    labels = {"io.balena.image.class": "service", "io.balena.image.store": "data"}
    service = {"id": 1, "image_id": 2, "image": "img", "environment": {}, "labels": {},
               "composition": {"labels": labels}}  # fmt: skip

    target = parse_target(cloud_document({"main": service}), device_uuid=DEVICE_UUID)

    assert [s.service_name for s in target.apps[0].services] == ["main"]
    assert target.unmanaged == ()


def test_cloud_composition_holds_compose_fields_and_top_level_environment_and_labels_win() -> None:
    document = cloud_document(
        {
            "main": {
                "id": 1,
                "image_id": 2,
                "image": "img",
                "environment": {"A": "top"},
                "labels": {"io.balena.x": "top"},
                "running": False,
                "contract": {"requires": []},
                "composition": {
                    "environment": ["A=inner", "B=inner"],
                    "labels": {"io.balena.x": "inner", "io.balena.y": "inner"},
                    "privileged": True,
                    "image": "ignored",
                },
            }
        }
    )

    spec = only_service(document)

    assert spec.environment == {"A": "top", "B": "inner"}
    assert spec.labels == {"io.balena.x": "top", "io.balena.y": "inner"}
    assert spec.running is False
    assert spec.composition == {"privileged": True, "restart": "always"}


def test_parse_target_reads_a_document_with_local_key_as_v2_and_any_other_as_v3() -> None:
    assert parse_target(local_document(), device_uuid=DEVICE_UUID).source == "local"
    assert parse_target(cloud_document(), device_uuid=DEVICE_UUID).source == "cloud"


@pytest.mark.parametrize(
    ("local_name", "expected"),
    [
        pytest.param(None, "current", id="missing name means current name"),
        pytest.param("", "current", id="empty name means current name"),
        pytest.param("Home", "Home", id="given name wins"),
    ],
)
def test_local_device_name_falls_back_to_current_name(local_name: str | None, expected: str) -> None:
    document = local_document()
    document["local"]["name"] = local_name
    document["local"].pop("config")

    target = parse_local_target(document, current_name="current")

    assert (target.name, target.config) == (expected, {})


def test_local_app_without_commit_has_no_release_and_no_services() -> None:
    document = local_document(service(image=42))  # invalid, but never read: there is no release
    del document["local"]["apps"]["1"]["commit"]

    assert only_app(document) == AppSpec(app_id=1, app_uuid="1", name="localapp")


def test_local_service_ids_come_from_the_map_keys_and_services_are_sorted_by_name() -> None:
    document = local_document(service("zeta", serviceId=99, imageId="12"), service("alpha", imageId=3))

    app = only_app(document)

    assert [(s.service_name, s.service_id, s.image_id) for s in app.services] == [
        ("alpha", 2, 3),
        ("zeta", 1, 12),
    ]


def test_local_dependent_and_force_are_accepted() -> None:
    document = {**local_document(), "dependent": {"apps": [], "devices": []}, "force": True}

    assert parse_local_target(document).apps[0].name == "localapp"


def test_apps_are_ordered_by_app_id() -> None:
    document = local_document()
    apps = document["local"]["apps"]
    apps["10"] = copy.deepcopy(apps["1"])

    assert [a.app_id for a in parse_local_target(document).apps] == [1, 10]


def test_device_config_variables_are_kept_as_given() -> None:
    document = local_document()
    document["local"]["config"] = {"RESIN_SUPERVISOR_DELTA": "1", "HOST_CONFIG_dtoverlay": "a:b", "X": ""}

    assert parse_local_target(document).config == {
        "RESIN_SUPERVISOR_DELTA": "1",
        "HOST_CONFIG_dtoverlay": "a:b",
        "X": "",
    }


# --- app volumes and networks ------------------------------------------------------------


def test_app_volumes_and_networks_get_defaults_and_normalised_ipam() -> None:
    document = local_document(
        volumes={
            "data": None,
            "cache": {"driver": "local", "driver_opts": {"type": "tmpfs"}, "labels": {"a": "b"}},
        },
        networks={
            "frontend": {},
            "backend": {
                "driver_opts": {"com.docker.network.bridge.name": "br0"},
                "ipam": {"config": [{"subnet": "10.1.0.0/16", "gateway": "10.1.0.1"}]},
                "internal": True,
                "enable_ipv6": "true",
                "labels": {"io.balena.x": "1"},
            },
        },
    )

    app = only_app(document)

    assert app.volumes == (
        VolumeSpec(name="cache", driver_opts={"type": "tmpfs"}, labels={"a": "b"}),
        VolumeSpec(name="data"),
    )
    default_ipam = {"driver": "default", "config": [], "options": {}}
    assert app.networks == (
        NetworkSpec(
            name="backend",
            driver_opts={"com.docker.network.bridge.name": "br0"},
            ipam={
                "driver": "default",
                "config": [{"subnet": "10.1.0.0/16", "gateway": "10.1.0.1"}],
                "options": {},
            },
            enable_ipv6=True,
            internal=True,
            labels={"io.balena.x": "1"},
        ),
        NetworkSpec(name="frontend", ipam=default_ipam),
    )


# --- compose field normalisation -----------------------------------------------------------

MIB = 1024**2


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({}, {"restart": "always"}, id="restart defaults to always"),
        pytest.param(
            {"restart": "Unless-Stopped"}, {"restart": "unless-stopped"}, id="restart is case-insensitive"
        ),
        pytest.param({"restart": "on-failure"}, {"restart": "on-failure"}, id="restart on-failure kept"),
        pytest.param({"restart": "no"}, {"restart": "no"}, id="restart no kept"),
        pytest.param({"restart": "sometimes"}, {"restart": "always"}, id="unknown restart becomes always"),
        pytest.param({"restart": 3}, {"restart": "always"}, id="non-string restart becomes always"),
    ],
)
def test_restart_policy(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    assert composition_of(**fields) == expected


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        pytest.param("command", "sleep 1000", ["sleep", "1000"], id="command string is shell-split"),
        pytest.param(
            "command", "sh -c 'echo hi there'", ["sh", "-c", "echo hi there"], id="command honours quotes"
        ),
        pytest.param("command", ["echo", "a b"], ["echo", "a b"], id="command list kept"),
        pytest.param("entrypoint", "/bin/sh -c", ["/bin/sh", "-c"], id="entrypoint string is shell-split"),
        pytest.param("mem_limit", "512m", 512 * MIB, id="memory in mebibytes"),
        pytest.param("mem_limit", "1GB", 1024 * MIB, id="memory unit is case-insensitive with b suffix"),
        pytest.param("mem_reservation", "64k", 64 * 1024, id="memory in kibibytes"),
        pytest.param("mem_limit", "100", 100, id="memory without unit is bytes"),
        pytest.param("mem_limit", "100b", 100, id="memory in bytes"),
        pytest.param(
            "mem_limit", "1.5g", 1536 * MIB, id="memory with a fraction, as docker-compose reads it"
        ),
        pytest.param("mem_limit", "0.5m", 512 * 1024, id="a fraction of a mebibyte"),
        pytest.param("mem_limit", "1gb", 1024 * MIB, id="memory unit with b suffix, lower case"),
        pytest.param("mem_limit", "lots", 0, id="unreadable memory: no limit, as the original"),
        pytest.param("mem_limit", "-1m", 0, id="negative memory: no limit, as the original"),
        pytest.param("shm_size", 1048576, MIB, id="memory as a number of bytes"),
        pytest.param("storage_opt", {"size": "1G"}, {"size": "1G"}, id="storage_opt untouched"),
        pytest.param("cpus", 0.5, 500_000_000, id="cpus become nano cpus"),
        pytest.param("cpus", "1.5", 1_500_000_000, id="cpus from a numeric string"),
        pytest.param("cpus", 2, 2_000_000_000, id="whole cpus"),
        pytest.param("stop_grace_period", "1m30s", 90, id="grace period minutes and seconds"),
        pytest.param("stop_grace_period", "10s", 10, id="grace period seconds"),
        pytest.param("stop_grace_period", "2h", 7200, id="grace period hours"),
        pytest.param("stop_grace_period", "500ms", 0, id="grace period below a second rounds down"),
        pytest.param("stop_grace_period", "1.9s", 1, id="fractional grace period rounds down"),
        pytest.param("stop_grace_period", 15, 15, id="grace period as a number of seconds"),
        pytest.param("stop_signal", "SIGINT", "SIGINT", id="stop signal kept"),
        pytest.param("tmpfs", "/run", ["/run"], id="tmpfs string becomes a list"),
        pytest.param("tmpfs", ["/run", "/tmp"], ["/run", "/tmp"], id="tmpfs list kept"),
        pytest.param("dns", "8.8.8.8", ["8.8.8.8"], id="dns string becomes a list"),
        pytest.param("cap_add", ["NET_ADMIN"], ["NET_ADMIN"], id="cap_add kept"),
        pytest.param(
            "security_opt",
            ["label=disable", "seccomp=unconfined"],
            ["seccomp=unconfined"],
            id="label security opts dropped",
        ),
        pytest.param(
            "sysctls",
            ["net.core.somaxconn=1024"],
            {"net.core.somaxconn": "1024"},
            id="sysctls list becomes a map",
        ),
        pytest.param(
            "sysctls",
            {"net.ipv4.ip_forward": 1},
            {"net.ipv4.ip_forward": "1"},
            id="sysctls map values as strings",
        ),
        pytest.param(
            "extra_hosts",
            ["db=10.0.0.2", "cache:10.0.0.3"],
            ["db:10.0.0.2", "cache:10.0.0.3"],
            id="extra hosts as host:ip",
        ),
        pytest.param("extra_hosts", {"db": "10.0.0.2"}, ["db:10.0.0.2"], id="extra hosts map"),
        pytest.param(
            "ulimits",
            {"nofile": {"soft": 1024, "hard": 2048}},
            {"nofile": {"soft": 1024, "hard": 2048}},
            id="ulimits kept",
        ),
        pytest.param("tty", "true", True, id="boolean from string true"),
        pytest.param("privileged", "False", False, id="boolean from string false"),
        pytest.param("init", True, True, id="init boolean"),
        pytest.param("read_only", False, False, id="read_only boolean"),
        pytest.param("oom_kill_disable", True, True, id="oom_kill_disable boolean"),
        pytest.param("cpu_shares", "512", 512, id="integer from string"),
        pytest.param("oom_score_adj", -500, -500, id="negative integer kept"),
        pytest.param("hostname", "box", "box", id="hostname kept"),
        pytest.param("user", 1000, "1000", id="numeric user becomes a string"),
        pytest.param("group_add", ["audio", 44], ["audio", "44"], id="groups as strings"),
    ],
)
def test_compose_field_normalisation(field: str, value: Any, expected: Any) -> None:
    assert composition_of(**{field: value})[field] == expected


@pytest.mark.parametrize(
    ("healthcheck", "expected"),
    [
        pytest.param(
            {
                "test": "curl -f http://localhost",
                "interval": "30s",
                "timeout": "1m",
                "start_period": "500ms",
                "retries": 3,
            },
            {
                "test": ["CMD-SHELL", "curl -f http://localhost"],
                "interval": 30_000_000_000,
                "timeout": 60_000_000_000,
                "start_period": 500_000_000,
                "retries": 3,
            },
            id="string test runs in a shell and durations are nanoseconds",
        ),
        pytest.param({"test": ["CMD", "true"]}, {"test": ["CMD", "true"]}, id="list test kept"),
        pytest.param({"disable": True, "test": "x"}, {"test": ["NONE"]}, id="disable means test NONE"),
        pytest.param(
            {"test": "x", "interval": 5},
            {"test": ["CMD-SHELL", "x"], "interval": 5_000_000_000},
            id="numeric duration is seconds",
        ),
    ],
)
def test_healthcheck_normalisation(healthcheck: dict[str, Any], expected: dict[str, Any]) -> None:
    assert composition_of(healthcheck=healthcheck)["healthcheck"] == expected


def port(container: int, host: int | None = None, protocol: str = "tcp", host_ip: str = "") -> dict[str, Any]:
    return {"container_port": container, "protocol": protocol, "host_ip": host_ip, "host_port": host}


@pytest.mark.parametrize(
    ("ports", "expected"),
    [
        pytest.param(["80"], [port(80)], id="container port only"),
        pytest.param([80], [port(80)], id="port as a number"),
        pytest.param(["8080:80"], [port(80, 8080)], id="host and container"),
        pytest.param(["127.0.0.1:8080:80"], [port(80, 8080, host_ip="127.0.0.1")], id="host ip"),
        pytest.param(["127.0.0.1::80"], [port(80, host_ip="127.0.0.1")], id="host ip without host port"),
        pytest.param(["[::1]:8080:80"], [port(80, 8080, host_ip="::1")], id="bracketed ipv6 host ip"),
        pytest.param(["53:53/udp"], [port(53, 53, "udp")], id="udp"),
        pytest.param(["53:53/UDP"], [port(53, 53, "udp")], id="protocol is case-insensitive"),
        pytest.param(
            ["8000-8002:9000-9002/udp"],
            [port(9000, 8000, "udp"), port(9001, 8001, "udp"), port(9002, 8002, "udp")],
            id="ranges are expanded",
        ),
        pytest.param(["9000-9001"], [port(9000), port(9001)], id="container range"),
        pytest.param(
            [{"target": 80, "published": 8080, "protocol": "udp", "host_ip": "192.168.1.10"}],
            [port(80, 8080, "udp", "192.168.1.10")],
            id="long syntax",
        ),
        pytest.param([{"target": 80}], [port(80)], id="long syntax with target only"),
    ],
)
def test_ports_normalisation(ports: list[Any], expected: list[dict[str, Any]]) -> None:
    assert composition_of(ports=ports)["ports"] == expected


def mount(
    target: str, source: str | None = None, kind: str = "volume", read_only: bool = False
) -> dict[str, Any]:
    return {"type": kind, "source": source, "target": target, "read_only": read_only}


@pytest.mark.parametrize(
    ("volumes", "expected"),
    [
        pytest.param(["data:/data"], [mount("/data", "data")], id="named volume"),
        pytest.param(
            ["data:/data:ro"], [mount("/data", "data", read_only=True)], id="named volume read-only"
        ),
        pytest.param(["data:/data:rw"], [mount("/data", "data")], id="named volume read-write"),
        pytest.param(["data:/data:z"], [mount("/data", "data")], id="SELinux relabel: nothing to do"),
        pytest.param(["data:/data:ro,Z"], [mount("/data", "data", read_only=True)], id="read-only, relabel"),
        pytest.param(["data:/data:cached"], [mount("/data", "data")], id="consistency mode: nothing to do"),
        pytest.param(["data:/data:nocopy"], [mount("/data", "data")], id="no copy"),
        pytest.param(["/scratch"], [mount("/scratch")], id="anonymous volume"),
        pytest.param(
            [{"type": "volume", "source": "data", "target": "/data", "read_only": True}],
            [mount("/data", "data", read_only=True)],
            id="long syntax volume",
        ),
        pytest.param(
            [{"type": "volume", "target": "/anon"}], [mount("/anon")], id="long syntax anonymous volume"
        ),
        pytest.param(
            [{"type": "tmpfs", "target": "/run"}], [mount("/run", kind="tmpfs")], id="long syntax tmpfs"
        ),
    ],
)
def test_service_volumes_normalisation(volumes: list[Any], expected: list[dict[str, Any]]) -> None:
    assert composition_of(volumes=volumes)["volumes"] == expected


@pytest.mark.parametrize(
    ("networks", "expected"),
    [
        pytest.param(
            ["backend", "default"],
            {"backend": {"aliases": []}, "default": {"aliases": []}},
            id="list of names",
        ),
        pytest.param({"backend": None}, {"backend": {"aliases": []}}, id="map with null settings"),
        pytest.param(
            {"backend": {"aliases": ["db"], "ipv4_address": "10.0.0.5", "priority": 3}},
            {"backend": {"aliases": ["db"], "ipv4_address": "10.0.0.5"}},
            id="map with aliases and address",
        ),
        pytest.param(
            {"backend": {"ipv6_address": "fd00::5", "link_local_ips": ["169.254.8.8"]}},
            {"backend": {"aliases": [], "ipv6_address": "fd00::5", "link_local_ips": ["169.254.8.8"]}},
            id="map with an IPv6 and link-local addresses",
        ),
    ],
)
def test_service_networks_normalisation(networks: Any, expected: dict[str, Any]) -> None:
    assert composition_of(networks=networks)["networks"] == expected


@pytest.mark.parametrize(
    "bind",
    ["/host:/data", "./src:/src", {"type": "bind", "source": "/etc", "target": "/etc"}],
    ids=["short syntax", "relative path", "long syntax"],
)
def test_a_bind_mount_is_left_out_with_a_warning_and_the_rest_kept(
    bind: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        composition = composition_of(volumes=[bind, "data:/data"])

    assert composition["volumes"] == [mount("/data", source="data")]
    assert "Ignoring bind mount" in caplog.text
    assert f"{S}.volumes.0" in caplog.text


@pytest.mark.parametrize("mode", ["host", "bridge", "none", "backend", "default"])
def test_network_mode_builtin_or_app_network_is_kept(mode: str) -> None:
    assert composition_of(network_mode=mode)["network_mode"] == mode


def test_absent_compose_fields_stay_absent() -> None:
    composition = composition_of(command=None)

    assert composition == {"restart": "always"}


def test_unknown_compose_fields_are_dropped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        composition = composition_of(build="./", container_name="x", privileged=True)

    assert composition == {"privileged": True, "restart": "always"}
    at = "local.apps.1.services.1"
    assert f"Ignoring unsupported or unknown compose fields at {at}: build, container_name" in caplog.text


def test_camel_case_compose_fields_are_read_as_snake_case() -> None:
    assert composition_of(memLimit="1m", networkMode="host") == {
        "mem_limit": MIB,
        "network_mode": "host",
        "restart": "always",
    }


def test_v2_service_keys_other_than_compose_fields_stay_out_of_composition() -> None:
    spec = only_service(local_document(service(serviceId=5, running=False, contract={"requires": []})))

    assert spec.composition == {"restart": "always"}
    assert spec.running is False


def test_running_defaults_to_true() -> None:
    assert only_service(local_document()).running is True


def test_composition_environment_and_labels_accept_the_list_form() -> None:
    document = cloud_document(
        {
            "main": {
                "id": 1,
                "image_id": 1,
                "image": "img",
                "environment": {},
                "labels": {},
                "composition": {"environment": ["A=1", "B=x=y"], "labels": ["io.balena.a=b"]},
            }
        }
    )

    spec = only_service(document)

    assert (spec.environment, spec.labels) == ({"A": "1", "B": "x=y"}, {"io.balena.a": "b"})


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(
            {"depends_on": ["db", "cache", "db"]}, ("cache", "db"), id="list sorted and deduplicated"
        ),
        pytest.param(
            {"depends_on": {"db": {"condition": "service_started"}}}, ("db",), id="compose map form"
        ),
        pytest.param(
            {"network_mode": "service:cache"}, ("cache",), id="service network mode adds a dependency"
        ),
        pytest.param(
            {"depends_on": ["db"], "network_mode": "service:db"},
            ("db",),
            id="service network mode merged with list",
        ),
    ],
)
def test_depends_on(fields: dict[str, Any], expected: tuple[str, ...]) -> None:
    document = local_document(service("web", **fields), service("db", imageId=2), service("cache", imageId=3))

    web = only_app(document).service("web")

    assert web is not None
    assert web.depends_on == expected
    assert "depends_on" not in web.composition
    assert web.composition.get("network_mode") == fields.get("network_mode")


# --- invalid documents ------------------------------------------------------------------

S = "local.apps.1.services.1"  # path of the first service of local_document()
V3 = f"{DEVICE_UUID}.apps.appuuid1.releases.c0ffee"


def with_local(**local_fields: Any) -> dict[str, Any]:
    document = local_document()
    document["local"].update(local_fields)
    return document


def with_app(**app_fields: Any) -> dict[str, Any]:
    document = cloud_document()
    document[DEVICE_UUID]["apps"]["appuuid1"].update(app_fields)
    return document


def cloud_service(**fields: Any) -> dict[str, Any]:
    return cloud_document(
        {"main": {"id": 1, "image_id": 1, "image": "img", "environment": {}, "labels": {}, **fields}}
    )


INVALID_DOCUMENTS = [
    pytest.param(
        local_document(service("one"), service("two", environment={"1FOO": "x"})),
        "local.apps.1.services.2.environment.1FOO",
        "invalid variable name",
        id="environment name starting with a digit",
    ),
    pytest.param(
        local_document(service(environment={"FOO": 1})),
        f"{S}.environment.FOO",
        "string",
        id="environment value not a string",
    ),
    pytest.param(
        local_document(service(environment=["A=1"])),
        f"{S}.environment",
        "object",
        id="top-level environment as a list",
    ),
    pytest.param(
        local_document(service(labels={"has space": "x"})),
        f"{S}.labels.has space",
        "invalid label name",
        id="label name with a space",
    ),
    pytest.param(
        local_document(service(labels={'q"uote': "x"})),
        f'{S}.labels.q"uote',
        "invalid label name",
        id="label name with a quote",
    ),
    pytest.param(
        local_document(service(labels={"a": True})), f"{S}.labels.a", "string", id="label value not a string"
    ),
    pytest.param(
        with_local(config={"9LIVES": "1"}), "local.config.9LIVES", "invalid variable name", id="config name"
    ),
    pytest.param(with_local(config={"A": 1}), "local.config.A", "string", id="config value not a string"),
    pytest.param(with_local(config=["A"]), "local.config", "object", id="config as a list"),
    pytest.param(with_local(apps=[]), "local.apps", "object", id="apps as a list"),
    pytest.param(with_local(apps={"-1": {"name": "x"}}), "local.apps.-1", "id", id="negative app id"),
    pytest.param(with_local(apps={"one": {"name": "x"}}), "local.apps.one", "id", id="non-numeric app id"),
    pytest.param(with_local(apps={"1": []}), "local.apps.1", "object", id="app as a list"),
    pytest.param(with_local(name="two\nlines"), "local.name", "newline", id="device name with newline"),
    pytest.param(with_local(name="x" * 256), "local.name", "255", id="device name too long"),
    pytest.param(local_document(name=None), "local.apps.1.name", "required", id="app without a name"),
    pytest.param(local_document(releaseId="r1"), "local.apps.1.releaseId", "id", id="release id not numeric"),
    pytest.param(
        local_document(releaseId=None), "local.apps.1.releaseId", "required", id="commit without release id"
    ),
    pytest.param(
        local_document(commit="has space"), "local.apps.1.commit", "invalid commit", id="commit with a space"
    ),
    pytest.param(local_document(services=[]), "local.apps.1.services", "object", id="services as a list"),
    pytest.param(local_document(services={"1": "main"}), f"{S}", "object", id="service as a string"),
    pytest.param(
        local_document(services={"x": service()}), "local.apps.1.services.x", "id", id="service key not an id"
    ),
    pytest.param(local_document(service(imageId=True)), f"{S}.imageId", "id", id="boolean image id"),
    pytest.param(local_document(service(imageId=1.0)), f"{S}.imageId", "id", id="float image id"),
    pytest.param(local_document(service(imageId=2**53 + 1)), f"{S}.imageId", "id", id="huge image id"),
    pytest.param(
        local_document(service(imageId="9" * 5000)), f"{S}.imageId", "id", id="huge numeric string id"
    ),
    pytest.param(local_document(service(imageId=-3)), f"{S}.imageId", "id", id="negative image id"),
    pytest.param(local_document(service(image=None)), f"{S}.image", "required", id="missing image"),
    pytest.param(local_document(service(image="i" * 256)), f"{S}.image", "255", id="image too long"),
    pytest.param(
        local_document(service(environment=None)), f"{S}.environment", "required", id="missing environment"
    ),
    pytest.param(local_document(service(labels=None)), f"{S}.labels", "required", id="missing labels"),
    pytest.param(
        local_document(service("-web")), f"{S}.serviceName", "invalid service name", id="service name"
    ),
    pytest.param(
        local_document(service(serviceName=None)), f"{S}.serviceName", "required", id="missing service name"
    ),
    pytest.param(
        local_document(service("web"), service("web", imageId=2)),
        "local.apps.1.services.2.serviceName",
        "duplicate",
        id="two service ids with one name",
    ),
    pytest.param(
        local_document(service(running="yes")), f"{S}.running", "boolean", id="running not a boolean"
    ),
    pytest.param(
        local_document(service(privileged="yes")), f"{S}.privileged", "boolean", id="privileged not a boolean"
    ),
    pytest.param(
        local_document(service(depends_on="db")), f"{S}.depends_on", "list", id="depends_on as a string"
    ),
    pytest.param(
        local_document(service("a", depends_on=["b"]), service("b", imageId=2, depends_on=["a"])),
        f"{S}.depends_on",
        "cycle",
        id="dependency cycle",
    ),
    pytest.param(
        local_document(service("a", depends_on=["a"])), f"{S}.depends_on", "cycle", id="self dependency"
    ),
    pytest.param(
        local_document(service("a", network_mode="service:b"), service("b", imageId=2, depends_on=["a"])),
        f"{S}.network_mode",
        "cycle",
        id="cycle through network mode",
    ),
    pytest.param(
        local_document(service(network_mode="service:db")),
        f"{S}.network_mode",
        "unknown service",
        id="network mode service",
    ),
    pytest.param(
        local_document(service(network_mode="lan")),
        f"{S}.network_mode",
        "unknown network",
        id="network mode network",
    ),
    pytest.param(
        local_document(service(networks=["lan"])),
        f"{S}.networks.0",
        "unknown network",
        id="undeclared network",
    ),
    pytest.param(
        local_document(service(networks={"lan": None})),
        f"{S}.networks.lan",
        "unknown network",
        id="undeclared network map",
    ),
    pytest.param(
        local_document(service(volumes=["data:/data"])),
        f"{S}.volumes.0",
        "unknown volume",
        id="undeclared volume",
    ),
    pytest.param(
        local_document(service(volumes=["data"])), f"{S}.volumes.0", "target", id="volume without target"
    ),
    pytest.param(
        local_document(service(volumes="data:/data")), f"{S}.volumes", "list", id="volumes as a string"
    ),
    pytest.param(
        local_document(service(stop_grace_period="soon")), f"{S}.stop_grace_period", "duration", id="duration"
    ),
    pytest.param(
        local_document(service(command=["echo", 1])),
        f"{S}.command.1",
        "string",
        id="non-string command argument",
    ),
    pytest.param(
        local_document(service(ports=["70000:80"])), f"{S}.ports.0", "1-65535", id="port out of range"
    ),
    pytest.param(local_document(service(ports=[0])), f"{S}.ports.0", "1-65535", id="port zero"),
    pytest.param(
        local_document(service(ports=["8000-8001:9000-9002"])),
        f"{S}.ports.0",
        "differ",
        id="range lengths differ",
    ),
    pytest.param(local_document(service(ports=["80/sctp"])), f"{S}.ports.0", "protocol", id="port protocol"),
    pytest.param(
        local_document(service(ports=["a:b:c:d"])), f"{S}.ports.0", "invalid port", id="port syntax"
    ),
    pytest.param(
        local_document(service(ports=[{"published": 80}])),
        f"{S}.ports.0.target",
        "required",
        id="long port without target",
    ),
    pytest.param(
        local_document(service(healthcheck={"retries": -1})),
        f"{S}.healthcheck.retries",
        "at least",
        id="negative retries",
    ),
    pytest.param(
        local_document(service(healthcheck="curl")),
        f"{S}.healthcheck",
        "object",
        id="healthcheck as a string",
    ),
    pytest.param(
        local_document(service(sysctls=["novalue"])), f"{S}.sysctls.0", "sysctl", id="sysctl without value"
    ),
    pytest.param(
        local_document(service(extra_hosts=["nohost"])), f"{S}.extra_hosts.0", "extra host", id="extra host"
    ),
    pytest.param(
        local_document(volumes={"bad name": {}}),
        "local.apps.1.volumes.bad name",
        "invalid volume name",
        id="volume name",
    ),
    pytest.param(
        local_document(networks={"_lan": {}}),
        "local.apps.1.networks._lan",
        "invalid network name",
        id="network name",
    ),
    pytest.param(
        local_document(networks={"lan": {"ipam": []}}),
        "local.apps.1.networks.lan.ipam",
        "object",
        id="ipam as a list",
    ),
    pytest.param(
        local_document(volumes={"data": {"driver_opts": {"size": 1}}}),
        "local.apps.1.volumes.data.driver_opts.size",
        "string",
        id="volume driver option not a string",
    ),
    pytest.param(
        local_document(volumes={"root": {"driver_opts": {"type": "none", "o": "bind", "device": "/"}}}),
        "local.apps.1.volumes.root.driver_opts",
        "bind mounts are rejected",
        id="volume that binds a host directory",
    ),
    pytest.param(
        local_document(volumes={"root": {"driver_opts": {"type": "ext4", "o": "ro,rbind", "device": "/"}}}),
        "local.apps.1.volumes.root.driver_opts",
        "bind mounts are rejected",
        id="volume that rbinds a host directory",
    ),
    pytest.param(
        local_document(volumes={"v" * 254: {}}),
        "local.apps.1.volumes." + "v" * 254,
        "name too long",
        id="volume whose engine name would pass 255 characters",
    ),
    pytest.param({**local_document(), "force": "yes"}, "force", "boolean", id="force not a boolean"),
    pytest.param(cloud_service(id=None), f"{V3}.services.main.id", "required", id="v3 service without id"),
    pytest.param(cloud_service(image_id="x"), f"{V3}.services.main.image_id", "id", id="v3 image id"),
    pytest.param(
        cloud_service(composition=[]),
        f"{V3}.services.main.composition",
        "object",
        id="v3 composition as a list",
    ),
    pytest.param(
        cloud_service(composition={"environment": ["1FOO=x"]}),
        f"{V3}.services.main.composition.environment.0",
        "invalid variable name",
        id="v3 composition environment in list form",
    ),
    pytest.param(
        cloud_document({"_main": {"id": 1}}),
        f"{V3}.services._main",
        "invalid service name",
        id="v3 service name",
    ),
    pytest.param(cloud_document(id=None), f"{V3}.id", "required", id="v3 release without id"),
    pytest.param(
        with_app(**{"class": "bogus"}), f"{DEVICE_UUID}.apps.appuuid1.class", "class", id="v3 app class"
    ),
    pytest.param(with_app(id="three"), f"{DEVICE_UUID}.apps.appuuid1.id", "id", id="v3 app id"),
    pytest.param(
        with_app(releases=[]), f"{DEVICE_UUID}.apps.appuuid1.releases", "object", id="v3 releases as a list"
    ),
    pytest.param(with_app(is_host="no"), f"{DEVICE_UUID}.apps.appuuid1.is_host", "boolean", id="v3 is_host"),
    pytest.param({DEVICE_UUID: []}, DEVICE_UUID, "object", id="v3 device as a list"),
    pytest.param(
        {DEVICE_UUID: {"apps": {"x y": {}}}}, f"{DEVICE_UUID}.apps.x y", "invalid app uuid", id="v3 app uuid"
    ),
]


@pytest.mark.parametrize(("document", "path", "word"), INVALID_DOCUMENTS)
def test_invalid_document_is_rejected_naming_the_path(document: dict[str, Any], path: str, word: str) -> None:
    """The whole document is refused, or, for a cloud release that cannot be read, that
    release: its app is rejected without services, the message naming the same path."""
    if path.startswith(f"{V3}.services"):
        [app] = parse_cloud_target(document, device_uuid=DEVICE_UUID).apps
        assert (app.invalid, app.services, app.commit) == (True, (), "c0ffee")
        assert app.rejected.startswith(f"{path}: ")
        assert word in app.rejected
    with pytest.raises(InvalidTargetState) as raised:
        parse_target(document, device_uuid=DEVICE_UUID)
    assert raised.value.path == path
    assert word in raised.value.problem
    assert str(raised.value) == f"{path}: {raised.value.problem}"


def test_duplicate_app_ids_are_rejected() -> None:
    document = cloud_document()
    apps = document[DEVICE_UUID]["apps"]
    apps["appuuid2"] = copy.deepcopy(apps["appuuid1"])

    with pytest.raises(InvalidTargetState, match="duplicate app id 3") as raised:
        parse_cloud_target(document, device_uuid=DEVICE_UUID)

    assert raised.value.path == f"{DEVICE_UUID}.apps.appuuid2"


def test_cloud_document_for_another_device_is_rejected_with_the_documented_message() -> None:
    with pytest.raises(InvalidTargetState) as raised:
        parse_cloud_target(cloud_document(), device_uuid="someone-else")

    assert str(raised.value) == "Expected target state for local device with uuid 'someone-else'."


@pytest.mark.parametrize("document", [[], "text", None, 3])
def test_a_document_that_is_not_an_object_is_rejected(document: object) -> None:
    with pytest.raises(InvalidTargetState, match="expected an object"):
        parse_target(document, device_uuid=DEVICE_UUID)


def test_local_document_without_local_key_is_rejected() -> None:
    with pytest.raises(InvalidTargetState) as raised:
        parse_local_target({"apps": {}})

    assert (raised.value.path, raised.value.problem) == ("local", "is required")


def test_first_problem_in_document_order_is_reported() -> None:
    document = local_document(service(imageId="x", image=None))

    with pytest.raises(InvalidTargetState) as raised:
        parse_local_target(document)

    assert raised.value.path == f"{S}.imageId"


def test_health_gate_labels_that_are_not_numbers_are_rejected_naming_the_label() -> None:
    document = local_document(service(labels={"io.balena.update.health-window": "2m"}))

    with pytest.raises(InvalidTargetState) as raised:
        parse_target(document, device_uuid=DEVICE_UUID)

    assert raised.value.path == "local.apps.1.services.1.labels.io.balena.update.health-window"
    assert raised.value.problem == "must be a whole number of seconds from 0 to 86400"


def test_health_gate_labels_of_a_cloud_composition_are_checked_where_they_are_written() -> None:
    labels = {"io.balena.update.health-restarts": "many"}
    document = cloud_document(
        {"main": {"id": 7, "image_id": 70, "image": "main", "environment": {}, "labels": {},
                  "composition": {"labels": labels}}}
    )  # fmt: skip

    [app] = parse_cloud_target(document, device_uuid=DEVICE_UUID).apps

    assert app.invalid
    assert "services.main.composition.labels.io.balena.update.health-restarts: " in app.rejected


def test_an_unreadable_memory_size_is_a_warning_naming_where_it_is(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="apps_api.target.compose"):
        assert composition_of(mem_limit="lots")["mem_limit"] == 0
    assert "Ignoring invalid memory size 'lots' at " in caplog.text
    assert ".mem_limit: the default is used" in caplog.text
