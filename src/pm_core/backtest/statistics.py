"""Backtest statistics (domain 11.5, 13.8): drawdown, win rate, profit factor, R, exposure.

Every sum runs in the order given, starting from 0.0, and every formula is evaluated as the
spec writes it, so identical input gives identical bits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

__all__ = [
    "Statistics",
    "TradeFigures",
    "exposure_pct",
    "max_drawdown",
    "trade_figures",
    "trade_r",
]


@attrs.frozen(slots=True)
class TradeFigures:
    """What the closed trade rows add up to."""

    trades: int
    win_rate_pct: float | None
    gross_profit: float
    gross_loss: float
    profit_factor: float | None
    average_r: float | None


@attrs.frozen(slots=True)
class Statistics:
    """The ``stats`` block of a backtest result, fields in document order (domain 13.8)."""

    final_equity: float
    total_pnl: float
    closed_pnl: float
    return_pct: float
    max_drawdown: float
    max_drawdown_pct: float
    trades: int
    win_rate_pct: float | None
    gross_profit: float
    gross_loss: float
    profit_factor: float | None
    average_r: float | None
    exposure_pct: float
    signals_processed: int
    duplicates: int
    outcomes: Mapping[str, Mapping[str, int]]


def trade_r(
    pnl: float, entry_price: float, initial_stop: float, lots: int, point_value: float
) -> float | None:
    """R multiple of one trade row: pnl / initial risk of its lots; None when that risk <= 0."""
    risk = (entry_price - initial_stop) * lots * point_value
    if not risk > 0:
        return None
    return pnl / risk


def max_drawdown(initial_capital: float, open_equities: Sequence[float]) -> tuple[float, float]:
    """(largest peak-to-trough fall in rupees, largest fall as % of its peak), taken separately.

    The curve starts at the initial capital; percentages only count points whose peak is > 0.
    """
    peak = initial_capital
    worst = 0.0
    worst_pct = 0.0
    for equity in open_equities:
        if equity > peak:
            peak = equity
        drop = peak - equity
        if drop > worst:
            worst = drop
        if peak > 0:
            pct = drop / peak * 100
            if pct > worst_pct:
                worst_pct = pct
    return worst, worst_pct


def trade_figures(pnls: Sequence[float], rs: Sequence[float | None]) -> TradeFigures:
    """Win rate, gross profit and loss, profit factor and average R of closed trade rows."""
    count = len(pnls)
    wins = 0
    gross_profit = 0.0
    gross_loss_sum = 0.0
    for pnl in pnls:
        if pnl > 0:
            wins += 1
            gross_profit += pnl
        elif pnl < 0:
            gross_loss_sum += pnl
    gross_loss = 0.0 - gross_loss_sum  # not -sum: that gives -0.0 with no losses
    r_total = 0.0
    r_count = 0
    for r in rs:
        if r is not None:
            r_total += r
            r_count += 1
    return TradeFigures(
        trades=count,
        win_rate_pct=wins / count * 100 if count else None,
        gross_profit=gross_profit,
        gross_loss=gross_loss,
        profit_factor=gross_profit / gross_loss if gross_loss != 0 else None,
        average_r=r_total / r_count if r_count else None,
    )


def exposure_pct(instants_us: Sequence[int], holding: Sequence[bool]) -> float:
    """Share of the signal span spent with at least one open position, in percent.

    ``holding[k]`` is whether anything was open after signal k; that state lasts until signal
    k + 1, and nothing after the last signal counts. 0.0 when the span is zero.
    """
    if len(instants_us) < 2:
        return 0.0
    span = instants_us[-1] - instants_us[0]
    if span <= 0:
        return 0.0
    held = 0
    previous = instants_us[0]
    was_holding = holding[0]
    for k in range(1, len(instants_us)):
        now = instants_us[k]
        if was_holding:
            held += now - previous
        previous = now
        was_holding = holding[k]
    return held / span * 100
