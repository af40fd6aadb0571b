"""Checks for config values: each raises ConfigError naming the key and what is allowed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class ConfigError(ValueError):
    """A config value is missing, of the wrong type, or outside what is allowed."""


def check_choice(key: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raise ConfigError unless `value` is one of `allowed`."""
    allowed = list(allowed)
    if value not in allowed:
        options = ", ".join(str(a) for a in allowed)
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of: {options}")


def check_range(
    key: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> None:
    """Raise ConfigError unless low <= value <= high (bounds optional, inclusivity per side)."""
    lo_ok = low is None or (value >= low if low_inclusive else value > low)
    hi_ok = high is None or (value <= high if high_inclusive else value < high)
    if not (lo_ok and hi_ok):
        left = "(-inf" if low is None else ("[" if low_inclusive else "(") + f"{low:g}"
        right = "inf)" if high is None else f"{high:g}" + ("]" if high_inclusive else ")")
        raise ConfigError(f"{key}={value!r} is out of range; allowed: {left}, {right}")


def check_positive(key: str, value: float) -> None:
    """Raise ConfigError unless value > 0."""
    check_range(key, value, 0, None, low_inclusive=False)
