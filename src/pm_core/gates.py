"""Entry and pyramid gates with their reason codes (domain 6)."""

from __future__ import annotations

import attrs

from pm_core.config import InstrumentConfig, PortfolioConfig
from pm_core.metrics import RiskTotals
from pm_core.model import Code, Position, PyramidSizing


@attrs.frozen
class PyramidGateReport:
    """Failures in rule order plus the reported figures (domain 6.2)."""

    codes: tuple[Code, ...]
    price_move_r: float
    atr_spacing: float
    risk_percent: float
    vol_percent: float


def base_entry_gate(
    price: float,
    stop: float,
    atr: float,
    final: int,
    point_value: float,
    equity: float,
    totals: RiskTotals,
    instrument: InstrumentConfig,
    portfolio: PortfolioConfig,
) -> tuple[Code, ...]:
    """Portfolio risk and volatility caps for a base entry of ``final`` lots (domain 6.1)."""
    raise NotImplementedError


def pyramid_gates(
    price: float,
    stop: float,
    atr: float,
    sizing: PyramidSizing,
    anchor: Position,
    last_pyramid_price: float | None,
    equity: float,
    totals: RiskTotals,
    instrument_pnl: float,
    point_value: float,
    instrument: InstrumentConfig,
    portfolio: PortfolioConfig,
) -> PyramidGateReport:
    """Instrument, portfolio, profit and size gates of a pyramid, all evaluated (domain 6.2)."""
    raise NotImplementedError
