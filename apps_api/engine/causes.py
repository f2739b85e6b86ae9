"""Why a service was recreated, restarted, stopped or killed: a `Cause` in parts that the
journal stores and the API answers, with the one-line text a person reads. Pure.

Environment changes are named by key only, never by value: an environment may hold secrets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

CauseType = Literal["update", "api", "crash", "lockOverride"]


@dataclass(frozen=True)
class Cause:
    """`update`: the target differs from the container (image, env keys, config fields,
    networks; `config_unknown` when the container does not say what it was created with);
    `api`: a device API call (`route`, and the `scope` of the key, never the key);
    `crash`: the container exited without the supervisor asking (`exit_code`);
    `lockOverride`: user update locks of `services` were removed by force."""

    type: CauseType
    image_from: str = ""
    image_to: str = ""
    env_added: tuple[str, ...] = ()
    env_removed: tuple[str, ...] = ()
    env_changed: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    config_unknown: bool = False
    networks: tuple[str, ...] = ()
    route: str = ""
    scope: str = ""
    exit_code: int | None = None
    services: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """One line, e.g. `env changed: FOO (changed), BAR (added); config changed: privileged`."""
        if self.type == "api":
            return f"API call: {self.route} by {self.scope}"
        if self.type == "crash":
            return f"crash: exit code {self.exit_code}"
        if self.type == "lockOverride":
            return f"lock override: user locks of {', '.join(self.services)} removed"
        parts = []
        if self.image_from == self.image_to != "":
            parts.append(f"image changed: {self.image_to} (new content)")
        elif self.image_from or self.image_to:
            parts.append(f"image changed: {self.image_from or '?'} → {self.image_to}")
        env = [f"{k} (changed)" for k in self.env_changed] + [f"{k} (added)" for k in self.env_added]
        env += [f"{k} (removed)" for k in self.env_removed]
        if env:
            parts.append(f"env changed: {', '.join(env)}")
        if self.fields:
            parts.append(f"config changed: {', '.join(self.fields)}")
        if self.config_unknown and not parts:
            parts.append("configuration changed")
        if self.networks:
            parts.append(f"network changed: {', '.join(self.networks)}")
        return "; ".join(parts) or "configuration changed"

    def as_json(self) -> dict[str, Any]:
        """The parts that are set, camelCased, for the journal and the API."""
        if self.type == "api":
            return {"type": "api", "route": self.route, "scope": self.scope}
        if self.type == "crash":
            return {"type": "crash", "exitCode": self.exit_code}
        if self.type == "lockOverride":
            return {"type": "lockOverride", "services": list(self.services)}
        body: dict[str, Any] = {"type": "update"}
        if self.image_from or self.image_to:
            body["image"] = {"from": self.image_from, "to": self.image_to}
        env = {"added": self.env_added, "removed": self.env_removed, "changed": self.env_changed}
        if any(env.values()):
            body["env"] = {k: list(v) for k, v in env.items()}
        if self.fields:
            body["config"] = list(self.fields)
        if self.config_unknown:
            body["configUnknown"] = True
        if self.networks:
            body["networks"] = list(self.networks)
        return body


def api_cause(route: str, *, all_apps: bool, app_ids: frozenset[int]) -> Cause:
    """A device API call on `route` ("POST /v2/…") by a key of the given scope."""
    if all_apps:
        scope = "global key"
    else:
        ids = sorted(app_ids)
        scope = f"key scoped to app{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}"
    return Cause("api", route=route, scope=scope)


def crash_cause(exit_code: int | None) -> Cause:
    return Cause("crash", exit_code=exit_code)


def lock_override_cause(services: tuple[str, ...]) -> Cause:
    return Cause("lockOverride", services=services)
