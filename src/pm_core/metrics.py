"""P&L, equity and portfolio risk/volatility/margin metrics (domain 8)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from pm_core.config import DomainConfig, InstrumentConfig, PortfolioConfig
from pm_core.model import LIVE_STATUSES, Position


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
    open_equity, sizing, unrealized = equity_figures(closed_equity, positions, portfolio)
    return EquityView(closed_equity, open_equity, sizing, unrealized)  # field order


def equity_figures(
    closed_equity: float, positions: Sequence[Position], portfolio: PortfolioConfig
) -> tuple[float, float, float]:
    """(open, sizing, unrealized) of ``equity_view`` as a plain tuple (the fold's every signal)."""
    unrealized = 0.0
    for position in positions:
        if position.status in LIVE_STATUSES:
            unrealized += position.unrealized_pnl
    open_equity = closed_equity + unrealized
    mode = portfolio.equity_mode
    if mode == "closed":
        sizing = closed_equity
    elif mode == "open":
        sizing = open_equity
    else:
        sizing = closed_equity + portfolio.blended_unrealized_weight * unrealized
    return open_equity, sizing, unrealized


def position_risk(position: Position) -> float:
    """max(0, entry_price - current_stop) x lots x pv."""
    return (
        max(0.0, position.entry_price - position.current_stop)
        * position.lots
        * position.point_value
    )


def position_vol(position: Position, instrument: InstrumentConfig) -> float:
    """atr' x lots x pv, atr' = the position's ATR if > 0 else the instrument's fallback ATR."""
    atr = position.atr if position.atr > 0 else instrument.fallback_atr
    return atr * position.lots * position.point_value


def risk_totals(positions: Sequence[Position], config: DomainConfig) -> RiskTotals:
    """Risk, volatility, margin used and lots over live positions, overall and per instrument."""
    risk = vol = margin_used = 0.0
    lots = 0
    instruments = config.instruments
    per: dict[str, tuple[float, float, int]] = dict.fromkeys(instruments, (0.0, 0.0, 0))
    for position in positions:
        if position.status not in LIVE_STATUSES:
            continue
        instrument = instruments.get(position.instrument)
        # position_risk and position_vol, inlined (same expressions, same rounding).
        p_lots = position.lots
        pv = position.point_value
        p_risk = max(0.0, position.entry_price - position.current_stop) * p_lots * pv
        if instrument is None:
            # Unregistered (config changed under an open position): no fallback ATR or margin.
            p_vol = max(0.0, position.atr) * p_lots * pv
            p_margin = 0.0
        else:
            atr = position.atr if position.atr > 0 else instrument.fallback_atr
            p_vol = atr * p_lots * pv
            p_margin = p_lots * instrument.margin_per_lot
        risk += p_risk
        vol += p_vol
        margin_used += p_margin
        lots += position.lots
        i_risk, i_vol, i_lots = per.get(position.instrument, (0.0, 0.0, 0))
        per[position.instrument] = (i_risk + p_risk, i_vol + p_vol, i_lots + position.lots)
    return RiskTotals(risk, vol, margin_used, lots, per)  # field order


def margin_available(equity: float, margin_used: float, portfolio: PortfolioConfig) -> float:
    """M = max(0, E x max_margin_utilization_percent / 100.0 - margin_used)."""
    return max(0.0, equity * portfolio.max_margin_utilization_percent / 100.0 - margin_used)


def percent_of(amount: float, equity: float) -> float:
    """amount / E x 100, 0 when E <= 0."""
    if equity <= 0:
        return 0.0
    return amount / equity * 100


def instrument_open_pnl(positions: Sequence[Position], instrument: str) -> float:
    """Sum over the instrument's live positions of unrealized + rollover realized P&L."""
    total = 0.0
    for position in positions:
        if position.instrument == instrument and position.is_live:
            total += position.unrealized_pnl + position.rollover_realized_pnl
    return total
