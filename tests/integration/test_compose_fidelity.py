"""Compose fields applied as balena applies them, on the real engine by the real worker."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest
from django.conf import settings

from supervisor_site.system_services import wait_until
from tests.host_bus import HostBus
from tests.integration.engine_helpers import apply, local_target, supervised_containers

pytestmark = pytest.mark.django_db(transaction=True)

SUBNET = "172.31.250.0/24"
BREADCRUMB = Path(settings.SUPERVISOR_HOST_ROOT) / "tmp" / "balena-supervisor" / "reboot-after-apply"


def test_fixed_addresses_and_config_only_networks_reach_the_engine(engine: str) -> None:
    networks = {
        "front": {"ipam": {"config": [{"subnet": SUBNET, "gateway": "172.31.250.1"}]}},
        "template": {"config_only": True, "ipam": {"config": [{"subnet": "172.31.251.0/24"}]}},
    }
    service = {"networks": {"front": {"ipv4_address": "172.31.250.10", "aliases": ["web"]}}}

    apply(local_target({"main": service}, image=engine, networks=networks))

    attached = supervised_containers()["main"].attrs["NetworkSettings"]["Networks"]["1_front"]
    assert attached["IPAMConfig"]["IPv4Address"] == "172.31.250.10"
    assert attached["IPAddress"] == "172.31.250.10"
    template = docker.DockerClient(base_url=settings.DOCKER_HOST).networks.get("1_template").attrs
    assert template["ConfigOnly"] is True
    # Applying again changes nothing: the address is part of the container's configuration.
    container_id = supervised_containers()["main"].id
    apply(local_target({"main": service}, image=engine, networks=networks))
    assert supervised_containers()["main"].id == container_id


def test_a_service_that_requires_a_reboot_is_installed_then_the_device_reboots_then_it_starts(
    engine: str, host_bus: HostBus
) -> None:
    BREADCRUMB.unlink(missing_ok=True)
    services = {"main": {}, "driver": {"labels": {"io.balena.update.requires-reboot": "true"}}}

    apply(local_target(services, image=engine))

    assert wait_until(lambda: "Reboot" in host_bus.services.members(), 30), host_bus.services.members()
    driver = supervised_containers()["driver"]
    assert driver.status == "created"  # installed, never started before the reboot
    assert driver.attrs["State"]["StartedAt"].startswith("0001-01-01")
    # The logind stand-in only records the call; the breadcrumb going with it is what a
    # real reboot does too. The worker's next apply, as at boot, starts the service.
    assert not BREADCRUMB.exists()
    apply(local_target(services, image=engine))
    assert supervised_containers()["driver"].status == "running"
    assert host_bus.services.members().count("Reboot") == 1


def made_by_the_original_supervisor(image: str, name: str, service_id: int, env: dict[str, str]) -> str:
    """A container as the original supervisor leaves it: balena labels and names, its own
    variables, but no configuration hash of ours."""
    client = docker.DockerClient(base_url=settings.DOCKER_HOST)
    labels = {"io.balena.supervised": "true", "io.balena.app-id": "1", "io.balena.app-uuid": "1",
              "io.balena.service-id": str(service_id), "io.balena.service-name": name}  # fmt: skip
    container = client.containers.run(
        image, ["sleep", "100000"], name=f"{name}_{service_id}_1_c1", labels=labels, detach=True,
        environment={**env, "BALENA_SUPERVISOR_API_KEY": "theirs", "BALENA_APP_ID": "1", "RESIN": "1"},
        restart_policy={"Name": "always"}, network="1_default", tty=True,
    )  # fmt: skip
    return str(container.id)


def test_containers_and_network_taken_over_from_the_original_supervisor_are_kept_when_they_match(
    engine: str,
) -> None:
    client = docker.DockerClient(base_url=settings.DOCKER_HOST)
    network = client.networks.create(
        "1_default", labels={"io.balena.supervised": "true", "io.balena.app-id": "1"}
    )
    same = made_by_the_original_supervisor(engine, "main", 1, {"MODE": "prod"})
    changed = made_by_the_original_supervisor(engine, "worker", 2, {"MODE": "dev"})
    prod = {"environment": {"MODE": "prod"}}
    target = local_target({"main": prod, "worker": prod}, image=engine)

    apply(target)

    containers = supervised_containers()
    assert containers["main"].id == same  # adopted: not recreated
    assert containers["worker"].id != changed  # its environment differs: replaced as any update
    assert "MODE=prod" in containers["worker"].attrs["Config"]["Env"]
    assert client.networks.get("1_default").id == network.id
    assert {c.status for c in containers.values()} == {"running"}
