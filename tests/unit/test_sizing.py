"""Sizing vectors of domain 12.1-12.3 and sizing properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pm_core.config import PortfolioConfig, SizingMode, bank_nifty, gold_mini
from pm_core.marking import effective_stop, mark
from pm_core.metrics import (
    equity_view,
    instrument_open_pnl,
    margin_available,
    position_risk,
)
from pm_core.model import BaseSizing, PyramidSizing
from pm_core.sizing import PeelOff, peel_off, size_base, size_pyramid
from tests.unit import vectors as v

BN35 = v.bn35()
GOLD = gold_mini()
E = 5_000_000.0


def bn(
    price: float = 52000.0,
    stop: float = 51650.0,
    atr: float = 350.0,
    er: float = 0.82,
    *,
    equity: float = E,
    m: float = 3_000_000.0,
    n: int = 0,
    mode: SizingMode = "tom_basso",
) -> BaseSizing:
    return size_base(price, stop, atr, er, n, equity, m, BN35, 35.0, mode)


# --------------------------------------------------------------------------- 12.1 base


def test_p2_p3_p5_risk_limited() -> None:
    s = bn()
    assert (repr(s.lot_r), repr(s.lot_v), repr(s.lot_m)) == (
        "1.673469387755102",
        "2.0408163265306123",
        "11.11111111111111",
    )
    assert (s.final, s.limiter) == (1, "risk")
    assert isinstance(s.final, int)


def test_p4_margin_two_lots_risk_still_limits() -> None:
    s = bn(m=540_000.0)
    assert s.lot_m == 2.0
    assert (s.final, s.limiter) == (1, "risk")


def test_p6a_volatility_limited() -> None:
    s = bn(52000.0, 51900.0, 200.0, 0.8)
    assert repr(s.lot_r) == "5.714285714285715"
    assert repr(s.lot_v) == "3.5714285714285716"
    assert s.lot_m == pytest.approx(11.11111111111111, rel=1e-9)
    assert (s.final, s.limiter) == (3, "volatility")


def test_p6b_margin_limited_to_zero() -> None:
    s = bn(er=0.8, m=100_000.0)
    assert repr(s.lot_r) == "1.6326530612244898"
    assert repr(s.lot_v) == "2.0408163265306123"
    assert repr(s.lot_m) == "0.37037037037037035"
    assert (s.final, s.limiter) == (0, "margin")


def test_p7_stop_above_price_is_invalid_risk() -> None:
    assert bn(52000.0, 52100.0, 350.0, 0.8) == BaseSizing(0.0, 0.0, 0.0, 0, "invalid_risk")
    # Flow level the unusable stop falls back to the ATR stop, which sizes normally.
    stop, fallback = effective_stop(52000.0, 52100.0, 350.0, BN35)
    assert (stop, fallback) == (51475.0, True)
    assert bn(52000.0, stop, 350.0, 0.8).final == 1


def test_p8_gold_volatility_limited() -> None:
    s = size_base(78500.0, 77800.0, 450.0, 0.85, 0, E, 3_000_000.0, GOLD, 10.0, "tom_basso")
    assert (repr(s.lot_r), repr(s.lot_v), repr(s.lot_m)) == (
        "3.0357142857142856",
        "2.2222222222222223",
        "28.571428571428573",
    )
    assert (s.final, s.limiter) == (2, "volatility")


@pytest.mark.parametrize(
    ("er", "lot_r"), [(0.90, "1.836734693877551"), (0.50, "1.0204081632653061")]
)
def test_p12_efficiency_ratio_scales_lot_r(er: float, lot_r: str) -> None:
    assert repr(bn(er=er).lot_r) == lot_r


def test_p14_no_margin() -> None:
    s = bn(m=0.0)
    assert s.lot_m == 0.0
    assert (s.final, s.limiter) == (0, "margin")


def test_p15_zero_equity() -> None:
    s = bn(equity=0.0, m=100_000.0)
    assert (s.lot_r, s.lot_v) == (0.0, 0.0)
    assert repr(s.lot_m) == "0.37037037037037035"
    assert (s.final, s.limiter) == (0, "risk")


def test_p18_equity_scaling() -> None:
    a = bn(equity=1_000_000.0, m=600_000.0)
    assert repr(a.lot_r) == "0.33469387755102037"
    assert (a.final, a.limiter) == (0, "risk")
    assert (bn().final, bn().limiter) == (1, "risk")
    c = bn(equity=10_000_000.0, m=6_000_000.0)
    assert (repr(c.lot_r), repr(c.lot_v)) == ("3.346938775510204", "4.081632653061225")
    assert c.lot_m == pytest.approx(22.22222222222222, rel=1e-9)
    assert (c.final, c.limiter) == (3, "risk")


def test_x1_zero_atr_invalid_volatility() -> None:
    s = bn(atr=0.0)
    assert repr(s.lot_r) == "1.673469387755102"
    assert (s.lot_v, s.lot_m, s.final, s.limiter) == (0.0, 0.0, 0, "invalid_volatility")


def test_x2_negative_equity() -> None:
    s = bn(equity=-1_000_000.0)
    assert s.lot_r == pytest.approx(-0.3346938775510204, rel=1e-9)
    assert s.lot_v == pytest.approx(-0.40816326530612246, rel=1e-9)
    assert s.lot_m == pytest.approx(11.11111111111111, rel=1e-9)
    assert (s.final, s.limiter) == (0, "volatility")


def test_x3_zero_er() -> None:
    s = bn(er=0.0)
    assert s.lot_r == 0.0
    assert (s.final, s.limiter) == (0, "risk")


def test_x4_fallback_stop() -> None:
    s = bn(stop=51475.0)
    assert repr(s.lot_r) == "1.1156462585034013"
    assert (s.final, s.limiter) == (1, "risk")


def test_x5_december_series_pv_30() -> None:
    s = size_base(52000.0, 51650.0, 350.0, 0.82, 0, E, 3e6, bank_nifty(), 30.0, "tom_basso")
    assert (repr(s.lot_r), repr(s.lot_v)) == ("1.9523809523809523", "2.380952380952381")
    assert (s.final, s.limiter) == (1, "risk")


def test_exact_ties_name_risk_then_volatility() -> None:
    # E 3.5M, 100 points of risk, ATR 100: lot_r = lot_v = lot_m = 5.0 exactly.
    three = bn(52000.0, 51900.0, 100.0, 1.0, equity=3_500_000.0, m=1_350_000.0)
    assert (three.lot_r, three.lot_v, three.lot_m) == (5.0, 5.0, 5.0)
    assert (three.final, three.limiter) == (5, "risk")
    two = bn(52000.0, 51900.0, 100.0, 2.0, equity=3_500_000.0, m=1_350_000.0)
    assert (two.lot_r, two.lot_v, two.lot_m) == (10.0, 5.0, 5.0)
    assert (two.final, two.limiter) == (5, "volatility")


# --------------------------------------------------------------------------- 5.3 as_signalled


def test_as_signalled_caps_by_signal_then_margin() -> None:
    s = bn(n=5, mode="as_signalled")
    assert s == BaseSizing(0.0, 0.0, 3_000_000.0 / 270_000.0, 5, "signal_lots")
    s = bn(n=12, mode="as_signalled")
    assert (s.final, s.limiter) == (11, "margin")


def test_as_signalled_tie_names_margin() -> None:
    s = bn(n=5, m=1_350_000.0, mode="as_signalled")
    assert (s.lot_m, s.final, s.limiter) == (5.0, 5, "margin")


def test_as_signalled_non_positive_lots() -> None:
    for n in (0, -3):
        s = bn(n=n, mode="as_signalled")
        assert (s.lot_r, s.lot_v, s.final, s.limiter) == (0.0, 0.0, 0, "signal_lots")
        assert s.lot_m == 3_000_000.0 / 270_000.0


def test_as_signalled_checks_stop_first() -> None:
    for stop in (52000.0, 52100.0):
        s = bn(stop=stop, n=0, mode="as_signalled")
        assert s == BaseSizing(0.0, 0.0, 0.0, 0, "invalid_risk")


def test_as_signalled_ignores_atr_and_equity() -> None:
    s = bn(atr=0.0, equity=-1.0, n=3, mode="as_signalled")
    assert (s.final, s.limiter) == (3, "signal_lots")


# --------------------------------------------------------------------------- 12.2 pyramid


def pyr(
    m: float,
    base_lots: int,
    profit: float,
    n: int = 0,
    stop: float = 52000.0,
    mode: SizingMode = "tom_basso",
) -> PyramidSizing:
    return size_pyramid(52500.0, stop, m, base_lots, profit, n, BN35, 35.0, mode)


def test_p9_margin() -> None:
    assert pyr(1_000_000.0, 10, 150_000.0) == PyramidSizing(3, 5, 4, 3, "margin")


def test_p9n_signal_cap() -> None:
    assert pyr(1_000_000.0, 10, 150_000.0, n=2) == PyramidSizing(3, 5, 4, 2, "signal_lots")


def test_p13_base_ratio() -> None:
    assert pyr(2_000_000.0, 10, 500_000.0) == PyramidSizing(7, 5, 14, 5, "base_ratio")


def test_y1_invalid_risk() -> None:
    assert pyr(2e6, 10, 500_000.0, stop=52600.0) == PyramidSizing(7, 5, 0, 0, "invalid_risk")


def test_y2_negative_profit_budget() -> None:
    s = pyr(2e6, 10, -100_000.0)
    assert s == PyramidSizing(7, 5, -3, 0, "risk_budget")


def test_y3_flow_profit_after_base_risk() -> None:
    base = v.position(BN35, lots=10, entry=52000.0, stop=51650.0)
    marked = mark([base], BN35, 52500.0, 350.0, v.TS0, None)
    open_pnl = instrument_open_pnl(marked.positions, "BANK_NIFTY")
    assert open_pnl == 175_000.0
    anchor = marked.positions[0]
    base_risk = (
        max(0.0, anchor.entry_price - anchor.initial_stop) * anchor.lots * anchor.point_value
    )
    assert base_risk == 122_500.0 == position_risk(base)
    profit = open_pnl - base_risk
    assert profit == 52_500.0
    assert pyr(2e6, 10, profit) == PyramidSizing(7, 5, 1, 1, "risk_budget")
    # Domain 13.9: in the full flow E is blended and M = 352,500, so A = 1 and margin limits.
    portfolio = PortfolioConfig()
    equity = equity_view(5_000_000.0, marked.positions, portfolio).sizing
    assert equity == 5_087_500.0
    m = margin_available(equity, 10 * 270_000.0, portfolio)
    assert m == 352_500.0
    assert pyr(m, 10, profit) == PyramidSizing(1, 5, 1, 1, "margin")


def test_pyramid_as_signalled() -> None:
    assert pyr(2e6, 10, -1e9, n=3, mode="as_signalled") == PyramidSizing(7, 0, 0, 3, "signal_lots")
    assert pyr(2e6, 10, 0.0, n=9, mode="as_signalled") == PyramidSizing(7, 0, 0, 7, "margin")
    assert pyr(2e6, 10, 0.0, n=7, mode="as_signalled").limiter == "margin"
    assert pyr(2e6, 10, 0.0, n=0, mode="as_signalled") == PyramidSizing(7, 0, 0, 0, "signal_lots")
    assert pyr(2e6, 10, 0.0, n=3, stop=52500.0, mode="as_signalled") == PyramidSizing(
        7, 0, 0, 0, "invalid_risk"
    )


# --------------------------------------------------------------------------- 12.3 peel-off


@pytest.mark.parametrize(
    ("risk", "vol", "lots", "inst", "expected"),
    [
        (140_000.0, 105_000.0, 10, BN35, PeelOff(7, "risk_2.8%_exceeds_1.0%_and_vol_2.1%")),
        (7_000.0, 3_500.0, 2, BN35, PeelOff(0, "")),
        (140_000.0, 350_000.0, 20, BN35, PeelOff(18, "risk_2.8%_exceeds_1.0%_and_vol_7.0%")),
        (40_000.0, 30_000.0, 10, GOLD, PeelOff(5, "vol_0.6%_exceeds_0.3%")),
    ],
    ids=["P10", "P11", "P17", "Z1"],
)
def test_peel_off_vectors(
    risk: float, vol: float, lots: int, inst: object, expected: PeelOff
) -> None:
    assert peel_off(risk, vol, E, lots, inst) == expected  # type: ignore[arg-type]


def test_peel_off_risk_only_and_degenerate() -> None:
    assert peel_off(60_000.0, 0.0, E, 4, BN35) == PeelOff(1, "risk_1.2%_exceeds_1.0%")
    assert peel_off(1e9, 1e9, 0.0, 4, BN35) == PeelOff(0, "")
    assert peel_off(1e9, 1e9, -5.0, 4, BN35) == PeelOff(0, "")
    assert peel_off(1e9, 1e9, E, 0, BN35) == PeelOff(0, "")
    # Never more than the lots held.
    assert peel_off(1e9, 0.0, E, 4, BN35).lots_to_peel == 4


# --------------------------------------------------------------------------- properties

modes = st.sampled_from(["tom_basso", "as_signalled"])


@given(
    v.prices,
    st.floats(min_value=-1000.0, max_value=210_000.0),
    v.atrs,
    v.ers,
    v.signal_lots,
    v.equities,
    v.equities,
    v.margins,
    v.instruments,
    modes,
)
def test_base_final_never_negative_and_monotone_in_equity(
    price: float,
    stop: float,
    atr: float,
    er: float,
    n: int,
    e1: float,
    e2: float,
    m: float,
    inst: object,
    mode: SizingMode,
) -> None:
    lo, hi = sorted((e1, e2))
    pv = inst.lot_size_history[0].lot_size / inst.quote_unit  # type: ignore[attr-defined]
    a = size_base(price, stop, atr, er, n, lo, m, inst, pv, mode)  # type: ignore[arg-type]
    b = size_base(price, stop, atr, er, n, hi, m, inst, pv, mode)  # type: ignore[arg-type]
    assert 0 <= a.final <= b.final
    for s in (a, b):
        assert isinstance(s.final, int)
        assert s.lot_r == s.lot_r and s.lot_v == s.lot_v and s.lot_m == s.lot_m  # no NaN


@given(
    v.prices,
    st.floats(min_value=-1000.0, max_value=210_000.0),
    v.equities,
    v.equities,
    st.floats(min_value=0.0, max_value=1e7),
    st.integers(min_value=0, max_value=60),
    st.floats(min_value=-1e7, max_value=1e7),
    v.signal_lots,
    modes,
)
def test_pyramid_final_never_negative_and_monotone_in_equity(
    price: float,
    stop: float,
    e1: float,
    e2: float,
    used: float,
    base_lots: int,
    profit: float,
    n: int,
    mode: SizingMode,
) -> None:
    lo, hi = sorted((e1, e2))
    portfolio = PortfolioConfig()
    results = [
        size_pyramid(
            price,
            stop,
            margin_available(e, used, portfolio),
            base_lots,
            profit,
            n,
            BN35,
            35.0,
            mode,
        )
        for e in (lo, hi)
    ]
    assert 0 <= results[0].final <= results[1].final
    assert all(r.final <= r.a for r in results)
