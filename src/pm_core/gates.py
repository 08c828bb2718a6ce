"""Entry and pyramid gates with their reason codes (domain 6)."""

from __future__ import annotations

import attrs

from pm_core.config import InstrumentConfig, PortfolioConfig
from pm_core.metrics import RiskTotals, percent_of
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
    return _portfolio_gate(
        price,
        stop,
        atr,
        final,
        point_value,
        equity,
        totals,
        instrument,
        (
            ("portfolio_risk_limit", portfolio.max_portfolio_risk_percent),
            ("portfolio_vol_limit", portfolio.max_portfolio_vol_percent),
        ),
    )


def _portfolio_gate(
    price: float,
    stop: float,
    atr: float,
    final: int,
    point_value: float,
    equity: float,
    totals: RiskTotals,
    instrument: InstrumentConfig,
    limits: tuple[tuple[str, float], tuple[str, float]],
) -> tuple[Code, ...]:
    """Projected portfolio risk and vol after adding ``final`` lots, strictly above limits fail."""
    if equity <= 0:
        return (Code("equity_non_positive", {"equity": equity}),)
    vol_atr = atr if atr > 0 else instrument.fallback_atr
    new_risk = (price - stop) * final * point_value
    new_vol = vol_atr * final * point_value
    projected_risk = (totals.risk + new_risk) / equity * 100
    projected_vol = (totals.vol + new_vol) / equity * 100
    (risk_code, risk_limit), (vol_code, vol_limit) = limits
    codes: list[Code] = []
    if projected_risk > risk_limit:
        codes.append(Code(risk_code, {"x": projected_risk, "limit": risk_limit}))
    if projected_vol > vol_limit:
        codes.append(Code(vol_code, {"x": projected_vol, "limit": vol_limit}))
    return tuple(codes)


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
    as_signalled = portfolio.sizing_mode == "as_signalled"
    one_r = anchor.entry_price - anchor.initial_stop
    move = price - anchor.entry_price
    since = anchor.entry_price if last_pyramid_price is None else last_pyramid_price
    spacing = (price - since) / atr if atr > 0 else 0.0
    codes: list[Code] = []
    # 1. Instrument gate.
    if not as_signalled:
        if portfolio.use_1r_gate:
            if one_r <= 0:
                codes.append(Code("invalid_initial_risk"))
            elif move <= one_r:
                codes.append(Code("price_not_above_1r", {"move": move, "r": one_r}))
        if spacing < instrument.atr_pyramid_spacing:
            codes.append(Code("atr_spacing", {"x": spacing, "min": instrument.atr_pyramid_spacing}))
    # 2. Portfolio gate with the computed size.
    codes.extend(
        _portfolio_gate(
            price,
            stop,
            atr,
            sizing.final,
            point_value,
            equity,
            totals,
            instrument,
            (
                ("pyramid_portfolio_risk", portfolio.pyramid_risk_block_percent),
                ("pyramid_portfolio_vol", portfolio.pyramid_vol_block_percent),
            ),
        )
    )
    # 3. Profit gate.
    if not as_signalled and instrument_pnl <= 0:
        codes.append(Code("instrument_pnl_not_positive", {"pnl": instrument_pnl}))
    # 4. Size.
    if sizing.limiter == "invalid_risk":
        codes.append(Code("invalid_risk", {"stop": stop, "price": price}))
    elif sizing.final <= 0:
        codes.append(Code("pyramid_zero_lots", {"limiter": sizing.limiter}))
    return PyramidGateReport(  # positional, in field order
        tuple(codes),
        move / one_r if one_r > 0 else 0.0,  # price_move_r
        spacing,  # atr_spacing
        percent_of(totals.risk, equity),  # risk_percent
        percent_of(totals.vol, equity),  # vol_percent
    )
