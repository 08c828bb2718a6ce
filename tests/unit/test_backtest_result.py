"""The backtest result document (domain 11.4, 13.8): key order, numbers, timestamps, bytes."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from pm_core.backtest import (
    BacktestResult,
    BlockedRow,
    EquityPoint,
    InputIssue,
    Statistics,
    TradeRow,
    parse_jsonl,
    run,
)
from pm_core.config import default_config
from pm_core.model import Code

CONFIG = default_config()
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "webhook_signals.jsonl"
UTC = dt.UTC


def _stats(**overrides: object) -> Statistics:
    values: dict[str, object] = {
        "final_equity": 5_000_000.0,
        "total_pnl": 0.0,
        "closed_pnl": 0.0,
        "return_pct": 0.0,
        "max_drawdown": 0.0,
        "max_drawdown_pct": 0.0,
        "trades": 0,
        "win_rate_pct": None,
        "gross_profit": 0.0,
        "gross_loss": 0.0,
        "profit_factor": None,
        "average_r": None,
        "exposure_pct": 0.0,
        "signals_processed": 0,
        "duplicates": 0,
        "outcomes": {"PYRAMID": {"rejected": 0, "executed": 1, "blocked": 2}, "EXIT": {}},
    }
    values.update(overrides)
    return Statistics(**values)  # type: ignore[arg-type]


def _result(**overrides: object) -> BacktestResult:
    values: dict[str, object] = {
        "initial_capital": 5_000_000.0,
        "final_equity": 5_000_000.0,
        "total_pnl": 0.0,
        "stats": _stats(),
        "trades": (),
        "blocked": (),
        "equity_curve": (),
        "input_errors": (),
    }
    values.update(overrides)
    return BacktestResult(**values)  # type: ignore[arg-type]


def test_keys_are_in_spec_order() -> None:
    doc = parse_and_run().document()
    assert list(doc) == [
        "initial_capital",
        "final_equity",
        "total_pnl",
        "stats",
        "trades",
        "blocked",
        "equity_curve",
        "input_errors",
    ]
    assert list(doc["stats"]) == [
        "final_equity",
        "total_pnl",
        "closed_pnl",
        "return_pct",
        "max_drawdown",
        "max_drawdown_pct",
        "trades",
        "win_rate_pct",
        "gross_profit",
        "gross_loss",
        "profit_factor",
        "average_r",
        "exposure_pct",
        "signals_processed",
        "duplicates",
        "outcomes",
    ]
    assert list(doc["stats"]["outcomes"]) == ["BASE_ENTRY", "EXIT", "PYRAMID"]
    assert list(doc["stats"]["outcomes"]["EXIT"]) == ["blocked", "executed", "rejected"]
    assert list(doc["trades"][0]) == [
        "instrument",
        "label",
        "is_base",
        "entry_time",
        "entry_price",
        "exit_time",
        "exit_price",
        "lots",
        "pnl",
        "r",
        "exit_reason",
    ]
    assert list(doc["blocked"][0]) == [
        "timestamp",
        "instrument",
        "type",
        "label",
        "outcome",
        "codes",
        "messages",
    ]
    assert list(doc["equity_curve"][0]) == [
        "timestamp",
        "closed_equity",
        "open_equity",
        "sizing_equity",
    ]
    assert list(doc["input_errors"][0]) == ["source", "line", "code", "message"]


def parse_and_run() -> BacktestResult:
    return run(parse_jsonl(EXAMPLES.read_bytes(), EXAMPLES.name, CONFIG), CONFIG)


def test_json_is_byte_deterministic_and_compact() -> None:
    first = parse_and_run().to_json()
    second = parse_and_run().to_json()
    assert first == second
    assert first.startswith('{"initial_capital":5000000.0,"final_equity":')
    assert "\n" not in first


def test_sorted_outcome_keys_even_when_built_out_of_order() -> None:
    doc = _result().document()
    assert doc["stats"]["outcomes"] == {
        "EXIT": {},
        "PYRAMID": {"blocked": 2, "executed": 1, "rejected": 0},
    }
    assert list(doc["stats"]["outcomes"]["PYRAMID"]) == ["blocked", "executed", "rejected"]


def test_numbers_money_floats_counts_ints_non_finite_null() -> None:
    row = TradeRow(
        "GOLD_MINI",
        "Long_1",
        True,
        dt.datetime(2025, 11, 28, 9, 30, tzinfo=UTC),
        78500,  # an int price still prints as a float
        None,
        None,
        2,
        float("inf"),
        float("nan"),
        None,
    )
    text = _result(trades=(row,), stats=_stats(return_pct=1e-7)).to_json()
    doc = json.loads(text)
    assert '"entry_price":78500.0' in text
    assert '"lots":2' in text
    assert doc["trades"][0]["pnl"] is None and doc["trades"][0]["r"] is None
    assert doc["stats"]["return_pct"] == 1e-7
    assert '"win_rate_pct":null' in text
    assert "NaN" not in text and "Infinity" not in text


def test_timestamps_are_iso_in_ist_with_microseconds_only_when_present() -> None:
    points = (
        EquityPoint(dt.datetime(2025, 11, 28, 5, 0, tzinfo=UTC), 1.0, 1.0, 1.0),
        EquityPoint(dt.datetime(2025, 11, 28, 5, 0, 0, 250000, tzinfo=UTC), 1.0, 1.0, 1.0),
        EquityPoint(dt.datetime(2025, 11, 28, 23, 59, 59, tzinfo=UTC), 1.0, 1.0, 1.0),
    )
    doc = _result(equity_curve=points).document()
    assert [p["timestamp"] for p in doc["equity_curve"]] == [
        "2025-11-28T10:30:00+05:30",
        "2025-11-28T10:30:00.250000+05:30",
        "2025-11-29T05:29:59+05:30",
    ]


def test_blocked_rows_carry_codes_with_params_and_messages() -> None:
    row = BlockedRow(
        dt.datetime(2025, 11, 28, 5, 5, tzinfo=UTC),
        "BANK_NIFTY",
        "PYRAMID",
        "Long_2",
        "blocked",
        (Code("price_not_above_1r", {"move": 200.0, "r": 350.0}),),
        ("Price not > 1R (moved 200, need 350)",),
    )
    doc = _result(blocked=(row,)).document()
    assert doc["blocked"] == [
        {
            "timestamp": "2025-11-28T10:35:00+05:30",
            "instrument": "BANK_NIFTY",
            "type": "PYRAMID",
            "label": "Long_2",
            "outcome": "blocked",
            "codes": [{"code": "price_not_above_1r", "params": {"move": 200.0, "r": 350.0}}],
            "messages": ["Price not > 1R (moved 200, need 350)"],
        }
    ]


def test_input_errors_list_no_field() -> None:
    error = InputIssue("a.jsonl", 3, "missing", "price is required", "price")
    doc = _result(input_errors=(error,)).document()
    assert doc["input_errors"] == [
        {"source": "a.jsonl", "line": 3, "code": "missing", "message": "price is required"}
    ]


def test_rupee_sign_is_written_as_utf8_text() -> None:
    row = BlockedRow(
        dt.datetime(2025, 11, 28, 5, 5, tzinfo=UTC),
        "BANK_NIFTY",
        "PYRAMID",
        "Long_2",
        "blocked",
        (Code("instrument_pnl_not_positive", {"pnl": -4500.0}),),
        ("Instrument P&L not positive: \u20b9-4,500",),
    )
    assert "\u20b9-4,500" in _result(blocked=(row,)).to_json()
