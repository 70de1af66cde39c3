"""Argument checks shared by every public function: each returns the value converted (``int`` or
``float``) or raises ``ValueError("field: must be ..., got ...")`` naming the offending argument."""

from __future__ import annotations

import math
import numbers

__all__ = ["integer", "positive_int", "nonnegative_int", "seed", "real", "positive_real", "nonnegative_real",
           "real_in", "flag"]


def integer(name: str, value, minimum: int) -> int:
    """An integer ``>= minimum`` (bools are rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {value!r}")
    return int(value)


def positive_int(name: str, value) -> int:
    """An integer ``>= 1``."""
    return integer(name, value, 1)


def nonnegative_int(name: str, value) -> int:
    """An integer ``>= 0``."""
    return integer(name, value, 0)


def seed(value, name: str = "seed") -> int:
    """A random seed: an integer ``>= 0``."""
    return integer(name, value, 0)


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}: must be a real number, got {value!r}")
    return float(value)


def real(name: str, value) -> float:
    """A finite real number (bools and strings are rejected)."""
    value = _number(name, value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: must be finite, got {value!r}")
    return value


def positive_real(name: str, value) -> float:
    """A finite real number ``> 0``."""
    value = _number(name, value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: must be finite and > 0, got {value!r}")
    return value


def nonnegative_real(name: str, value) -> float:
    """A finite real number ``>= 0``."""
    value = _number(name, value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}: must be finite and >= 0, got {value!r}")
    return value


def real_in(name: str, value, low: float, high: float, *, open_low: bool = False, open_high: bool = False) -> float:
    """A finite real number in ``[low, high]``; ``open_low`` / ``open_high`` exclude the ends."""
    value = real(name, value)
    if value < low or value > high or (open_low and value == low) or (open_high and value == high):
        bound = ("(" if open_low else "[") + f"{low}, {high}" + (")" if open_high else "]")
        raise ValueError(f"{name}: must lie in {bound}, got {value!r}")
    return value


def flag(name: str, value) -> bool:
    """``True`` or ``False`` (no other truthy values)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}: must be True or False, got {value!r}")
    return value
