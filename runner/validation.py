"""Checks for config values: each raises ConfigError naming the key and what is allowed."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import Any


class ConfigError(ValueError):
    """A config value is missing, of the wrong type, or outside what is allowed; `key` is the
    dotted key it concerns (when one does), so the runner can add where that key was set."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def check_choice(key: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raise ConfigError unless `value` is one of `allowed`."""
    allowed = list(allowed)
    if value not in allowed:
        options = ", ".join(str(a) for a in allowed)
        shown = value.value if isinstance(value, Enum) else value
        raise ConfigError(f"{key}={shown!r} is not allowed; choose one of: {options}",
                          key=key.split(" ")[0])


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
        raise ConfigError(f"{key}={value!r} is out of range; allowed: {left}, {right}",
                          key=key.split(" ")[0])


def check_positive(key: str, value: float) -> None:
    """Raise ConfigError unless value > 0."""
    check_range(key, value, 0, None, low_inclusive=False)
