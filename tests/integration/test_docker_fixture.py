"""The session's Docker engine runs the locally imported busybox test image."""

from __future__ import annotations

import docker


def test_busybox_image_runs_a_container(busybox_image: str) -> None:
    client = docker.from_env()
    output = client.containers.run(
        busybox_image, ["echo", "hello"], remove=True, labels={"io.balena.test": "1"}
    )
    assert output == b"hello\n"
