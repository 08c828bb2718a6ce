"""Position sizing: Tom Basso three-constraint, as-signalled, pyramids, peel-off (domain 5)."""

from __future__ import annotations

import math

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
    risk_per_point = price - stop
    if risk_per_point <= 0:
        return BaseSizing(0.0, 0.0, 0.0, 0, "invalid_risk")
    if mode == "as_signalled":
        return _as_signalled_base(signal_lots, margin_available, instrument)
    lot_r = (
        (equity * (instrument.initial_risk_percent / 100.0)) / (risk_per_point * point_value)
    ) * er
    vol_per_lot = atr * point_value
    if vol_per_lot <= 0:
        return BaseSizing(lot_r, 0.0, 0.0, 0, "invalid_volatility")
    lot_v = (equity * (instrument.initial_vol_percent / 100.0)) / vol_per_lot
    lot_m = margin_available / instrument.margin_per_lot
    m = min(lot_r, lot_v, lot_m)
    if m == lot_r:
        limiter = "risk"
    elif m == lot_v:
        limiter = "volatility"
    else:
        limiter = "margin"
    return BaseSizing(lot_r, lot_v, lot_m, _floor_lots(m), limiter)


def _as_signalled_base(
    signal_lots: int, margin_available: float, instrument: InstrumentConfig
) -> BaseSizing:
    lot_m = margin_available / instrument.margin_per_lot
    if signal_lots <= 0:
        return BaseSizing(0.0, 0.0, lot_m, 0, "signal_lots")
    final = _floor_lots(min(signal_lots, lot_m))
    limiter = "margin" if lot_m <= signal_lots else "signal_lots"
    return BaseSizing(0.0, 0.0, lot_m, final, limiter)


def _floor_lots(value: float) -> int:
    """max(0, floor(value)); a non-finite value (only from absurd inputs) sizes nothing."""
    if not math.isfinite(value):
        # +inf cannot be floored; positive infinity needs degenerate inputs, so refuse it.
        return 0
    return max(0, math.floor(value))


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
    a = _floor_int(margin_available / instrument.margin_per_lot)
    risk_per_point = price - stop
    if mode == "as_signalled":
        if risk_per_point <= 0:
            return PyramidSizing(a, 0, 0, 0, "invalid_risk")
        if signal_lots <= 0:
            return PyramidSizing(a, 0, 0, 0, "signal_lots")
        final = max(0, min(signal_lots, a))
        return PyramidSizing(a, 0, 0, final, "margin" if a <= signal_lots else "signal_lots")
    b = _floor_int(base_lots * instrument.pyramid_base_ratio)
    if risk_per_point <= 0:
        return PyramidSizing(a, b, 0, 0, "invalid_risk")
    c = _floor_int(
        (profit_after_base_risk * instrument.pyramid_profit_fraction)
        / (risk_per_point * point_value)
    )
    m = min(a, b, c, signal_lots) if signal_lots > 0 else min(a, b, c)
    if m == a:
        limiter = "margin"
    elif m == b:
        limiter = "base_ratio"
    elif m == c:
        limiter = "risk_budget"
    else:
        limiter = "signal_lots"
    return PyramidSizing(a, b, c, max(0, m), limiter)


def _floor_int(value: float) -> int:
    """floor(value) as an int; non-finite values (degenerate inputs only) count as 0 lots."""
    if not math.isfinite(value):
        return 0
    return math.floor(value)


def peel_off(
    risk: float, vol: float, equity: float, lots: int, instrument: InstrumentConfig
) -> PeelOff:
    """Lots to peel off when an instrument's risk or volatility exceeds its ongoing limits."""
    if equity <= 0 or lots <= 0:
        return PeelOff(0, "")
    risk_limit = instrument.ongoing_risk_percent
    vol_limit = instrument.ongoing_vol_percent
    risk_pct = risk / equity * 100
    vol_pct = vol / equity * 100
    risk_hit = risk_pct > risk_limit
    vol_hit = vol_pct > vol_limit
    peels: list[int] = []
    if risk_hit:
        peels.append(math.ceil((risk - equity * risk_limit / 100) / (risk / lots)))
    if vol_hit:
        peels.append(math.ceil((vol - equity * vol_limit / 100) / (vol / lots)))
    lots_to_peel = max(0, min(max(peels), lots)) if peels else 0
    if risk_hit:
        message = f"risk_{risk_pct:.1f}%_exceeds_{float(risk_limit)!r}%"
        if vol_hit:
            message += f"_and_vol_{vol_pct:.1f}%"
    elif vol_hit:
        message = f"vol_{vol_pct:.1f}%_exceeds_{float(vol_limit)!r}%"
    else:
        message = ""
    return PeelOff(lots_to_peel, message)
