"""Integers and flags as requests spell them."""

from __future__ import annotations

import pytest

from hostcfg.values import ascii_int, flag


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", 0), ("42", 42), ("9007199254740992", 2**53), ("9007199254740993", None), ("\u00b2", None),
     ("\u0661", None), ("", None), (" 1", None), ("1 ", None), ("-1", None), ("+1", None), ("1.0", None),
     ("0x1", None), ("9" * 5000, None)],
)  # fmt: skip
def test_only_ascii_digits_within_the_maximum_are_integers(text: str, expected: int | None) -> None:
    assert ascii_int(text, maximum=2**53) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, False), (True, True), (False, False), ("true", True), ("TRUE", True), ("false", False),
     ("1", True), ("0", False), (1, True), (0, False), ("", False)],
)  # fmt: skip
def test_flags(value: object, expected: bool) -> None:
    assert flag(value) is expected


@pytest.mark.parametrize("value", ["maybe", "yes please", 2, -1, 1.5, [], {}, {"force": True}])
def test_anything_else_is_not_a_flag(value: object) -> None:
    with pytest.raises(ValueError, match="must be true or false"):
        flag(value)
