"""JSON bodies of the hot state reads, rendered once per device state.

Apps poll `/v1/device` and `/v2/applications/state`, dashboards `/v2/state/status`:
between two changes of the device's state every answer is the same. api/hot_reads.py
still computes them (api/answers.py) but only when `read_snapshot()` gives a snapshot it
has not seen, which happens when Redis's apply progress, the target or the engine's
containers changed; otherwise the bytes rendered last time are sent again. Bodies are
kept for one snapshot only, a handful per route and key scope.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

from django.http import HttpResponse
from rest_framework.renderers import JSONRenderer

from apps_api.snapshot import DeviceSnapshot

_RENDERER = JSONRenderer()
MAX_BODIES = 64
"""Routes by key scopes seen for one snapshot; a flood of scopes cannot grow it further."""


class PreparedBodies:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot: DeviceSnapshot | None = None
        self._bodies: dict[Hashable, bytes] = {}

    def body(self, snapshot: DeviceSnapshot, key: Hashable, build: Callable[[], Any]) -> bytes:
        """The rendered JSON of `build()` for `snapshot` and `key` (route, scope…)."""
        with self._lock:
            if self._snapshot is snapshot and key in self._bodies:
                return self._bodies[key]
        body = rendered_json(build())
        with self._lock:
            if self._snapshot is not snapshot:
                self._snapshot, self._bodies = snapshot, {}
            if len(self._bodies) < MAX_BODIES:
                self._bodies[key] = body
        return body


_prepared = PreparedBodies()


def rendered_json(data: Any) -> bytes:
    """`data` as the device API's JSON renderer writes it."""
    return bytes(_RENDERER.render(data))


def prepared_body(snapshot: DeviceSnapshot, key: Hashable, build: Callable[[], Any]) -> bytes:
    """The JSON `build()` renders, rendered once per snapshot and key."""
    return _prepared.body(snapshot, key, build)


def json_answer(body: bytes) -> HttpResponse:
    """A 200 answer with the JSON `body`."""
    return HttpResponse(body, content_type="application/json")
