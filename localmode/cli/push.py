"""`manage.py localmode push <dir>`: what `balena push <device>` does in local mode, for
people without the balena CLI. It builds the project's images on the local engine, posts
the local target state to the supervisor API, then follows the apply until it ends.

The target document is the one the CLI sends, as docs/local-mode.md "What the balena CLI sends"
says: app 1 `localapp`, a constant commit and release, services numbered in compose order,
each with its compose keys as written minus `build`/`image`; a built service runs
`local_image_<service>:latest`.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from apps_api.engine.docker import ImageBuildFailed, build_image

COMPOSE_FILES = ("docker-compose.yml", "docker-compose.yaml", "compose.yml", "compose.yaml")
APP_ID = "1"
APP_NAME = "localapp"
LOCAL_COMMIT = "localcommit"
POLL_SECONDS = 1.0


class TextOut(Protocol):
    """Where progress goes: a text stream (only `write` and `flush` are used)."""

    def write(self, text: str, /) -> Any: ...

    def flush(self) -> Any: ...


class PushFailed(Exception):
    """The push stopped: a bad project, a failed build, the supervisor refused or failed."""


@dataclass(frozen=True)
class Build:
    context: Path
    dockerfile: str | None
    args: dict[str, str]


@dataclass(frozen=True)
class ProjectService:
    name: str
    fields: dict[str, Any]
    """The compose keys as written, without `build` and `image`."""
    image: str
    build: Build | None


@dataclass(frozen=True)
class Project:
    services: list[ProjectService]
    volumes: dict[str, Any]
    networks: dict[str, Any]


def read_project(directory: Path) -> Project:
    """The services of `directory`'s compose file, or one service `main` built from its
    Dockerfile. Raises PushFailed."""
    import yaml  # lazy: only a push reads compose files

    compose = next((directory / name for name in COMPOSE_FILES if (directory / name).is_file()), None)
    if compose is None:
        if (directory / "Dockerfile").is_file():
            return Project([_service("main", {"build": "."}, directory)], {}, {})
        raise PushFailed(f"{directory}: no {COMPOSE_FILES[0]} and no Dockerfile")
    try:
        document = yaml.safe_load(compose.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PushFailed(f"{compose}: {exc}") from exc
    services = document.get("services") if isinstance(document, dict) else None
    if not isinstance(services, dict) or not services:
        raise PushFailed(f"{compose}: no services")
    project_services = []
    for name, fields in services.items():
        if not isinstance(fields, dict):
            raise PushFailed(f"{compose}: services.{name} is not a mapping")
        project_services.append(_service(str(name), fields, directory))
    return Project(project_services, document.get("volumes") or {}, document.get("networks") or {})


def _service(name: str, fields: dict[str, Any], directory: Path) -> ProjectService:
    build = fields.get("build")
    if build is None:
        if not isinstance(fields.get("image"), str):
            raise PushFailed(f"services.{name}: neither build nor image")
        return ProjectService(name, _without_build(fields), fields["image"], None)
    if isinstance(build, str):
        build = {"context": build}
    if not isinstance(build, dict):
        raise PushFailed(f"services.{name}.build: a path or a mapping")
    context = (directory / str(build.get("context", "."))).resolve()
    if not context.is_dir():
        raise PushFailed(f"services.{name}.build: {context} is not a directory")
    args = build.get("args") or {}
    if isinstance(args, list):
        args = dict(str(item).partition("=")[::2] for item in args)
    return ProjectService(
        name,
        _without_build(fields),
        f"local_image_{name}:latest",
        Build(context, build.get("dockerfile"), {str(k): str(v) for k, v in args.items()}),
    )


def _without_build(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if key not in ("build", "image")}


def target_document(project: Project, *, name: str, config: dict[str, str]) -> dict[str, Any]:
    """The v2 local target for `project`, with the device's name and config echoed."""
    services = {
        str(number): {
            "environment": {},
            "labels": {},
            **service.fields,
            "imageId": number,
            "serviceName": service.name,
            "serviceId": number,
            "image": service.image,
            "running": True,
        }
        for number, service in enumerate(project.services, start=1)
    }
    app = {"name": APP_NAME, "commit": LOCAL_COMMIT, "releaseId": "1", "services": services,
           "volumes": project.volumes, "networks": project.networks}  # fmt: skip
    return {"local": {"name": name, "config": config, "apps": {APP_ID: app}}}


class SupervisorClient:
    """The few calls push and logs make to the supervisor API, over plain HTTP."""

    def __init__(self, base_url: str, api_key: str = "") -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key

    def request(self, method: str, path: str, body: object = None, *, timeout: float = 30) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method)  # noqa: S310
        request.add_header("Content-Type", "application/json")
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (our own API)
                text = response.read().decode()
        except urllib.error.HTTPError as exc:
            raise PushFailed(
                f"{method} {path}: {exc.code} {_message(exc.read().decode(errors='replace'))}"
            ) from exc
        except OSError as exc:
            raise PushFailed(f"the supervisor at {self.base_url} does not answer: {exc}") from exc
        try:
            return json.loads(text)
        except ValueError:
            return text


def _message(text: str) -> str:
    try:
        return str(json.loads(text).get("message", text))
    except (ValueError, AttributeError):
        return text


def push(
    directory: Path, client: SupervisorClient, *, out: TextOut = sys.stdout, timeout: float = 900
) -> None:
    """Build, post the target, follow the apply until the device runs it. Raises PushFailed."""

    project = read_project(directory)
    client.request("GET", "/ping")
    state = client.request("GET", "/v2/local/target-state")["state"]["local"]
    labels = {"io.resin.local.image": "1"}
    for service in project.services:
        if service.build is None:
            continue
        bar = ProgressBar(f"build {service.name}", out)
        try:
            for line in build_image(
                service.build.context, tag=service.image, dockerfile=service.build.dockerfile,
                labels={**labels, "io.resin.local.service": service.name}, build_args=service.build.args,
            ):  # fmt: skip
                bar.step_line(line)
        except ImageBuildFailed as exc:
            bar.fail()
            raise PushFailed(f"building {service.name}: {exc}") from exc
        bar.done()
    document = target_document(project, name=state.get("name") or "", config=state.get("config") or {})
    client.request("POST", "/v2/local/target-state", document)
    out.write("target state sent; applying\n")
    follow_apply(client, out=out, timeout=timeout)


def follow_apply(
    client: SupervisorClient, *, out: TextOut, timeout: float, clock: Callable[[], float] = time.monotonic
) -> None:
    """Poll /v2/state/status until the app is applied, showing download progress; a failed
    apply (the device's update_failed) or the timeout raises PushFailed."""
    bars: dict[str, ProgressBar] = {}
    deadline = clock() + timeout
    while clock() < deadline:
        status = client.request("GET", "/v2/state/status")
        for image in status.get("images", []):
            progress = image.get("downloadProgress")
            if progress is not None:
                bars.setdefault(image["name"], ProgressBar(f"download {image['name']}", out)).show(progress)
        if status.get("appState") == "applied":
            for bar in bars.values():
                bar.done()
            names = ", ".join(f"{c['serviceName']} ({c['containerId'][:12]})" for c in status["containers"])
            out.write(f"applied: {names}\n")
            return
        if client.request("GET", "/v1/device").get("update_failed"):
            raise PushFailed("the device could not apply the target (it retries in the background)")
        time.sleep(POLL_SECONDS)
    raise PushFailed(f"not applied after {timeout:g} s")


class ProgressBar:
    """One line redrawn in place (tqdm): `label |#####     | 50%`."""

    def __init__(self, label: str, out: TextOut) -> None:
        self._bar = tqdm(
            total=100, desc=label, file=out, ncols=80, bar_format="{desc} |{bar}| {n:3.0f}%", mininterval=0
        )

    def show(self, percent: int) -> None:
        percent = max(0, min(100, int(percent)))
        if percent != self._bar.n:
            self._bar.update(percent - self._bar.n)

    def step_line(self, line: str) -> None:
        """A build output line: `Step 2/5 : …` moves the bar."""
        if line.startswith("Step ") and "/" in line:
            done, _, total = line[5:].partition(" ")[0].partition("/")
            if done.isdigit() and total.isdigit() and int(total):
                self.show(100 * (int(done) - 1) // int(total))

    def done(self) -> None:
        self.show(100)
        self._bar.close()

    def fail(self) -> None:
        self._bar.set_description_str(f"{self._bar.desc} failed", refresh=False)
        self._bar.close()
