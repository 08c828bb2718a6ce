"""Backtest input parsers: JSONL webhook logs and TradingView CSV exports (domain 11.1, 11.2)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from pm_core.backtest import (
    InputIssue,
    ParsedInput,
    combine,
    parse_jsonl,
    parse_payloads,
    parse_tradingview_csv,
)
from pm_core.config import default_config
from pm_core.errors import InputError as InputFileError
from pm_core.model import Signal

CONFIG = default_config()
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "examples" / "tradingview_gold_mini_export.csv"
HEADER = "Trade #,Type,Date/Time,Signal,Price INR,Position size (qty),Net P&L INR"

BASE = {
    "type": "BASE_ENTRY",
    "instrument": "BANK_NIFTY",
    "position": "Long_1",
    "price": 52000,
    "stop": 51650,
    "lots": 5,
    "atr": 350,
    "er": 0.82,
    "supertrend": 51650,
    "timestamp": "2025-11-28T10:30:00Z",
}


def _csv(*rows: str) -> str:
    return "\n".join((HEADER, *rows)) + "\n"


def _signals(parsed: ParsedInput) -> list[Signal]:
    return [s.signal for s in parsed.signals]


# --------------------------------------------------------------------------- JSONL


def test_jsonl_reports_every_line_problem_with_its_line() -> None:
    bad = dict(BASE, price=-100, atr=-1)
    text = "\n".join(
        [
            json.dumps(BASE),
            "",
            "   ",
            "{not json",
            json.dumps(bad),
            '"just a string"',
            "{}",
            json.dumps(dict(BASE, timestamp="2025-11-28T10:31:00Z")),
        ]
    )
    parsed = parse_jsonl(text, "log.jsonl", CONFIG)
    assert [(s.source, s.line) for s in parsed.signals] == [("log.jsonl", 1), ("log.jsonl", 8)]
    assert [(e.line, e.code, e.field) for e in parsed.errors] == [
        (4, "not_json", None),
        (5, "out_of_range", "price"),
        (5, "out_of_range", "atr"),
        (6, "not_an_object", "payload"),
        (7, "empty_payload", "payload"),
    ]
    assert all(e.source == "log.jsonl" for e in parsed.errors)
    assert parsed.errors[1].message == "price must be > 0, got -100.0"


def test_jsonl_bytes_with_bom_crlf_and_a_fast_decoder_give_the_same_result() -> None:
    text = json.dumps(BASE) + "\r\n" + '{"price": NaN}\r\n'
    as_text = parse_jsonl(text, "a", CONFIG)
    calls: list[object] = []

    def strict_loads(raw: str | bytes) -> Any:
        calls.append(raw)
        return json.loads(raw, parse_constant=_refuse)

    as_bytes = parse_jsonl(b"\xef\xbb\xbf" + text.encode(), "a", CONFIG, loads=strict_loads)
    assert as_text == as_bytes
    assert len(calls) == 2
    # NaN is read by the json.loads retry, so it is a field error, not a JSON error
    assert ("price", "not_finite") in [(e.field, e.code) for e in as_bytes.errors]
    assert "not_json" not in [e.code for e in as_bytes.errors]


def _refuse(name: str) -> Any:
    raise ValueError(name)


def test_hostile_lines_are_input_errors_not_crashes() -> None:
    lines = ["[" * 100_000, '{"type": ' * 50_000, "\x00", json.dumps(BASE)]
    parsed = parse_jsonl("\n".join(lines), "x", CONFIG)
    assert [(e.line, e.code) for e in parsed.errors] == [(1, "not_json"), (2, "not_json"),
                                                         (3, "not_json")]  # fmt: skip
    assert [s.line for s in parsed.signals] == [4]
    raw = b"\xff\xfe{}\n" + json.dumps(BASE).encode()
    assert [e.code for e in parse_jsonl(raw, "x", CONFIG).errors] == ["not_json"]


def test_payloads_are_numbered_from_one() -> None:
    parsed = parse_payloads([BASE, {"type": 5}, BASE], CONFIG)
    assert [s.line for s in parsed.signals] == [1, 3]
    assert {e.line for e in parsed.errors} == {2}
    assert all(e.source == "<signals>" for e in parsed.errors)


def test_combine_keeps_input_order() -> None:
    a = parse_payloads([BASE], CONFIG, source="a")
    b = parse_payloads([{}], CONFIG, source="b")
    both = combine([a, b])
    assert [s.source for s in both.signals] == ["a"]
    assert both.errors == (InputIssue("b", 1, "empty_payload", "Payload is empty", "payload"),)


# --------------------------------------------------------------------------- CSV fixture


def test_fixture_every_row_is_accounted_for() -> None:
    text = FIXTURE.read_text(encoding="utf-8")
    data_rows = len(text.splitlines()) - 1
    parsed = parse_tradingview_csv(
        text, "GOLD_MINI", FIXTURE.name, CONFIG, sizing_mode="as_signalled"
    )
    acc = parsed.accounts[FIXTURE.name]
    assert acc.rows == data_rows == 742
    assert acc.rows == (
        acc.entry_rows + acc.exit_rows + acc.open_exits + acc.short_rows + acc.other_rows
    )
    assert acc.entry_rows == (acc.entries + acc.collapsed_entry_rows + acc.entry_error_rows)
    assert acc.exit_rows == (
        acc.exits + acc.collapsed_exit_rows + acc.exit_error_rows + acc.exits_after_entry_error
    )
    # 371 entry rows, of which trades 241 and 242 are one split order; 371 exit rows.
    assert (acc.entry_rows, acc.exit_rows, acc.open_exits) == (371, 371, 0)
    assert (acc.entries, acc.collapsed_entry_rows, acc.exits) == (370, 1, 371)
    assert len(parsed.signals) == acc.entries + acc.exits == 741
    assert parsed.errors == ()
    # a plain export has no ATR: every entry warns and uses the fallback ATR (450)
    assert len(parsed.warnings) == 370
    assert {w.code for w in parsed.warnings} == {"atr_fallback"}
    entries = [s for s in _signals(parsed) if s.type != "EXIT"]
    assert {s.atr for s in entries} == {450.0}
    assert sum(1 for s in entries if s.type == "PYRAMID") == 2
    times = [s.timestamp for s in _signals(parsed)]
    assert times == sorted(times)


def test_fixture_in_tom_basso_reports_missing_atr_once_per_entry() -> None:
    text = FIXTURE.read_text(encoding="utf-8")
    parsed = parse_tradingview_csv(text, "GOLD_MINI", FIXTURE.name, CONFIG)
    acc = parsed.accounts[FIXTURE.name]
    assert parsed.signals == ()
    assert len(parsed.errors) == 370  # the split order reports once
    assert {e.code for e in parsed.errors} == {"missing_atr"}
    assert acc.entry_error_rows == 371
    assert acc.exits_after_entry_error == 371
    lines = [e.line for e in parsed.errors]
    assert lines == sorted(lines) and lines[0] == 3  # trade 1's entry is the file's 3rd line


def test_fixture_split_trade_241_242_243() -> None:
    text = FIXTURE.read_text(encoding="utf-8")
    parsed = parse_tradingview_csv(text, "GOLD_MINI", "f.csv", CONFIG, sizing_mode="as_signalled")
    day = [
        s.signal
        for s in parsed.signals
        if s.signal.timestamp.astimezone(IST).date() == dt.date(2022, 2, 24)
    ]
    assert [(s.type, s.position, s.lots, s.timestamp.astimezone(IST).hour) for s in day] == [
        ("BASE_ENTRY", "Long_1", 30, 9),
        ("PYRAMID", "Long_2", 15, 15),
        ("EXIT", "Long_1", 15, 17),
        ("EXIT", "Long_1", 0, 20),
        ("EXIT", "Long_2", 0, 20),
    ]
    assert day[0].price == 51313.0
    assert day[2].reason == "EXIT - Basso Stop"


# --------------------------------------------------------------------------- CSV rules


def test_metadata_tokens_fill_the_signal() -> None:
    text = _csv(
        "1,Entry long,2025-01-06 10:00,ENTRY-5L|ATR:350|er:0.82|STOP:51650|ST:51600|POS:Long_1"
        "|HI:1|FOO:bar,52000,5,0",
        "1,Exit long,2025-01-07 10:00,EXIT - Basso Stop|ATR:360,52500,5,0",
    )
    parsed = parse_tradingview_csv(text, "bank_nifty", "bn.csv", CONFIG)
    entry, exit_ = _signals(parsed)
    assert (entry.type, entry.instrument, entry.position, entry.lots) == (
        "BASE_ENTRY",
        "BANK_NIFTY",
        "Long_1",
        5,
    )
    assert (entry.atr, entry.er, entry.stop, entry.supertrend) == (350.0, 0.82, 51650.0, 51600.0)
    assert entry.timestamp == dt.datetime(2025, 1, 6, 10, 0, tzinfo=IST)
    assert (exit_.type, exit_.position, exit_.lots, exit_.atr, exit_.reason) == (
        "EXIT",
        "Long_1",
        0,
        360.0,
        "EXIT - Basso Stop",
    )
    assert parsed.errors == () and parsed.warnings == ()


def test_entry_defaults_lots_from_qty_labels_from_pyr_and_exit_label_from_trade() -> None:
    text = _csv(
        "1,Entry long,2025-01-06 10:00,EOD-ENTRY|ATR:300,52000,4,0",
        "2,Entry long,2025-01-06 11:00,PYR2-3L|ATR:300,52400,9,0",
        "1,Exit long,2025-01-06 12:00,,52600,4,0",
        "2,Exit long,2025-01-06 12:00,EXIT|POS:Long_5,52600,3,0",
        "3,Exit long,2025-01-06 13:00,EXIT - Orphan,52600,3,0",
    )
    parsed = parse_tradingview_csv(text, "BANK_NIFTY", "bn.csv", CONFIG)
    got = [(s.type, s.position, s.lots, s.stop, s.er, s.reason) for s in _signals(parsed)]
    assert got == [
        ("BASE_ENTRY", "Long_1", 4, 0.0, 1.0, None),
        ("PYRAMID", "Long_3", 3, 0.0, 1.0, None),
        ("EXIT", "Long_1", 0, 0.0, 1.0, "EXIT"),
        ("EXIT", "Long_5", 0, 0.0, 1.0, "EXIT"),
        ("EXIT", "Long_1", 0, 0.0, 1.0, "EXIT - Orphan"),
    ]


def test_open_exits_other_rows_and_short_rows() -> None:
    text = _csv(
        "1,Entry long,2025-01-06 10:00,ENTRY-2L|ATR:300,52000,2,0",
        "1,Exit long,2025-01-09 10:00, open ,52600,2,0",
        "2,Entry short,2025-01-07 10:00,SHORT-1L,52000,1,0",
        "2,Exit short,2025-01-08 10:00,COVER,51000,1,0",
        "3,Dividend,2025-01-08 10:00,,0,0,0",
    )
    parsed = parse_tradingview_csv(text, "BANK_NIFTY", "bn.csv", CONFIG)
    acc = parsed.accounts["bn.csv"]
    assert (acc.rows, acc.open_exits, acc.short_rows, acc.other_rows) == (5, 1, 2, 1)
    assert [s.type for s in _signals(parsed)] == ["BASE_ENTRY"]
    assert [(e.line, e.code) for e in parsed.errors] == [
        (4, "unsupported_direction"),
        (5, "unsupported_direction"),
    ]


def test_split_trade_with_an_open_member_never_closes_the_rest() -> None:
    text = _csv(
        "1,Entry long,2025-01-06 10:00,ENTRY-6L|ATR:300,52000,2,0",
        "2,Entry long,2025-01-06 10:00,ENTRY-6L|ATR:300,52000,4,0",
        "1,Exit long,2025-01-07 10:00,EXIT,52500,2,0",
        "2,Exit long,2025-01-09 10:00,Open,52600,4,0",
    )
    parsed = parse_tradingview_csv(text, "BANK_NIFTY", "bn.csv", CONFIG)
    assert [(s.type, s.lots) for s in _signals(parsed)] == [("BASE_ENTRY", 6), ("EXIT", 2)]


def test_split_exits_at_one_time_collapse_and_the_last_closes_what_remains() -> None:
    text = _csv(
        "1,Entry long,2025-01-06 10:00,ENTRY-9L|ATR:300,52000,2,0",
        "2,Entry long,2025-01-06 10:00,ENTRY-9L|ATR:300,52000,3,0",
        "3,Entry long,2025-01-06 10:00,ENTRY-9L|ATR:300,52000,4,0",
        "1,Exit long,2025-01-07 10:00,EXIT,52500,2,0",
        "2,Exit long,2025-01-07 10:00,EXIT,52500,3,0",
        "3,Exit long,2025-01-08 10:00,EXIT,52700,4,0",
    )
    parsed = parse_tradingview_csv(text, "BANK_NIFTY", "bn.csv", CONFIG)
    assert [(s.signal.type, s.signal.lots, s.line) for s in parsed.signals] == [
        ("BASE_ENTRY", 9, 2),
        ("EXIT", 5, 5),
        ("EXIT", 0, 7),
    ]
    acc = parsed.accounts["bn.csv"]
    assert (acc.collapsed_entry_rows, acc.collapsed_exit_rows) == (2, 1)


def test_order_is_time_then_exits_first_then_trade_number() -> None:
    text = _csv(
        "10,Entry long,2025-01-06 12:00,ENTRY-1L|ATR:300,52000,1,0",
        "9,Exit long,2025-01-06 12:00,EXIT,52000,1,0",
        "9,Entry long,2025-01-06 09:30,ENTRY-1L|ATR:300,51000,1,0",
        "11,Entry long,2025-01-06 12:00,PYR1-1L|ATR:300,52000,1,0",
        "10,Exit long,2025-01-06 14:00,EXIT,52000,1,0",
        "11,Exit long,2025-01-06 14:00,EXIT,52000,1,0",
    )
    parsed = parse_tradingview_csv(text, "BANK_NIFTY", "bn.csv", CONFIG)
    assert [s.line for s in parsed.signals] == [4, 3, 2, 5, 6, 7]


def test_entry_errors_skip_their_exits_and_report_once() -> None:
    text = _csv(
        "1,Entry long,2025-01-06 10:00,PYR6-2L|ATR:300,52000,2,0",
        "1,Exit long,2025-01-07 10:00,EXIT,52500,2,0",
        "2,Entry long,2025-01-08 10:00,ENTRY-2L|ATR:abc,52000,2,0",
        "2,Exit long,2025-01-09 10:00,EXIT,52500,2,0",
        "3,Entry long,2025-01-10,ENTRY-2L|ATR:300,52000,2,0",
    )
    parsed = parse_tradingview_csv(text, "BANK_NIFTY", "bn.csv", CONFIG)
    assert parsed.signals == ()
    assert [(e.line, e.field, e.code) for e in parsed.errors] == [
        (2, "position", "unknown_value"),  # PYR6 -> Long_7 > max_layers
        (4, "atr", "not_a_number"),
        (6, "timestamp", "invalid_timestamp"),
    ]
    assert parsed.accounts["bn.csv"].exits_after_entry_error == 2


def test_as_signalled_needs_lots() -> None:
    text = _csv("1,Entry long,2025-01-06 10:00,ENTRY,52000,0,0")
    parsed = parse_tradingview_csv(text, "BANK_NIFTY", "bn.csv", CONFIG, sizing_mode="as_signalled")
    assert [(e.code, e.line) for e in parsed.errors] == [("missing_lots", 2)]
    tom = parse_tradingview_csv(text, "BANK_NIFTY", "bn.csv", CONFIG)
    assert [e.code for e in tom.errors] == ["missing_atr"]


def test_unreadable_files_raise_input_error() -> None:
    with pytest.raises(InputFileError, match="unknown instrument"):
        parse_tradingview_csv(_csv(), "SILVER", "s.csv", CONFIG)
    with pytest.raises(InputFileError, match="empty file"):
        parse_tradingview_csv("", "GOLD_MINI", "s.csv", CONFIG)
    with pytest.raises(InputFileError, match="line 2"):
        parse_tradingview_csv(_csv('1,Entry long,2025-01-06 10:00,"' + "x" * 200_000 + '",1,1,0'),
                              "GOLD_MINI", "s.csv", CONFIG)  # fmt: skip
    with pytest.raises(InputFileError, match="Price <currency>"):
        parse_tradingview_csv("Trade #,Type,Date/Time,Signal,Position size (qty)\n", "GOLD_MINI",
                              "s.csv", CONFIG)  # fmt: skip
