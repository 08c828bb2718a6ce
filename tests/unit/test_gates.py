"""Base-entry and pyramid gates (domain 6.1, 6.2, 12.4 gate vectors, 13.5)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pm_core.codes import render
from pm_core.config import PortfolioConfig, default_config
from pm_core.gates import base_entry_gate, pyramid_gates
from pm_core.metrics import RiskTotals, risk_totals
from pm_core.model import Code, PyramidSizing
from tests.unit import vectors as v

BN35 = v.bn35()
PORTFOLIO = PortfolioConfig()
E = 5_000_000.0
ANCHOR = v.position(BN35, lots=10, entry=52000.0, stop=51650.0)
OK_SIZE = PyramidSizing(3, 5, 4, 3, "margin")


def totals(risk: float = 0.0, vol: float = 0.0) -> RiskTotals:
    return RiskTotals(risk=risk, vol=vol, margin_used=0.0, lots=0, by_instrument={})


def pyramid(
    price: float,
    *,
    stop: float = 52000.0,
    atr: float = 350.0,
    sizing: PyramidSizing = OK_SIZE,
    anchor: object = ANCHOR,
    last: float | None = None,
    equity: float = E,
    tot: RiskTotals | None = None,
    pnl: float = 100_000.0,
    portfolio: PortfolioConfig = PORTFOLIO,
) -> list[Code]:
    report = pyramid_gates(
        price,
        stop,
        atr,
        sizing,
        anchor,  # type: ignore[arg-type]
        last,
        equity,
        tot or totals(),
        pnl,
        35.0,
        BN35,
        portfolio,
    )
    return list(report.codes)


# --------------------------------------------------------------------------- 6.1 base gate


def test_base_gate_passes_and_blocks_strictly() -> None:
    # Limit 25 % so that the projected percent is exactly representable: 25.0 passes.
    portfolio = PortfolioConfig(max_portfolio_risk_percent=25.0)
    # new risk = 350 x 4 x 35 = 49,000
    at_limit = totals(risk=1_250_000.0 - 49_000.0)
    assert base_entry_gate(52000.0, 51650.0, 350.0, 4, 35.0, E, at_limit, BN35, portfolio) == ()
    over = totals(risk=1_250_000.0 - 49_000.0 + 1.0)
    (code,) = base_entry_gate(52000.0, 51650.0, 350.0, 4, 35.0, E, over, BN35, portfolio)
    assert code.code == "portfolio_risk_limit"
    assert code.params["limit"] == 25.0
    assert code.params["x"] == pytest.approx(25.00002, rel=1e-9)
    assert render(code) == "Portfolio risk would be 25.0% (limit: 25.0%)"


def test_base_gate_evaluates_risk_and_vol() -> None:
    codes = base_entry_gate(
        52000.0, 51650.0, 350.0, 4, 35.0, E, totals(740_000.0, 240_000.0), BN35, PORTFOLIO
    )
    assert [c.code for c in codes] == ["portfolio_risk_limit", "portfolio_vol_limit"]
    # vol: (240,000 + 350 x 4 x 35) / 5M x 100 = 5.78 %
    assert render(codes[1]) == "Portfolio volatility would be 5.8% (limit: 5.0%)"
    assert render(codes[0]) == "Portfolio risk would be 15.8% (limit: 15.0%)"


def test_base_gate_vol_uses_fallback_atr_when_atr_zero() -> None:
    # fallback 350: 350 x 20 x 35 = 245,000 -> 4.9 % passes; 21 lots -> 5.145 % blocks.
    tot = totals()
    assert base_entry_gate(52000.0, 51990.0, 0.0, 20, 35.0, E, tot, BN35, PORTFOLIO) == ()
    (code,) = base_entry_gate(52000.0, 51990.0, 0.0, 21, 35.0, E, tot, BN35, PORTFOLIO)
    assert code.code == "portfolio_vol_limit"


@pytest.mark.parametrize("equity", [0.0, -1_000_000.0])
def test_base_gate_non_positive_equity(equity: float) -> None:
    codes = base_entry_gate(
        52000.0, 51650.0, 350.0, 4, 35.0, equity, totals(1e9, 1e9), BN35, PORTFOLIO
    )
    assert codes == (Code("equity_non_positive", {"equity": equity}),)


# --------------------------------------------------------------------------- 12.4 pyramid vectors


def test_1r_gate_boundary() -> None:
    codes = pyramid(52350.0)
    assert codes == [Code("price_not_above_1r", {"move": 350.0, "r": 350.0})]
    assert render(codes[0]) == "Price not > 1R (moved 350, need 350)"
    assert pyramid(52351.0) == []


def test_atr_spacing_boundary() -> None:
    assert pyramid(52575.0, last=52400.0) == []
    (code,) = pyramid(52574.0, last=52400.0)
    assert code.code == "atr_spacing" and code.params["min"] == 0.5
    assert render(code) == "ATR spacing 0.497 < 0.5"


def test_pyramid_portfolio_risk_uses_computed_size() -> None:
    tot = totals(risk=550_000.0)
    two = PyramidSizing(7, 5, 9, 2, "risk_budget")
    four = PyramidSizing(7, 5, 4, 4, "risk_budget")
    assert pyramid(52500.0, sizing=two, tot=tot) == []
    (code,) = pyramid(52500.0, sizing=four, tot=tot)
    assert code.code == "pyramid_portfolio_risk"
    assert render(code) == "Portfolio risk would be 12.4% (block at 12.0%)"


def test_pyramid_portfolio_vol() -> None:
    # (190,000 + 350 x 1 x 35) / 5M = 4.045 % > 4.0
    (code,) = pyramid(
        52500.0, sizing=PyramidSizing(7, 5, 9, 1, "margin"), tot=totals(vol=190_000.0)
    )
    assert render(code) == "Portfolio vol would be 4.0% (block at 4.0%)"


def test_all_failures_collected_in_rule_order() -> None:
    report = pyramid_gates(
        52100.0,
        52000.0,
        350.0,
        PyramidSizing(7, 5, -3, 0, "risk_budget"),
        ANCHOR,
        None,
        E,
        totals(risk=700_000.0, vol=300_000.0),
        -5_000.0,
        35.0,
        BN35,
        PORTFOLIO,
    )
    assert [c.code for c in report.codes] == [
        "price_not_above_1r",
        "atr_spacing",
        "pyramid_portfolio_risk",
        "pyramid_portfolio_vol",
        "instrument_pnl_not_positive",
        "pyramid_zero_lots",
    ]
    assert report.codes[4] == Code("instrument_pnl_not_positive", {"pnl": -5_000.0})
    assert report.codes[5] == Code("pyramid_zero_lots", {"limiter": "risk_budget"})
    # Reported figures: current (not projected) percents.
    assert report.price_move_r == 100.0 / 350.0
    assert report.atr_spacing == 100.0 / 350.0
    assert report.risk_percent == pytest.approx(14.0, rel=1e-9)
    assert report.vol_percent == pytest.approx(6.0, rel=1e-9)


def test_invalid_risk_replaces_zero_lots() -> None:
    codes = pyramid(52500.0, stop=52600.0, sizing=PyramidSizing(7, 5, 0, 0, "invalid_risk"))
    assert codes == [Code("invalid_risk", {"stop": 52600.0, "price": 52500.0})]
    assert render(codes[0]) == "Stop 52600.0 is not below price 52500.0"


def test_invalid_initial_risk() -> None:
    bad = v.position(BN35, entry=52000.0, stop=52000.0)
    report = pyramid_gates(
        52500.0, 52000.0, 350.0, OK_SIZE, bad, None, E, totals(), 1.0, 35.0, BN35, PORTFOLIO
    )
    assert [c.code for c in report.codes] == ["invalid_initial_risk"]
    assert report.price_move_r == 0.0


def test_without_1r_gate_spacing_still_applies() -> None:
    portfolio = PortfolioConfig(use_1r_gate=False)
    assert pyramid(52100.0, atr=100.0, portfolio=portfolio) == []
    (code,) = pyramid(52100.0, last=52090.0, atr=100.0, portfolio=portfolio)
    assert code.code == "atr_spacing"


def test_zero_atr_spacing_is_zero() -> None:
    report = pyramid_gates(
        52500.0, 52000.0, 0.0, OK_SIZE, ANCHOR, None, E, totals(), 1.0, 35.0, BN35, PORTFOLIO
    )
    assert report.atr_spacing == 0.0
    assert [c.code for c in report.codes] == ["atr_spacing"]


def test_as_signalled_skips_instrument_and_profit_gates() -> None:
    portfolio = PortfolioConfig(sizing_mode="as_signalled")
    assert pyramid(52100.0, pnl=-1.0, last=52099.0, portfolio=portfolio) == []
    codes = pyramid(
        52100.0, pnl=-1.0, sizing=PyramidSizing(7, 0, 0, 0, "signal_lots"), portfolio=portfolio
    )
    assert codes == [Code("pyramid_zero_lots", {"limiter": "signal_lots"})]


def test_pyramid_non_positive_equity_keeps_other_checks() -> None:
    codes = pyramid(52100.0, equity=0.0, pnl=0.0, tot=totals(1e9, 1e9))
    assert [c.code for c in codes] == [
        "price_not_above_1r",
        "atr_spacing",
        "equity_non_positive",
        "instrument_pnl_not_positive",
    ]
    assert render(codes[2]) == "Equity \u20b90 is not positive"


def test_gates_with_real_totals() -> None:
    # Domain 12.4 with totals computed from positions: BN anchor 122,500 + Gold 427,500.
    gold = v.position(
        default_config().instrument("GOLD_MINI"), id=2, lots=5, entry=78500.0, stop=69950.0
    )
    tot = risk_totals([ANCHOR, gold], default_config())
    assert tot.risk == 550_000.0
    assert pyramid(52500.0, sizing=PyramidSizing(7, 5, 9, 2, "risk_budget"), tot=tot) == []
    (code,) = pyramid(52500.0, sizing=PyramidSizing(7, 5, 4, 4, "risk_budget"), tot=tot)
    assert render(code) == "Portfolio risk would be 12.4% (block at 12.0%)"


@given(
    v.prices,
    st.floats(min_value=-1e6, max_value=210_000.0),
    v.atrs,
    st.integers(min_value=0, max_value=500),
    v.equities,
    st.floats(min_value=0.0, max_value=1e9),
    st.floats(min_value=0.0, max_value=1e9),
    st.floats(min_value=-1e9, max_value=1e9),
    st.sampled_from(["tom_basso", "as_signalled"]),
)
def test_gates_never_produce_nan(
    price: float,
    stop: float,
    atr: float,
    final: int,
    equity: float,
    risk: float,
    vol: float,
    pnl: float,
    mode: str,
) -> None:
    portfolio = PortfolioConfig(sizing_mode=mode)  # type: ignore[arg-type]
    tot = totals(risk, vol)
    codes = list(base_entry_gate(price, stop, atr, final, 35.0, equity, tot, BN35, portfolio))
    report = pyramid_gates(
        price,
        stop,
        atr,
        PyramidSizing(final, final, final, final, "margin"),
        ANCHOR,
        None,
        equity,
        tot,
        pnl,
        35.0,
        BN35,
        portfolio,
    )
    codes.extend(report.codes)
    numbers = [report.price_move_r, report.atr_spacing, report.risk_percent, report.vol_percent]
    numbers += [x for c in codes for x in c.params.values() if isinstance(x, float)]
    assert not any(math.isnan(x) for x in numbers)
    if equity <= 0:
        assert Code("equity_non_positive", {"equity": equity}) in codes
    for code in codes:
        assert render(code) != code.code
