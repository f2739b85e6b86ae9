"""`make run`: start what is missing, migrate, then run the Procfile's processes with honcho.

Ctrl-C stops the processes and then only the system services this run started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from supervisor_site.system_services import ServiceStartError, StartedService, ensure_dockerd, ensure_redis

PROJECT_DIR = Path(__file__).resolve().parent.parent


def _manage(*args: str, env: dict[str, str], capture: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PROJECT_DIR / "manage.py"), *args],
        env=env,
        cwd=PROJECT_DIR,
        text=True,
        stdout=subprocess.PIPE if capture else None,
    )


def _run_procfile(env: dict[str, str]) -> int:
    honcho = Path(sys.executable).parent / "honcho"
    process = subprocess.Popen(
        [str(honcho), "-f", str(PROJECT_DIR / "Procfile"), "start"], env=env, cwd=PROJECT_DIR
    )
    # honcho gets the terminal's Ctrl-C itself and stops its processes; we wait for it,
    # and pass on a SIGTERM sent to us alone.
    signal.signal(signal.SIGTERM, lambda *_: process.terminate())
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            continue


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "supervisor_site.settings")
    from django.conf import settings

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("SUPERVISOR_LISTEN_ADDRESS", settings.SUPERVISOR_LISTEN_ADDRESS)
    env.setdefault("SUPERVISOR_PORT", str(settings.SUPERVISOR_PORT))
    env.setdefault("PYTHONUNBUFFERED", "1")
    log_dir = Path(settings.SUPERVISOR_DATA_DIR) / "log"

    started: list[StartedService] = []
    try:
        for ensure, target in ((ensure_redis, settings.REDIS_URL), (ensure_dockerd, settings.DOCKER_HOST)):
            try:
                service = ensure(target, log_dir)
            except ServiceStartError as exc:
                # The API still serves without them; /v1/healthy names what is missing.
                print(f"warning: {exc}", file=sys.stderr)
                continue
            if service is not None:
                print(f"started {service.name} (pid {service.process.pid})")
                started.append(service)
        if _manage("migrate", "--noinput", "--verbosity=0", env=env).returncode != 0:
            return 1
        apikey = _manage("apikey", env=env, capture=True)
        if apikey.returncode != 0:
            return 1
        address, port = env["SUPERVISOR_LISTEN_ADDRESS"], env["SUPERVISOR_PORT"]
        print(
            f"Supervisor API: http://{address}:{port}/  (global API key: {apikey.stdout.strip()})", flush=True
        )
        return _run_procfile(env)
    except KeyboardInterrupt:
        return 130
    finally:
        for service in reversed(started):
            print(f"stopping {service.name}")
            service.stop()


if __name__ == "__main__":
    sys.exit(main())
