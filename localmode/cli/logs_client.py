"""`manage.py localmode logs`: the device's logs from /v2/local/logs, printed the way
`balena device logs` prints them: `[<ISO time>] [<service>] <message>`."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

from apps_api.backoff import backoff_delay
from localmode.cli.push import TextOut

RECONNECT_MAX_SECONDS = 60.0


def format_record(record: dict[str, Any]) -> str:
    stamp = record.get("timestamp")
    moment = (
        datetime.fromtimestamp(stamp / 1000, UTC) if isinstance(stamp, int | float) else datetime.now(UTC)
    )
    iso = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    service = record.get("serviceName")
    prefix = f"[{iso}] [{service}] " if service else f"[{iso}] "
    return prefix + str(record.get("message", ""))


def print_logs(
    base_url: str,
    *,
    out: TextOut,
    follow: bool,
    service: str | None = None,
    system_only: bool = False,
    idle_seconds: float = 1.0,
    api_key: str = "",
) -> None:
    """Without `follow`: what the device kept (persistent logging), until nothing comes for
    `idle_seconds`. With `follow`: everything from now on, reconnecting when the stream ends."""
    url = base_url.rstrip("/") + "/v2/local/logs" + ("" if follow else "?since=0")
    failures = 0
    while True:
        request = urllib.request.Request(url)  # noqa: S310 (our own API)
        if api_key:
            request.add_header("Authorization", f"Bearer {api_key}")
        try:
            with urllib.request.urlopen(request, timeout=None if follow else idle_seconds) as stream:  # noqa: S310
                failures = 0
                for raw in stream:
                    _print_line(raw, out, service=service, system_only=system_only)
        except TimeoutError:
            return
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{url}: {exc.code} {exc.read().decode(errors='replace')}") from exc
        except OSError as exc:
            if not follow:
                raise RuntimeError(f"{url}: {exc}") from exc
        if not follow:
            return
        failures += 1
        time.sleep(backoff_delay(failures, base=1.0, cap=RECONNECT_MAX_SECONDS))


def _print_line(raw: bytes, out: TextOut, *, service: str | None, system_only: bool) -> None:
    try:
        record = json.loads(raw)
    except ValueError:
        return
    if not isinstance(record, dict) or (record.get("message") == "Streaming logs" and record.get("isSystem")):
        return
    name = record.get("serviceName")
    if (service is not None and name != service) or (system_only and name):
        return
    out.write(format_record(record) + "\n")
    out.flush()
