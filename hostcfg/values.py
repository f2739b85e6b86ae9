"""Plain values as requests and labels spell them, parsed one way for every layer."""

from __future__ import annotations

import re

_ASCII_DIGITS = re.compile(r"[0-9]+")
_FLAGS: dict[object, bool] = {"true": True, "false": False, "1": True, "0": False, "": False}


def ascii_int(value: str, *, maximum: int) -> int | None:
    """`value` as an integer when it is ASCII digits only and at most `maximum`; else None.
    (`str.isdigit` also takes "\u00b2", which int() refuses, and "\u0661", which it reads
    as 1.)"""
    if len(value) > len(str(maximum)) or not _ASCII_DIGITS.fullmatch(value):
        return None
    number = int(value)
    return number if number <= maximum else None


def flag(value: object) -> bool:
    """A request's yes/no field (`force`, `cancel`): JSON true/false, or "true"/"false"/"1"/"0"
    as a form sends them; absent (None) is False. Anything else raises ValueError."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _FLAGS:
        return _FLAGS[value.strip().lower()]
    raise ValueError("must be true or false")
