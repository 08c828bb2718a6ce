"""Rollover: strike selection, limit ladder prices and roll plans (domain 9.5-9.13)."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal


def to_decimal(value: float | int | Decimal | str) -> Decimal:
    """The exact decimal a number is written as (floats via their shortest round-trip form)."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def select_strike(price: float, interval: float) -> float:
    """ATM strike: nearest multiple of ``interval``, exact ties to the even multiple."""
    if not interval > 0:
        raise ValueError(f"strike interval must be > 0, got {interval!r}")
    step = to_decimal(interval)
    ratio = (to_decimal(price) / step).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    return float(ratio * step)
