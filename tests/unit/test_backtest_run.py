"""The backtest fold (domain 11.3-11.5, architecture 5) over the live decision code."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pm_core.backtest import BacktestResult, TradeRow, parse_jsonl, parse_payloads, run
from pm_core.config import default_config
from tests.strategies import valid_payloads

CONFIG = default_config()
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "webhook_signals.jsonl"


def _payload(
    type_: str, position: str, price: float, when: str | int, **extra: Any
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "type": type_,
        "instrument": extra.pop("instrument", "BANK_NIFTY"),
        "position": position,
        "price": price,
        "stop": extra.pop("stop", 0),
        "lots": extra.pop("lots", 0),
        "atr": extra.pop("atr", 120),
        "er": extra.pop("er", 0.85),
        "supertrend": 0,
        "timestamp": when,
    }
    if type_ == "EXIT":
        payload["reason"] = extra.pop("reason", "Exit")
    payload.update(extra)
    return payload


def _closes(result: BacktestResult) -> list[tuple[str, int, float, float]]:
    return [(t.label, t.lots, t.exit_price or 0.0, t.pnl) for t in result.closed_trades]


# --------------------------------------------------------------------------- examples file


def test_examples_reproduce_the_webhook_trades() -> None:
    parsed = parse_jsonl(EXAMPLES.read_bytes(), EXAMPLES.name, CONFIG)
    result = run(parsed, CONFIG)
    bn = [t for t in result.trades if t.instrument == "BANK_NIFTY"]
    # webhook.md 1.3: first trade 1 lot closed at 51600 for -12,000; second trade 7 lots with
    # a 3-lot pyramid, a partial close of 3 (45,000) and EXIT ALL (72,000 + 27,000).
    assert [(t.label, t.lots, t.exit_price, t.pnl) for t in bn] == [
        ("Long_1", 1, 51600.0, -12000.0),
        ("Long_1", 3, 52500.0, 45000.0),
        ("Long_1", 4, 52600.0, 72000.0),
        ("Long_2", 3, 52600.0, 27000.0),
    ]
    blocked = [(b.type, b.outcome, [c.code for c in b.codes]) for b in result.blocked]
    assert blocked == [
        ("PYRAMID", "blocked", ["price_not_above_1r", "pyramid_zero_lots"]),
        ("EXIT", "rejected", ["position_not_open"]),
    ]
    assert result.blocked[0].messages == (
        "Price not > 1R (moved 200, need 350)",
        "Zero pyramid lots (limited by risk_budget)",
    )
    stats = result.stats
    assert stats.duplicates == 1  # the repeated PYRAMID line
    assert stats.signals_processed == 12 == len(result.equity_curve)
    assert {(e.line, e.code) for e in result.input_errors} == {
        (7, "unknown_value"),
        (7, "out_of_range"),
        (7, "not_a_number"),
        (7, "invalid_timestamp"),
    }
    assert stats.outcomes == {
        "BASE_ENTRY": {"blocked": 0, "executed": 3, "rejected": 0},
        "EXIT": {"blocked": 0, "executed": 5, "rejected": 1},
        "PYRAMID": {"blocked": 1, "executed": 2, "rejected": 0},
    }
    gold_open = [t for t in result.trades if t.exit_time is None]
    assert [(t.instrument, t.label, t.lots) for t in gold_open] == [("GOLD_MINI", "Long_1", 1)]
    assert result.trades[-1] is gold_open[0]  # still-open rows follow the closes


def test_result_identities_on_the_examples() -> None:
    result = run(parse_jsonl(EXAMPLES.read_text(), EXAMPLES.name, CONFIG), CONFIG)
    stats = result.stats
    closed_sum = 0.0
    for t in result.closed_trades:
        closed_sum += t.pnl
    open_sum = sum(t.pnl for t in result.trades if t.exit_time is None)
    assert stats.closed_pnl == pytest.approx(closed_sum, rel=1e-12)
    assert stats.final_equity == pytest.approx(5_000_000.0 + closed_sum + open_sum, rel=1e-12)
    assert result.final_equity == stats.final_equity == result.equity_curve[-1].open_equity
    assert stats.total_pnl == stats.final_equity - 5_000_000.0
    assert stats.return_pct == stats.total_pnl / 5_000_000.0 * 100
    assert stats.trades == len(result.closed_trades) == 6


# --------------------------------------------------------------------------- domain 12.11


def test_partial_exits_12_11() -> None:
    day = "2025-11-10T"
    signals = [
        _payload("BASE_ENTRY", "Long_1", 52000, day + "10:00:00", stop=51900, atr=100),
        _payload("PYRAMID", "Long_2", 52300, day + "10:10:00", stop=52100, lots=3),
        _payload("EXIT", "Long_1", 52400, day + "10:20:00", lots=2),
        _payload("BASE_ENTRY", "Long_1", 52400, day + "10:30:00", stop=52300, atr=100),
        _payload("PYRAMID", "Long_3", 52700, day + "10:40:00", stop=52500, atr=120),
        _payload("EXIT", "Long_2", 52800, day + "10:50:00", lots=1),
        _payload("EXIT", "Long_2", 52900, day + "11:00:00", lots=0),
        _payload("EXIT", "Long_3", 53000, day + "11:10:00", lots=5),
        _payload("EXIT", "ALL", 53100, day + "11:20:00", lots=1),
    ]
    result = run(signals, CONFIG)
    assert result.input_errors == ()
    assert _closes(result) == [
        ("Long_1", 2, 52400.0, 28000.0),
        ("Long_2", 1, 52800.0, 17500.0),
        ("Long_2", 2, 52900.0, 42000.0),
        ("Long_3", 2, 53000.0, 21000.0),
        ("Long_1", 4, 53100.0, 154000.0),
    ]
    first = result.closed_trades[0]
    assert first.r == 4.0  # 28,000 / (100 x 2 lots x 35)
    assert result.equity_curve[2].closed_equity == 5_028_000.0
    assert [(b.type, [c.code for c in b.codes]) for b in result.blocked] == [
        ("BASE_ENTRY", ["position_already_open"])
    ]
    assert all(t.exit_time is not None for t in result.trades)  # nothing left open


# --------------------------------------------------------------------------- fold rules


def test_order_is_a_stable_sort_by_instant() -> None:
    base = _payload("BASE_ENTRY", "Long_1", 52000, "2025-12-01T10:00:00", stop=51900, atr=100)
    # one instant written three ways: the EXIT (given first) is replayed first and rejected
    exit_z = _payload("EXIT", "Long_1", 52100, "2025-12-01T04:30:00Z")
    late = _payload("EXIT", "Long_1", 52500, 1764565200)  # epoch: 2025-12-01T05:00Z
    result = run([late, exit_z, base], CONFIG)
    assert [(b.type, b.outcome) for b in result.blocked] == [("EXIT", "rejected")]
    assert [t.exit_price for t in result.closed_trades] == [52500.0]
    stamps = [p.timestamp for p in result.equity_curve]
    assert stamps == sorted(stamps)


def test_duplicates_add_nothing_and_dedup_can_be_turned_off() -> None:
    base = _payload("BASE_ENTRY", "Long_1", 52000, "2025-12-01T10:00:00", stop=51900, atr=100)
    near = dict(base, timestamp="2025-12-01T10:00:40")
    signals = [base, base, near]
    deduped = run(signals, CONFIG)
    assert deduped.stats.duplicates == 2
    assert deduped.stats.signals_processed == 1 == len(deduped.equity_curve)
    assert deduped.blocked == ()
    plain = run(signals, CONFIG, dedup=False)
    assert plain.stats.duplicates == 0
    assert plain.stats.signals_processed == 3
    assert [c.code for b in plain.blocked for c in b.codes] == ["position_already_open"] * 2


def test_overrides_capital_and_sizing_mode() -> None:
    base = _payload("BASE_ENTRY", "Long_1", 52000, "2025-12-01T10:00:00", stop=51900, lots=2)
    tom = run([base], CONFIG, capital=10_000_000)
    assert tom.initial_capital == 10_000_000.0
    assert tom.equity_curve[0].closed_equity == 10_000_000.0
    assert tom.trades[0].lots > 2  # risk sizing on 10M
    signalled = run([base], CONFIG, sizing_mode="as-signalled")
    assert signalled.trades[0].lots == 2
    with pytest.raises(ValueError, match="sizing_mode"):
        run([base], CONFIG, sizing_mode="kelly")
    with pytest.raises(ValueError, match="capital"):
        run([base], CONFIG, capital=0)


def test_input_errors_of_payloads_and_extra_errors_are_reported() -> None:
    parsed = parse_payloads([{"type": "EXIT"}], CONFIG, source="x")
    payloads: list[Any] = [{}, "nope"]
    result = run(payloads, CONFIG, input_errors=parsed.errors)
    assert [(e.source, e.line, e.code) for e in result.input_errors] == [
        ("<signals>", 1, "empty_payload"),
        ("<signals>", 2, "not_an_object"),
        *[("x", 1, e.code) for e in parsed.errors],
    ]
    assert result.stats.signals_processed == 0
    assert result.stats.exposure_pct == 0.0
    assert result.final_equity == 5_000_000.0


def test_progress_is_reported_and_finishes_at_the_total() -> None:
    start = dt.datetime(2025, 12, 1, 4, 0, tzinfo=dt.UTC)
    signals = [
        _payload("EXIT", "Long_1", 52000, (start + dt.timedelta(minutes=2 * k)).isoformat())
        for k in range(5000)
    ]
    calls: list[tuple[int, int]] = []
    run(signals, CONFIG, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(4096, 5000), (5000, 5000)]


def test_open_positions_are_valued_at_the_last_mark() -> None:
    signals = [
        _payload("BASE_ENTRY", "Long_1", 52000, "2025-12-01T10:00:00", stop=51900, atr=100),
        _payload("EXIT", "Long_2", 52250, "2025-12-01T11:00:00"),  # rejected, but it marks
    ]
    result = run(signals, CONFIG)
    (row,) = result.trades
    assert isinstance(row, TradeRow)
    assert (row.exit_time, row.exit_price, row.exit_reason) == (None, None, None)
    assert row.pnl == 250.0 * row.lots * 30.0
    assert row.r == row.pnl / (100.0 * row.lots * 30.0)
    assert result.stats.trades == 0 and result.stats.win_rate_pct is None
    assert result.final_equity == 5_000_000.0 + row.pnl
    assert result.stats.closed_pnl == 0.0


# --------------------------------------------------------------------------- properties


@st.composite
def _sessions(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A random but plausible alert stream over both instruments."""
    out: list[dict[str, Any]] = []
    when = dt.datetime(2025, 11, 3, 4, 0, tzinfo=dt.UTC)
    prices = {"BANK_NIFTY": 52000.0, "GOLD_MINI": 78000.0}
    for _ in range(draw(st.integers(1, 30))):
        when += dt.timedelta(seconds=draw(st.sampled_from([0, 30, 61, 600, 3600])))
        inst = draw(st.sampled_from(sorted(prices)))
        prices[inst] = max(1000.0, prices[inst] + draw(st.integers(-400, 400)))
        price = prices[inst]
        type_ = draw(st.sampled_from(["BASE_ENTRY", "PYRAMID", "EXIT", "EXIT"]))
        label = draw(st.sampled_from(["Long_1", "Long_2", "Long_3", "ALL"]))
        if type_ != "EXIT" and label == "ALL":
            label = "Long_1"
        atr = draw(st.sampled_from([0, 100, 350]))
        out.append(
            _payload(
                type_,
                label,
                price,
                when.isoformat(),
                instrument=inst,
                stop=price - draw(st.sampled_from([0, 100, 400])),
                lots=draw(st.integers(0, 4)),
                atr=atr,
            )
        )
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_sessions(), st.booleans(), st.sampled_from(["tom_basso", "as_signalled"]))
def test_fold_invariants(signals: list[dict[str, Any]], dedup: bool, mode: str) -> None:
    result = run(signals, CONFIG, dedup=dedup, sizing_mode=mode)
    stats = result.stats
    assert stats.signals_processed + stats.duplicates == len(signals)
    assert len(result.equity_curve) == stats.signals_processed
    assert sum(n for counts in stats.outcomes.values() for n in counts.values()) == (
        stats.signals_processed
    )
    closed = 5_000_000.0
    for t in result.closed_trades:
        closed += t.pnl
        assert t.lots > 0
    assert math.isclose(stats.closed_pnl + 5_000_000.0, closed, rel_tol=1e-9)
    open_rows = [t for t in result.trades if t.exit_time is None]
    assert result.trades[len(result.trades) - len(open_rows) :] == tuple(open_rows)
    assert math.isclose(
        stats.final_equity, closed + sum(t.pnl for t in open_rows), rel_tol=1e-9, abs_tol=1e-6
    )
    assert 0.0 <= stats.exposure_pct <= 100.0
    assert stats.max_drawdown >= 0.0
    text = result.to_json()
    assert text == run(signals, CONFIG, dedup=dedup, sizing_mode=mode).to_json()
    assert json.loads(text) == result.document()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(valid_payloads(), max_size=12),
    st.sampled_from(["tom_basso", "as_signalled"]),
)
def test_any_valid_payloads_give_a_json_document(payloads: list[Any], mode: str) -> None:
    result = run(payloads, CONFIG, sizing_mode=mode)
    text = result.to_json()
    assert "NaN" not in text and "Infinity" not in text
    document = json.loads(text)
    assert len(document["equity_curve"]) == result.stats.signals_processed
    assert result.stats.signals_processed + result.stats.duplicates == len(payloads)


def test_a_tiny_bank_nifty_price_does_not_crash_the_fold() -> None:
    # Found by the property above: the ATM strike of a price below 250 used to be 0.
    entry = _payload("BASE_ENTRY", "Long_1", 1.0, "2025-12-01T10:00:00", lots=1)
    result = run([entry], CONFIG, sizing_mode="as_signalled")
    assert result.stats.signals_processed == 1


def test_an_entry_whose_contract_expires_in_2100_does_not_crash_the_fold() -> None:
    # Found by the property above: a contract in year 2100 has no DDMMMYY name.
    entry = _payload("BASE_ENTRY", "Long_1", 78000, "2099-12-20T10:00:00", instrument="GOLD_MINI",
                     stop=77500, atr=400)  # fmt: skip
    result = run([entry], CONFIG)
    assert result.stats.signals_processed == 1
