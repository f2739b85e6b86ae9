"""The state engine against the real Docker engine, a real worker and real Redis."""

from __future__ import annotations

import subprocess

import docker
import pytest

from apps_api import apply_status
from apps_api.apply.single_flight import apply_in_progress
from apps_api.models import StepRecord
from hostcfg.identity import load_device_identity
from supervisor_site.system_services import wait_until
from tests.agent_process import Agent
from tests.integration.conftest import lock_dir
from tests.integration.engine_helpers import (
    apply,
    local_target,
    set_target,
    supervised_container_names,
    supervised_containers,
    wait_applied,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_one_service_app_converges(engine: str) -> None:
    apply(local_target({"main": {"environment": {"GREETING": "hi"}}}, image=engine))

    main = supervised_containers()["main"]
    assert main.name == "main_1_1_c1"
    assert main.status == "running"
    assert main.labels["io.balena.app-id"] == "1"
    assert main.labels["io.balena.service-id"] == "1"
    env = dict(line.split("=", 1) for line in main.attrs["Config"]["Env"])
    assert env["GREETING"] == "hi"
    assert env["BALENA_APP_ID"] == env["RESIN_APP_ID"] == "1"
    assert env["BALENA_SERVICE_NAME"] == "main"
    assert env["BALENA_DEVICE_UUID"] == load_device_identity().uuid
    assert env["BALENA_APP_LOCK_PATH"] == "/tmp/balena/updates.lock"
    mounts = {m["Destination"]: m for m in main.attrs["Mounts"]}
    assert mounts["/tmp/balena"]["Source"] == str(lock_dir("main"))
    assert mounts["/tmp/resin"]["Source"] == str(lock_dir("main"))
    network = main.attrs["NetworkSettings"]["Networks"]["1_default"]
    assert "main" in network["Aliases"]
    assert main.attrs["HostConfig"]["RestartPolicy"]["Name"] == "always"


def test_three_service_app_converges_with_its_volume_and_dependencies(engine: str) -> None:
    apply(
        local_target(
            {
                "db": {"volumes": ["data:/data"]},
                "api": {"depends_on": ["db"]},
                "web": {"depends_on": ["api"], "restart": "unless-stopped"},
            },
            image=engine,
            volumes={"data": {}},
        )
    )

    containers = supervised_containers()
    assert sorted(containers) == ["api", "db", "web"]
    assert all(c.status == "running" for c in containers.values())
    started = {name: c.attrs["State"]["StartedAt"] for name, c in containers.items()}
    assert started["db"] <= started["api"] <= started["web"]
    assert docker.from_env().volumes.get("1_data").attrs["Labels"]["io.balena.supervised"] == "true"
    assert containers["web"].attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"


def test_environment_change_recreates_exactly_the_changed_service(engine: str) -> None:
    apply(local_target({"a": {}, "b": {}, "c": {}}, image=engine))
    before = {name: c.id for name, c in supervised_containers().items()}

    apply(local_target({"a": {}, "b": {"environment": {"NEW": "1"}}, "c": {}}, image=engine))

    after = {name: c.id for name, c in supervised_containers().items()}
    assert after["a"] == before["a"]
    assert after["c"] == before["c"]
    assert after["b"] != before["b"]
    assert "NEW=1" in supervised_containers()["b"].attrs["Config"]["Env"]


def test_release_only_change_renames_without_restarting(engine: str) -> None:
    apply(local_target({"main": {}}, image=engine, commit="c1", release=1))
    before = supervised_containers()["main"]

    apply(local_target({"main": {}}, image=engine, commit="c2", release=2))

    after = supervised_containers()["main"]
    assert after.id == before.id
    assert after.name == "main_1_2_c2"
    assert after.attrs["State"]["StartedAt"] == before.attrs["State"]["StartedAt"]


def test_container_removed_behind_our_back_is_recreated_on_the_next_apply(engine: str) -> None:
    document = local_target({"main": {}, "side": {}}, image=engine)
    apply(document)
    supervised_containers()["main"].remove(force=True)

    apply(document)

    assert sorted(supervised_containers()) == ["main", "side"]
    assert supervised_containers()["main"].status == "running"


def test_image_pushed_again_under_the_same_name_recreates_the_container(engine: str) -> None:
    client = docker.from_env()
    client.images.get(engine).tag("local/pushed", "latest")
    document = local_target({"main": {"image": "local/pushed:latest"}}, image=engine)
    apply(document)
    before = supervised_containers()["main"]

    rebuilt = client.containers.run(engine, ["sh", "-c", "echo rebuilt > /rebuilt"], detach=True)
    rebuilt.wait()
    rebuilt.commit("local/pushed", "latest")
    rebuilt.remove()
    apply(document)

    after = supervised_containers()["main"]
    assert after.id != before.id
    assert after.image.id == client.images.get("local/pushed:latest").id
    client.images.remove("local/pushed:latest", force=True)


def test_user_lock_blocks_the_kill_until_it_is_removed(engine: str) -> None:
    apply(local_target({"main": {}}, image=engine))
    before = supervised_containers()["main"].id
    user_lock = lock_dir("main") / "updates.lock"
    user_lock.write_text("held by the app")

    set_target(local_target({"main": {"environment": {"V": "2"}}}, image=engine))
    assert wait_until(lambda: apply_status.read_flags()["update_failed"], 20), (
        "the locked update never failed"
    )
    assert supervised_containers()["main"].id == before
    assert StepRecord.objects.filter(kind="takeLock", succeeded=False).exists()
    assert user_lock.read_text() == "held by the app"

    user_lock.unlink()
    wait_applied(60)
    assert supervised_containers()["main"].id != before
    assert not list(lock_dir("main").glob("*updates.lock"))


def test_force_overrides_a_user_lock_and_leaves_the_lock_dir_clean(engine: str) -> None:
    apply(local_target({"main": {}}, image=engine))
    before = supervised_containers()["main"].id
    (lock_dir("main") / "updates.lock").write_text("held by the app")
    (lock_dir("main") / "resin-updates.lock").mkdir()

    apply(local_target({"main": {"environment": {"V": "2"}}}, image=engine), force=True)

    assert supervised_containers()["main"].id != before
    assert sorted(p.name for p in lock_dir("main").iterdir()) == []


def test_app_removed_from_target_loses_containers_and_networks_but_keeps_volumes(engine: str) -> None:
    apply(local_target({"main": {"volumes": ["data:/data"]}}, image=engine, volumes={"data": {}}))
    supervised_containers()["main"].exec_run(["sh", "-c", "echo kept > /data/file"])

    apply({"local": {"name": "test-device", "config": {}, "apps": {}}})

    client = docker.from_env()
    assert supervised_containers() == {}
    assert client.networks.list(names=["1_default"]) == []
    check = client.containers.run(
        engine, ["cat", "/data/file"], volumes={"1_data": {"bind": "/data"}}, remove=True
    )
    assert check == b"kept\n"


def test_killed_worker_mid_apply_converges_after_restart_without_duplicates(
    engine: str, shipped_agent: Agent
) -> None:
    names = [f"s{n}" for n in range(8)]
    apply(local_target({"s0": {"volumes": ["data:/data"]}}, image=engine, volumes={"data": {}}))
    supervised_containers()["s0"].exec_run(["sh", "-c", "echo survived > /data/file"])

    services = {name: {"environment": {"RUN": "2"}} for name in names}
    services["s0"]["volumes"] = ["data:/data"]
    document = local_target(services, image=engine, volumes={"data": {}}, commit="c2", release=2)
    set_target(document)
    assert wait_until(lambda: len(supervised_container_names()) >= 3, 30, interval=0.01)
    assert apply_in_progress(), "the apply ended before the kill: nothing was interrupted"
    shipped_agent.kill_agent()
    wait_applied(90)

    containers = docker.from_env().containers.list(all=True, filters={"label": "io.balena.supervised"})
    assert sorted(c.labels["io.balena.service-name"] for c in containers) == names
    assert all(c.status == "running" for c in containers)
    assert all("RUN=2" in c.attrs["Config"]["Env"] for c in containers)
    networks = docker.from_env().networks.list(filters={"label": "io.balena.supervised"})
    assert [n.name for n in networks if n.name != "supervisor0"] == ["1_default"]
    output = subprocess.run(
        ["docker", "exec", supervised_containers()["s0"].id, "cat", "/data/file"],
        capture_output=True,
        text=True,
    )
    assert output.stdout == "survived\n"


def test_hand_over_runs_both_until_the_new_one_says_it_took_over(engine: str) -> None:
    labels = {"io.balena.update.strategy": "hand-over", "io.balena.update.handover-timeout": "30000"}
    command = "sh -c 'sleep 1; touch /tmp/balena/handover-complete; sleep 100000'"
    apply(local_target({"main": {"labels": labels, "command": command}}, image=engine))
    old = supervised_containers()["main"]

    set_target(
        local_target(
            {"main": {"labels": labels, "command": command, "environment": {"V": "2"}}}, image=engine
        )
    )
    # The old one is renamed first, then the new one created beside it.
    both = {"old_main_1_1_c1", "main_1_1_c1"}
    assert wait_until(lambda: both <= set(supervised_container_names()), 20, interval=0.02), (
        "the new container never ran beside the old one"
    )
    wait_applied(60)

    assert supervised_container_names() == ["main_1_1_c1"]
    new = supervised_containers()["main"]
    assert new.id != old.id
    assert "V=2" in new.attrs["Config"]["Env"]


def test_ports_and_healthcheck_reach_the_container(engine: str) -> None:
    from tests.integration.conftest import free_port

    port = free_port()
    service = {
        "ports": [f"127.0.0.1:{port}:80", "9000-9001:9000-9001/udp"],
        "healthcheck": {"test": "true", "interval": "2s", "retries": 2},
        "stop_grace_period": "3s",
        "privileged": False,
        "cap_add": ["NET_ADMIN"],
    }
    apply(local_target({"main": service}, image=engine))

    attrs = supervised_containers()["main"].attrs
    bindings = attrs["HostConfig"]["PortBindings"]
    assert bindings["80/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
    assert bindings["9001/udp"] == [{"HostIp": "", "HostPort": "9001"}]
    assert attrs["Config"]["Healthcheck"]["Test"] == ["CMD-SHELL", "true"]
    assert attrs["Config"]["Healthcheck"]["Interval"] == 2_000_000_000
    assert attrs["Config"]["StopTimeout"] == 3
    assert attrs["HostConfig"]["CapAdd"] == ["NET_ADMIN"]


def test_supervisor_api_service_gets_a_scoped_key_and_the_supervisor0_network(engine: str) -> None:
    from apps_api.models import ApiKey

    labels = {"io.balena.features.supervisor-api": "1"}
    apply(local_target({"main": {"labels": labels}, "plain": {}}, image=engine))

    containers = supervised_containers()
    env = dict(line.split("=", 1) for line in containers["main"].attrs["Config"]["Env"])
    key = ApiKey.objects.get(app_id=1, service_name="main")
    assert env["BALENA_SUPERVISOR_API_KEY"] == env["RESIN_SUPERVISOR_API_KEY"] == key.key
    assert key.scopes == [{"type": "app", "appId": 1}]
    assert env["BALENA_SUPERVISOR_ADDRESS"] == "http://10.114.104.1:48484"
    assert "supervisor0" in containers["main"].attrs["NetworkSettings"]["Networks"]
    plain_env = containers["plain"].attrs["Config"]["Env"]
    assert not any(line.startswith("BALENA_SUPERVISOR_") for line in plain_env)
    assert "supervisor0" not in containers["plain"].attrs["NetworkSettings"]["Networks"]

    apply(local_target({"main": {"labels": labels}, "plain": {}}, image=engine))
    assert supervised_containers()["main"].id == containers["main"].id, "the same key: no recreation"


def test_a_network_with_an_endpoint_left_on_it_is_disconnected_by_force_and_removed(engine: str) -> None:
    """The engine refuses to remove a network that "has active endpoints" (issue 26 saw it
    after processes holding dockerd were killed); the apply's removal disconnects what the
    engine lists, by force, then removes it, instead of failing at every round."""
    from apps_api.engine import docker as engine_calls

    client = docker.from_env()
    network = client.networks.create(
        "9_leftover", labels={"io.balena.supervised": "true", "io.balena.app-id": "9"}
    )
    holder = client.containers.run(engine, ["sleep", "100000"], detach=True, network="9_leftover")
    try:
        engine_calls.remove_network("9_leftover")
        assert "9_leftover" not in {n.name for n in client.networks.list()}
        holder.reload()
        assert holder.status == "running", "only its endpoint on that network went"
    finally:
        holder.remove(force=True)
        if "9_leftover" in {n.name for n in client.networks.list()}:
            network.remove()
