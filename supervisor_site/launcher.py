"""`make run`: start the system services that are missing (dockerd; Redis when REDIS_URL is
TCP), then run the agent's supervising parent (supervisor_site.agent) in this process.

Ctrl-C stops the agent and then only the system services this run started.
With SUPERVISOR_EXPOSE_DOCKER_TCP=1 it also exposes the Docker engine on 127.0.0.1:2375,
where `balena push 127.0.0.1` builds (docs/local-mode.md "The balena CLI").
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from supervisor_site import agent, environment
from supervisor_site.system_services import (
    EXPOSE_DOCKER_TCP_VARIABLE,
    ServiceStartError,
    StartedService,
    ensure_dockerd,
    ensure_redis,
    expose_docker_tcp,
)

PROJECT_DIR = Path(__file__).resolve().parent.parent


def _expose_docker_tcp_requested() -> bool:
    return os.environ.get(EXPOSE_DOCKER_TCP_VARIABLE, "").strip().lower() in {"1", "true"}


def main() -> int:
    env = os.environ
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log_dir = Path(environment.SUPERVISOR_DATA_DIR) / "log"
    started: list[StartedService] = []
    try:
        ensures: list[tuple[Callable[[str, Path], StartedService | None], str]] = [
            (ensure_dockerd, environment.DOCKER_HOST)
        ]
        if not environment.REDIS_URL.startswith("unix://"):  # a unix socket: the agent runs its own
            ensures.insert(0, (ensure_redis, environment.REDIS_URL))
        for ensure, target in ensures:
            try:
                service = ensure(target, log_dir)
            except ServiceStartError as exc:
                # The API still serves without them; /v1/healthy names what is missing.
                print(f"warning: {exc}", file=sys.stderr)
                continue
            if service is not None:
                print(f"started {service.name} (pid {service.process.pid})")
                started.append(service)
        if _expose_docker_tcp_requested():
            try:
                relay = expose_docker_tcp(environment.DOCKER_HOST, log_dir)
            except ServiceStartError as exc:
                print(f"warning: {exc}", file=sys.stderr)
            else:
                if relay is not None:
                    print(f"started {relay.name} (pid {relay.process.pid})")
                    started.append(relay)
        return agent.run()
    finally:
        for service in reversed(started):
            print(f"stopping {service.name}")
            service.stop()


if __name__ == "__main__":
    sys.exit(main())
