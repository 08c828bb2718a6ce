"""Helpers the backtest fold leans on: equity figures, instant and expiry memos, fill lots."""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pm_core import calendar as cal
from pm_core import orders
from pm_core.calendar import format_expiry
from pm_core.config import PortfolioConfig, default_config, gold_mini
from pm_core.decide import _filled_lots
from pm_core.metrics import equity_figures, equity_view
from pm_core.model import Fill, Leg, OrderIntent, Signal, instant_us
from pm_core.signal import fingerprint, utc_second_text
from tests.unit import vectors as v

GOLD = gold_mini()
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))


@pytest.mark.parametrize("mode", ["closed", "open", "blended"])
def test_equity_figures_are_equity_view(mode: str) -> None:
    live = v.position(GOLD, id=1, unrealized_pnl=1234.5)
    closed = v.position(GOLD, id=2, status="closed", unrealized_pnl=99.0)
    portfolio = PortfolioConfig(equity_mode=mode, blended_unrealized_weight=0.3)  # type: ignore[arg-type]
    view = equity_view(1_000_000.0, [live, closed], portfolio)
    figures = equity_figures(1_000_000.0, [live, closed], portfolio)
    assert figures == (view.open, view.sizing, view.unrealized)
    assert view.unrealized == 1234.5


def test_instant_us_remembers_only_the_same_object() -> None:
    first = dt.datetime(2025, 11, 28, 16, 0, 0, 1, tzinfo=IST)
    same_instant = dt.datetime(2025, 11, 28, 10, 30, 0, 1, tzinfo=dt.UTC)
    later = first + dt.timedelta(microseconds=1)
    assert instant_us(first) == 1764325800000001
    assert instant_us(first) == 1764325800000001
    assert instant_us(same_instant) == 1764325800000001
    assert instant_us(later) == 1764325800000002
    assert instant_us(first) == 1764325800000001


def test_format_expiry_memo_keeps_rejecting_bad_years() -> None:
    assert format_expiry(dt.date(2025, 12, 30)) == "30DEC25"
    assert format_expiry(dt.date(2025, 12, 30)) == "30DEC25"
    for _ in range(2):
        with pytest.raises(ValueError, match="2100"):
            format_expiry(dt.date(2100, 1, 28))


def _intent(cid: str, leg: Leg, quantity: int, lots: int) -> OrderIntent:
    return OrderIntent(
        cid, "signal", 1, leg, 1, 1, "SYM", "NFO", "BUY", "NRML", "MARKET", quantity, lots, 1.0, "g"
    )


def _fill(cid: str, quantity: int, price: str | None, state: str = "filled") -> Fill:
    return Fill(cid, quantity, None if price is None else Decimal(price), state)  # type: ignore[arg-type]


def test_filled_lots_all_filled_one_order_per_leg() -> None:
    intents = [_intent("a", "CE", 60, 2), _intent("b", "PE", 60, 2)]
    fills = {"a": _fill("a", 60, "10.5"), "b": _fill("b", 60, "3")}
    assert _filled_lots(intents, fills) == (
        2,
        {"CE": Decimal("10.5"), "PE": Decimal("3")},
        None,
        "",
    )
    # Nothing filled although "filled": no price, no lots.
    assert _filled_lots([intents[0]], {"a": _fill("a", 0, "10.5")}) == (0, {"CE": None}, None, "")


def test_filled_lots_split_leg_and_failures_take_the_general_path() -> None:
    children = [_intent("a.1", "FUT", 3, 3), _intent("a.2", "FUT", 2, 2)]
    fills = {"a.1": _fill("a.1", 3, "100"), "a.2": _fill("a.2", 2, "110")}
    assert _filled_lots(children, fills) == (5, {"FUT": Decimal(104)}, None, "")
    partial = {"a.1": _fill("a.1", 3, "100"), "a.2": _fill("a.2", 1, "110", "cancelled")}
    lots, averages, failure, detail = _filled_lots(children, partial)
    assert (lots, averages["FUT"], failure, detail) == (
        4,
        Decimal(410) / 4,
        partial["a.2"],
        "SYM BUY 2 cancelled",
    )
    lots, averages, failure, detail = _filled_lots(children, {"a.1": fills["a.1"]})
    assert (lots, failure, detail) == (3, None, "SYM BUY 2 not filled")


@pytest.mark.parametrize("enabled", [True, False])
def test_run_restores_the_collector_state(enabled: bool) -> None:
    from pm_core.backtest import run
    from pm_core.config import default_config

    was = gc.isenabled()
    try:
        if enabled:
            gc.enable()
        else:
            gc.disable()
        run([], default_config())
        assert gc.isenabled() is enabled

        def stop(done: int, total: int) -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            run([], default_config(), progress=stop)
        assert gc.isenabled() is enabled
    finally:
        if was:
            gc.enable()
        else:
            gc.disable()


@pytest.mark.parametrize("freeze", [None, 100])
@pytest.mark.parametrize("named", [True, False])
def test_position_entry_legs_are_entry_legs(freeze: int | None, named: bool) -> None:
    config = default_config()
    bn = attrs.evolve(config.instruments["BANK_NIFTY"], freeze_quantity=freeze)
    gold = config.instruments["GOLD_MINI"]
    for inst, strike in ((bn, 52000.0), (gold, None)):
        contract = cal.contract_for(inst, 2025, 12, config)
        symbols: dict[str, Any] = {}
        if named:
            root, expiry = inst.symbol_root, contract.expiry
            if strike is None:
                symbols = {"futures_symbol": cal.futures_symbol(root, expiry)}
            else:
                symbols = {
                    "ce_symbol": cal.option_symbol(root, expiry, strike, "CE"),
                    "pe_symbol": cal.option_symbol(root, expiry, strike, "PE"),
                }
        position = v.position(
            inst,
            lot_size=contract.lot_size,
            expiry=contract.expiry,
            strike=strike,
            **symbols,
        )
        assert orders.position_entry_legs(inst, position, 8, 52100.0) == orders.entry_legs(
            inst, contract, strike, 8, 52100.0
        )
    with pytest.raises(ValueError, match="strike"):
        orders.position_entry_legs(bn, v.position(bn, strike=None), 1, 52100.0)


def test_stamper_texts_follow_the_instant_not_the_wall_time() -> None:
    from zoneinfo import ZoneInfo

    from pm_core.backtest.result import _Stamper

    new_york = ZoneInfo("America/New_York")
    stamp = _Stamper(new_york)
    # 01:30 twice on 2025-11-02: equal as wall times in one zone, an hour apart as instants.
    first = dt.datetime(2025, 11, 2, 1, 30, tzinfo=new_york)
    second = first.replace(fold=1)
    assert first == second
    assert stamp(first) == "2025-11-02T01:30:00-04:00"
    assert stamp(second) == "2025-11-02T01:30:00-05:00"
    assert stamp(first) == "2025-11-02T01:30:00-04:00"
    utc = dt.datetime(2025, 11, 2, 6, 30, tzinfo=dt.UTC)
    assert stamp(utc) == "2025-11-02T01:30:00-05:00"


def test_pm_backtest_restores_the_collector() -> None:
    from click.testing import CliRunner

    from pm_cli.backtest import backtest_command

    assert gc.isenabled()
    examples = Path(__file__).resolve().parents[2] / "examples" / "webhook_signals.jsonl"
    done = CliRunner().invoke(backtest_command, ["--json", str(examples)])
    assert done.exit_code == 0, done.output
    assert gc.isenabled()
    missing = CliRunner().invoke(backtest_command, ["--json", "no/such/file.jsonl"])
    assert missing.exit_code == 2
    assert gc.isenabled()


@given(
    instant=st.datetimes(
        min_value=dt.datetime(1, 1, 2),
        max_value=dt.datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [dt.UTC, IST, dt.timezone(dt.timedelta(hours=-9, minutes=-30, seconds=-15))]
        ),
    )
)
def test_utc_second_text_is_the_isoformat_of_the_utc_second(instant: dt.datetime) -> None:
    expected = instant.astimezone(dt.UTC).replace(microsecond=0).isoformat()
    assert utc_second_text(instant_us(instant)) == expected


def test_fingerprint_of_a_naive_timestamp_reads_it_as_local_time() -> None:
    naive = dt.datetime(2025, 11, 28, 10, 30, 0, 250)
    signal = Signal("EXIT", "GOLD_MINI", "ALL", 1.0, 0.0, 0, 0.0, 0.0, 0.0, naive, None, "x")
    second = naive.astimezone(dt.UTC).replace(microsecond=0).isoformat()
    text = f"GOLD_MINI:EXIT:ALL:{second}"
    assert fingerprint(signal) == hashlib.sha256(text.encode()).hexdigest()
