"""Position sizing: Tom Basso three-constraint, as-signalled, pyramids, peel-off (domain 5)."""

from __future__ import annotations

import attrs

from pm_core.config import InstrumentConfig, SizingMode
from pm_core.model import BaseSizing, PyramidSizing


@attrs.frozen
class PeelOff:
    """Lots to take off an instrument and why (domain 5.5)."""

    lots_to_peel: int
    message: str


def size_base(
    price: float,
    stop: float,
    atr: float,
    er: float,
    signal_lots: int,
    equity: float,
    margin_available: float,
    instrument: InstrumentConfig,
    point_value: float,
    mode: SizingMode,
) -> BaseSizing:
    """Lots for a base entry: min of risk, volatility and margin lots (or as signalled)."""
    raise NotImplementedError


def size_pyramid(
    price: float,
    stop: float,
    margin_available: float,
    base_lots: int,
    profit_after_base_risk: float,
    signal_lots: int,
    instrument: InstrumentConfig,
    point_value: float,
    mode: SizingMode,
) -> PyramidSizing:
    """Lots for a pyramid: min of margin (A), base ratio (B), profit budget (C), signal cap."""
    raise NotImplementedError


def peel_off(
    risk: float, vol: float, equity: float, lots: int, instrument: InstrumentConfig
) -> PeelOff:
    """Lots to peel off when an instrument's risk or volatility exceeds its ongoing limits."""
    raise NotImplementedError
