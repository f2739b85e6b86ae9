"""JSON-shape checks for target documents: every problem surfaces as `InvalidTargetState`
naming the path the user wrote (`local.apps.1.services.2.environment.1FOO`), never as a
TypeError or KeyError. Pure: no Django, no docker.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from apps_api.engine.state import InvalidTargetState

MAX_LENGTH = 255


MAX_ID = 2**53


NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")


ENV_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


CONFIG_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_:]*")


# printable ASCII except space, double quote, single quote and backtick
LABEL_NAME_RE = re.compile(r"[\x21\x23-\x26\x28-\x5f\x61-\x7e]+")


def join_path(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def optional(doc: dict[str, Any], key: str, default: Any) -> Any:
    """A field that may be missing or null; either means `default`."""
    value = doc.get(key)
    return default if value is None else value


def expect_object(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidTargetState(path, "expected an object")
    return value


def expect_list(value: object, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidTargetState(path, "expected a list")
    return value


def expect_string(value: object, path: str, *, non_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidTargetState(path, "expected a string")
    if non_empty and not value:
        raise InvalidTargetState(path, "must not be empty")
    if len(value) > MAX_LENGTH:
        raise InvalidTargetState(path, f"must be at most {MAX_LENGTH} characters")
    return value


def expect_name(value: object, path: str, what: str) -> str:
    """A service, volume or network name (also usable inside Docker object names)."""
    name = expect_string(value, path, non_empty=True)
    if not NAME_RE.fullmatch(name):
        raise InvalidTargetState(path, f"invalid {what} '{name}'")
    return name


def expect_bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidTargetState(path, "expected a boolean")
    return value


def expect_flag(value: object, path: str) -> bool:
    """A compose boolean: true/false, or the strings "true"/"false"."""
    if isinstance(value, str) and value.lower() in {"true", "false"}:
        return value.lower() == "true"
    return expect_bool(value, path)


def expect_int(value: object, path: str, *, minimum: int | None = None) -> int:
    """An integer given as a JSON number or a decimal string; bools and floats are not ints."""
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,18}", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTargetState(path, "expected an integer")
    if minimum is not None and value < minimum:
        raise InvalidTargetState(path, f"must be at least {minimum}")
    return value


def expect_id(value: object, path: str) -> int:
    """A non-negative integer id up to 2**53, as a number or a numeric string."""
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,17}", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        raise InvalidTargetState(path, f"invalid id {value!r}: expected a non-negative integer")
    return value


def variables_from(
    value: object, path: str, *, kind: Literal["environment", "labels", "config"], allow_list: bool = False
) -> dict[str, str]:
    """Environment variables (kind "environment"), labels ("labels") or device config
    variables ("config"): an object of string values, or with `allow_list` compose's
    ["KEY=value", ...] form. Names are checked against the kind's rule."""
    pattern, problem = {
        "environment": (ENV_NAME_RE, "invalid variable name"),
        "config": (CONFIG_NAME_RE, "invalid variable name"),
        "labels": (LABEL_NAME_RE, "invalid label name"),
    }[kind]
    if allow_list and isinstance(value, list):
        items: list[tuple[str, object, str]] = []
        for index, entry in enumerate(value):
            key, _, text = expect_text(entry, join_path(path, index)).partition("=")
            items.append((key, text, join_path(path, index)))
    else:
        items = [(key, text, join_path(path, key)) for key, text in expect_object(value, path).items()]
    result: dict[str, str] = {}
    for name, given, at in items:
        if not pattern.fullmatch(name):
            raise InvalidTargetState(at, problem)
        if not isinstance(given, str):
            raise InvalidTargetState(at, "value must be a string")
        result[name] = given
    return result


def expect_text(value: object, path: str) -> str:
    """A string of any length (command arguments, paths, addresses)."""
    if not isinstance(value, str):
        raise InvalidTargetState(path, "expected a string")
    return value


def string_list(value: object, path: str, *, single: bool = False) -> list[str]:
    """A list of strings; with `single`, one string stands for a list of one."""
    if single and isinstance(value, str):
        return [value]
    return [expect_text(item, join_path(path, i)) for i, item in enumerate(expect_list(value, path))]
