"""Reason-code messages and outcomes (domain 6.4, 9.13, 13.5)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pm_core.codes import format_float, outcome_of, render
from pm_core.model import Code

FP = "c68174e192421b604f85474a9f0d3b30d0b7d9657ce4a3e4825c6a55798095d1"

CASES = [
    (
        "instrument_disabled",
        {"instrument": "GOLD_MINI"},
        "rejected",
        "Instrument GOLD_MINI is disabled",
    ),
    (
        "instrument_blocked",
        {"instrument": "BANK_NIFTY", "reason": "reconciliation"},
        "rejected",
        "New entries on BANK_NIFTY are blocked (reconciliation)",
    ),
    (
        "position_already_open",
        {"key": "BANK_NIFTY_Long_1"},
        "rejected",
        "Position BANK_NIFTY_Long_1 is already open",
    ),
    (
        "base_already_open",
        {"instrument": "BANK_NIFTY", "key": "BANK_NIFTY_Long_1"},
        "rejected",
        "BANK_NIFTY already has an open base position BANK_NIFTY_Long_1",
    ),
    (
        "position_not_open",
        {"key": "GOLD_MINI_Long_2"},
        "rejected",
        "Position GOLD_MINI_Long_2 is not open",
    ),
    (
        "position_not_open",
        {"instrument": "GOLD_MINI"},
        "rejected",
        "No open positions for GOLD_MINI",
    ),
    ("stale_in_queue", {"max_age": 60}, "rejected", "Queued longer than 60s"),
    ("no_base_position", {}, "blocked", "No base position"),
    ("max_pyramids_reached", {"open": 5, "max": 5}, "blocked", "Max pyramids reached (5/5)"),
    (
        "invalid_risk",
        {"stop": 53000.0, "price": 53000.0},
        "blocked",
        "Stop 53000.0 is not below price 53000.0",
    ),
    (
        "invalid_risk",
        {"stop": 52100, "price": 52000},
        "blocked",
        "Stop 52100.0 is not below price 52000.0",
    ),
    ("invalid_volatility", {"atr": 0.0}, "blocked", "ATR must be > 0 to size (got 0.0)"),
    ("zero_lots", {"limiter": "margin"}, "blocked", "Zero lots (limited by margin)"),
    (
        "equity_non_positive",
        {"equity": -1_000_000.4},
        "blocked",
        "Equity \u20b9-1,000,000 is not positive",
    ),
    (
        "portfolio_risk_limit",
        {"x": 15.04, "limit": 15.0},
        "blocked",
        "Portfolio risk would be 15.0% (limit: 15.0%)",
    ),
    (
        "portfolio_vol_limit",
        {"x": 5.78, "limit": 5.0},
        "blocked",
        "Portfolio volatility would be 5.8% (limit: 5.0%)",
    ),
    ("invalid_initial_risk", {}, "blocked", "Invalid initial risk"),
    (
        "price_not_above_1r",
        {"move": 350.0, "r": 350.0},
        "blocked",
        "Price not > 1R (moved 350, need 350)",
    ),
    ("atr_spacing", {"x": 1 / 3, "min": 0.5}, "blocked", "ATR spacing 0.333 < 0.5"),
    (
        "pyramid_portfolio_risk",
        {"x": 12.4, "limit": 12.0},
        "blocked",
        "Portfolio risk would be 12.4% (block at 12.0%)",
    ),
    (
        "pyramid_portfolio_vol",
        {"x": 4.25, "limit": 4.0},
        "blocked",
        "Portfolio vol would be 4.2% (block at 4.0%)",
    ),
    (
        "instrument_pnl_not_positive",
        {"pnl": -12345.6},
        "blocked",
        "Instrument P&L not positive: \u20b9-12,346",
    ),
    (
        "pyramid_zero_lots",
        {"limiter": "base_ratio"},
        "blocked",
        "Zero pyramid lots (limited by base_ratio)",
    ),
    ("order_failed", {"detail": "RMS reject"}, "failed", "Broker order failed: RMS reject"),
    (
        "broker_mode_mismatch",
        {"mode": "analyze", "expected": "live"},
        "failed",
        "Broker mode analyze, expected live",
    ),
    ("abandoned_after_crash", {"age": 312.6}, "failed", "Abandoned after a crash (313s old)"),
    (
        "duplicate_fingerprint",
        {"fingerprint": FP},
        "duplicate",
        "Signal already processed (c68174e19242)",
    ),
    (
        "duplicate_near_window",
        {"window": 60, "original_ts": "2025-11-28T16:00:00+05:30"},
        "duplicate",
        "Same instrument/type/position processed within 60s (2025-11-28T16:00:00+05:30)",
    ),
    (
        "stop_fallback_atr",
        {"stop": 0.0, "effective": 51475.0},
        "warning",
        "Signal stop 0.0 unusable; ATR stop 51475.0 used",
    ),
    (
        "stop_hit",
        {"key": "G", "price": 77900.0, "stop": 78000.0},
        "event",
        "Stop hit: price 77900.0 < stop 78000.0",
    ),
    (
        "no_reference_price",
        {"symbols": ["BANKNIFTY27JAN26FUT", "BANKNIFTY"]},
        "failed",
        "Could not get reference price (tried: BANKNIFTY27JAN26FUT, BANKNIFTY)",
    ),
    (
        "quote_unavailable",
        {"symbol": "GOLDM05JAN26FUT"},
        "failed",
        "Could not get LTP for GOLDM05JAN26FUT",
    ),
    (
        "leg_failed",
        {"step": "close old PE", "detail": "rejected"},
        "failed",
        "Failed to close old PE: rejected",
    ),
]


@pytest.mark.parametrize(("code", "params", "outcome", "message"), CASES)
def test_messages_and_outcomes(
    code: str, params: dict[str, object], outcome: str, message: str
) -> None:
    assert render(Code(code, params)) == message
    assert outcome_of(code) == outcome


def test_unknown_code_renders_its_name() -> None:
    assert render(Code("something_new", {"x": 1})) == "something_new"
    assert outcome_of("something_new") == "rejected"


def test_bad_params_never_raise() -> None:
    assert (
        render(Code("price_not_above_1r", {"move": "far"}))
        == "Price not > 1R (moved far, need {r})"
    )
    assert (
        render(Code("equity_non_positive", {"equity": None})) == "Equity \u20b9None is not positive"
    )
    assert render(Code("duplicate_fingerprint")) == "Signal already processed (?)"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (53000.0, "53000.0"),
        (53000, "53000.0"),
        (0.333, "0.333"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1e16, "10000000000000000.0"),
        (1e-7, "0.0000001"),
        (-2.5e-5, "-0.000025"),
    ],
)
def test_format_float(value: float, text: str) -> None:
    assert format_float(value) == text


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_format_float_round_trips_with_a_point(value: float) -> None:
    text = format_float(value)
    assert "." in text and "e" not in text
    assert float(text) == value


@given(
    st.sampled_from([case[0] for case in CASES] + ["rolled", "leg_timeout", "nope"]),
    st.dictionaries(
        st.sampled_from(["x", "limit", "stop", "price", "equity", "pnl", "key", "move", "r"]),
        st.one_of(
            st.none(), st.floats(), st.integers(), st.text(max_size=5), st.lists(st.integers())
        ),
    ),
)
def test_render_never_raises(code: str, params: dict[str, object]) -> None:
    assert isinstance(render(Code(code, params)), str)
