"""Rollover: strike selection, limit ladder prices and roll plans (domain 9.5-9.13)."""

from __future__ import annotations


def select_strike(price: float, interval: float) -> float:
    """ATM strike: nearest multiple of ``interval``, exact ties to the even multiple."""
    raise NotImplementedError
