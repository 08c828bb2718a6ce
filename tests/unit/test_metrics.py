"""Equity views and portfolio risk/volatility/margin metrics (domain 8, 12.5 S7-S16)."""

from __future__ import annotations

import pytest

from pm_core.config import PortfolioConfig, default_config, gold_mini
from pm_core.metrics import (
    equity_view,
    instrument_open_pnl,
    margin_available,
    percent_of,
    position_risk,
    position_vol,
    risk_totals,
)
from tests.unit import vectors as v

BN35 = v.bn35()
GOLD = gold_mini()
CONFIG = default_config()
E = 5_000_000.0


G = v.position(GOLD, id=1, lots=3, entry=78500.0, stop=77500.0, current_stop=78000.0, atr=150.0)
B = v.position(BN35, id=2, lots=5, entry=52000.0, stop=51700.0, current_stop=51800.0, atr=200.0)


def test_s7_gold_only() -> None:
    t = risk_totals([G], CONFIG)
    assert (t.risk, t.vol, t.margin_used, t.lots) == (15_000.0, 4_500.0, 315_000.0, 3)
    assert percent_of(t.risk, E) == pytest.approx(0.3, rel=1e-9)
    assert percent_of(t.vol, E) == pytest.approx(0.09, rel=1e-9)
    assert percent_of(t.margin_used, E) == pytest.approx(6.3, rel=1e-9)


def test_s8_gold_and_bank_nifty() -> None:
    t = risk_totals([G, B], CONFIG)
    assert (t.risk, t.vol) == (50_000.0, 39_500.0)
    assert percent_of(t.risk, E) == pytest.approx(1.0, rel=1e-9)
    assert percent_of(t.vol, E) == pytest.approx(0.79, rel=1e-9)
    assert t.by_instrument["GOLD_MINI"] == (15_000.0, 4_500.0, 3)
    assert t.by_instrument["BANK_NIFTY"] == (35_000.0, 35_000.0, 5)
    assert percent_of(t.by_instrument["GOLD_MINI"][0], E) == pytest.approx(0.3, rel=1e-9)
    assert percent_of(t.by_instrument["BANK_NIFTY"][0], E) == pytest.approx(0.7, rel=1e-9)


def test_s9_margin() -> None:
    t = risk_totals([G, B], CONFIG)
    assert t.margin_used == 1_665_000.0
    assert percent_of(t.margin_used, E) == pytest.approx(33.3, rel=1e-9)
    assert margin_available(E, t.margin_used, CONFIG.portfolio) == 1_335_000.0
    assert margin_available(E, 4_000_000.0, CONFIG.portfolio) == 0.0


def test_s16_equity_modes() -> None:
    pos = v.position(BN35, unrealized_pnl=100_000.0)
    views = {
        mode: equity_view(E, [pos], PortfolioConfig(equity_mode=mode))
        for mode in ("closed", "open", "blended")
    }
    assert views["closed"].sizing == 5_000_000.0
    assert views["open"].sizing == 5_100_000.0
    assert views["blended"].sizing == 5_050_000.0
    for view in views.values():
        assert (view.closed, view.open, view.unrealized) == (E, 5_100_000.0, 100_000.0)
    weighted = equity_view(E, [pos], PortfolioConfig(blended_unrealized_weight=0.25))
    assert weighted.sizing == 5_025_000.0


def test_registered_instruments_all_reported() -> None:
    t = risk_totals([], CONFIG)
    assert (t.risk, t.vol, t.margin_used, t.lots) == (0.0, 0.0, 0.0, 0)
    assert set(t.by_instrument) == {"BANK_NIFTY", "GOLD_MINI"}


def test_live_statuses_count_closed_do_not() -> None:
    pending = v.position(
        GOLD, id=3, lots=1, entry=78500.0, stop=78000.0, atr=0.0, status="pending_open"
    )
    closing = v.position(
        GOLD, id=4, lots=1, entry=78500.0, stop=78000.0, atr=100.0, status="closing"
    )
    closed = v.position(GOLD, id=5, lots=9, entry=78500.0, stop=78000.0, status="closed")
    t = risk_totals([pending, closing, closed], CONFIG)
    assert t.lots == 2
    assert t.vol == 450.0 * 10.0 + 100.0 * 10.0  # pending has no ATR: fallback 450
    assert t.risk == 2 * 500.0 * 10.0


def test_risk_never_negative_and_vol_fallback() -> None:
    above = v.position(BN35, entry=52000.0, stop=51000.0, current_stop=52500.0, atr=0.0, lots=2)
    assert position_risk(above) == 0.0
    assert position_vol(above, BN35) == 350.0 * 2 * 35.0


def test_percent_with_non_positive_equity() -> None:
    assert percent_of(10_000.0, 0.0) == 0.0
    assert percent_of(10_000.0, -5.0) == 0.0
    assert margin_available(-1.0, 0.0, CONFIG.portfolio) == 0.0


def test_instrument_open_pnl_includes_rollover_pnl() -> None:
    a = v.position(BN35, id=1, unrealized_pnl=1_000.0, rollover_realized_pnl=250.0)
    b = v.position(BN35, id=2, label="Long_2", unrealized_pnl=-100.0, status="partial")
    c = v.position(GOLD, id=3, unrealized_pnl=9_999.0)
    d = v.position(BN35, id=4, label="Long_3", unrealized_pnl=5.0, status="closed")
    assert instrument_open_pnl([a, b, c, d], "BANK_NIFTY") == 1_150.0
    assert instrument_open_pnl([a, b, c, d], "GOLD_MINI") == 9_999.0


def test_sums_in_opening_order() -> None:
    # Opening order matters for floats: (0.1 + 0.2) + 0.3 != 0.1 + (0.2 + 0.3).
    ps = [
        v.position(BN35, id=i, label=f"Long_{i}", unrealized_pnl=u)
        for i, u in enumerate((0.1, 0.2, 0.3), start=1)
    ]
    assert equity_view(0.0, ps, PortfolioConfig(equity_mode="open")).unrealized == (0.1 + 0.2) + 0.3
    assert instrument_open_pnl(ps, "BANK_NIFTY") == (0.0 + 0.1 + 0.2) + 0.3
