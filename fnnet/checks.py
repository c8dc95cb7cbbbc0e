"""Argument checks shared by the library and the command line: one definition of each rule.

Each returns the value in its plain Python form or raises ``ValueError`` naming where the value
came from (``where``, e.g. ``"fit"``), the argument, what was expected and what was given.
"""

from __future__ import annotations

import math
import numbers


def is_integer(value) -> bool:
    """Python and numpy integers, but not ``bool`` (``True`` is no batch size)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value) -> bool:
    """Python and numpy real numbers, but not ``bool`` and not strings."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def integer(where: str, name: str, value, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer ``>= minimum``."""
    if not is_integer(value) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{where}: {name} must be {what}, got {value!r}")
    return int(value)


def real(where: str, name: str, value, low=-math.inf, high=math.inf, low_open=False,
         high_open=False) -> float:
    """``value`` as a finite ``float`` within ``[low, high]`` (ends open where asked)."""
    ok = is_real(value) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low)
    ok = ok and (value < high if high_open else value <= high)
    if not ok:
        if high == math.inf:
            expected = f"> {low:g}" if low_open else f">= {low:g}"
        else:
            expected = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{where}: {name} must be a finite number {expected}, got {value!r}")
    return float(value)


def choice(where: str, name: str, value, options) -> str:
    """``value`` if it is one of ``options``."""
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{where}: {name} must be one of {tuple(options)}, got {value!r}")
    return value
