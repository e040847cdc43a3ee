"""Argument checks every module shares (standard library only, imports nothing of ours,
so the lowest modules can use it).

Example:
    >>> is_int_at_least(3, 1), is_int_at_least(True, 0), is_int_at_least(2.0, 1)
    (True, False, False)
    >>> check_int("patience", 0, minimum=1)
    Traceback (most recent call last):
    ...
    ValueError: patience must be an integer >= 1, got 0
"""

from __future__ import annotations

import numbers

__all__ = ["check_int", "is_int_at_least"]


def is_int_at_least(value: object, minimum: int) -> bool:
    """THE integer test of every argument check: an integer (any ``numbers.Integral``,
    numpy's too, never a bool) >= ``minimum``."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= minimum


def check_int(name: str, value: object, *, minimum: int, extra: str = "") -> None:
    """A ValueError naming ``name`` unless :func:`is_int_at_least` ``(value, minimum)``."""
    if not is_int_at_least(value, minimum):
        suffix = f" {extra}" if extra else ""
        raise ValueError(f"{name} must be an integer >= {minimum}{suffix}, got {value!r}")
