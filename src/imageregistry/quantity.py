"""Kubernetes resource quantities (`5Gi`, `10`, `1.5M`, `2e3`) as exact integers, and back.

ResourceQuota and LimitRange carry their limits as quantity strings. Every limit this
registry enforces counts whole things (image streams, images, tags) or bytes, so a quantity
is parsed to an exact `int` (rounded up, as kube's `Value()` does) with `Decimal` arithmetic,
never floats. `format_quantity` writes the canonical form kubectl prints (`50Mi`, `10`,
`5G`), `approx_bytes` a short human form for refusal messages (`4.8Gi`).

A leaf module: it imports nothing from the registry, so every layer may use it.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
# kube's grammar: sign, digits with an optional fraction, then a suffix or an exponent.
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)
MAX_QUANTITY = 2**63 - 1  # kube's int64 value range


class InvalidQuantity(ValueError):
    """Not a quantity, or out of the range this registry counts in."""


def parse_quantity(text: object) -> int:
    """The integer value of a quantity string (or JSON integer), rounded up.

    Negative values and values beyond int64 are refused: no limit is negative, and the
    database columns the usage is summed from are 64-bit.
    """
    if isinstance(text, bool):
        raise InvalidQuantity(f"{text!r} is not a quantity")
    if isinstance(text, int):
        text = str(text)
    if not isinstance(text, str) or len(text) > 64:
        raise InvalidQuantity(f"{str(text)[:64]!r} is not a quantity")
    match = _QUANTITY.match(text.strip())
    if match is None:
        raise InvalidQuantity(
            f"{text!r} is not a quantity (expected e.g. 10, 500Mi, 5Gi, 1.5G or 2e3)"
        )
    try:
        number = Decimal(match.group("number"))
    except InvalidOperation:
        raise InvalidQuantity(f"{text!r} is not a quantity") from None
    suffix = match.group("suffix") or ""
    if suffix in _BINARY:
        value = number * (Decimal(1024) ** _BINARY[suffix])
    elif suffix in _DECIMAL:
        value = number.scaleb(_DECIMAL[suffix])
    else:
        exponent = int(suffix[1:])
        if abs(exponent) > 40:
            raise InvalidQuantity(f"{text!r} is out of range")
        value = number.scaleb(exponent)
    if value < 0:
        raise InvalidQuantity(f"{text!r} is negative")
    result = math.ceil(value)
    if result > MAX_QUANTITY:
        raise InvalidQuantity(f"{text!r} is out of range")
    return int(result)


def format_quantity(value: int, binary: bool) -> str:
    """The canonical quantity string of `value`: the largest exact binary (`50Mi`) or
    decimal (`5G`) suffix, else the plain integer."""
    if value == 0:
        return "0"
    if binary:
        for suffix, power in sorted(_BINARY.items(), key=lambda kv: -kv[1]):
            if value % (1024**power) == 0:
                return f"{value // 1024**power}{suffix}"
        return str(value)
    for suffix in ("E", "P", "T", "G", "M", "k"):
        unit = 10 ** _DECIMAL[suffix]
        if value % unit == 0:
            return f"{value // unit}{suffix}"
    return str(value)


def approx_bytes(value: int) -> str:
    """A short binary form for messages: `312Mi`, `4.8Gi`, `1.25Ki`, `900` (bytes)."""
    if value < 1024:
        return str(value)
    for suffix, power in sorted(_BINARY.items(), key=lambda kv: -kv[1]):
        unit = 1024**power
        if value >= unit:
            text = f"{value / unit:.2f}".rstrip("0").rstrip(".")
            return f"{text}{suffix}"
    return str(value)  # unreachable: value >= 1024 matched Ki
