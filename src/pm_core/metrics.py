"""P&L, equity and portfolio risk/volatility/margin metrics (domain 8)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from pm_core.config import DomainConfig, InstrumentConfig, PortfolioConfig
from pm_core.model import Position


@attrs.frozen
class EquityView:
    """Closed, open and sizing equity (E) and the unrealized total U."""

    closed: float
    open: float
    sizing: float
    unrealized: float


@attrs.frozen
class RiskTotals:
    """Totals over live positions, summed in opening order (domain 8.3, 13.1)."""

    risk: float
    vol: float
    margin_used: float
    lots: int
    by_instrument: Mapping[str, tuple[float, float, int]]  # instrument -> (risk, vol, lots)


def equity_view(
    closed_equity: float, positions: Sequence[Position], portfolio: PortfolioConfig
) -> EquityView:
    """Equity per the configured mode: closed, open (closed + U) or blended (closed + w x U)."""
    raise NotImplementedError


def position_risk(position: Position) -> float:
    """max(0, entry_price - current_stop) x lots x pv."""
    raise NotImplementedError


def position_vol(position: Position, instrument: InstrumentConfig) -> float:
    """atr' x lots x pv, atr' = the position's ATR if > 0 else the instrument's fallback ATR."""
    raise NotImplementedError


def risk_totals(positions: Sequence[Position], config: DomainConfig) -> RiskTotals:
    """Risk, volatility, margin used and lots over live positions, overall and per instrument."""
    raise NotImplementedError


def margin_available(equity: float, margin_used: float, portfolio: PortfolioConfig) -> float:
    """M = max(0, E x max_margin_utilization_percent / 100.0 - margin_used)."""
    raise NotImplementedError


def percent_of(amount: float, equity: float) -> float:
    """amount / E x 100, 0 when E <= 0."""
    raise NotImplementedError


def instrument_open_pnl(positions: Sequence[Position], instrument: str) -> float:
    """Sum over the instrument's live positions of unrealized + rollover realized P&L."""
    raise NotImplementedError
