"""Reconciliation diff (domain 10) with the worked example."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs

from pm_core.config import default_config
from pm_core.model import Position
from pm_core.ports import BrokerPosition
from pm_core.reconcile import (
    Ignored,
    Matched,
    Mismatched,
    Missing,
    Orphaned,
    diff,
    reconciliation_blocks,
)

CONFIG = default_config()
NOW = dt.datetime(2025, 12, 15, 5, 0, tzinfo=dt.UTC)


def position(**fields: Any) -> Position:
    base = Position(
        id=1,
        instrument="BANK_NIFTY",
        label="Long_1",
        status="open",
        is_base_position=True,
        lots=3,
        quantity=90,
        lot_size=30,
        point_value=30.0,
        entry_timestamp=NOW,
        entry_price=52000.0,
        initial_stop=51000.0,
        current_stop=51000.0,
        highest_close=52000.0,
        atr=350.0,
        basis=52000.0,
        contract_month="2025-12",
        expiry=dt.date(2025, 12, 30),
        strike=52000.0,
        ce_symbol="BANKNIFTY30DEC2552000CE",
        pe_symbol="BANKNIFTY30DEC2552000PE",
    )
    return attrs.evolve(base, **fields)


def example_positions() -> list[Position]:
    gold = position(
        id=3,
        instrument="GOLD_MINI",
        lots=2,
        quantity=200,
        lot_size=100,
        point_value=10.0,
        strike=None,
        ce_symbol=None,
        pe_symbol=None,
        futures_symbol="GOLDM05JAN26FUT",
        contract_month="2026-01",
        expiry=dt.date(2026, 1, 5),
    )
    return [
        position(),
        position(id=2, label="Long_2", lots=1, quantity=30, is_base_position=False),
        gold,
    ]


def row(symbol: str, qty: int, exchange: str = "NFO", product: str = "NRML") -> BrokerPosition:
    return BrokerPosition(symbol, exchange, product, qty)


def test_worked_example() -> None:
    broker = [
        row("BANKNIFTY30DEC2552000PE", -120),
        row("BANKNIFTY30DEC2552000CE", 90),
        row("GOLDM05JAN26FUT", 2, "MCX"),
        row("BANKNIFTY30DEC2553000CE", 30),
        row("RELIANCE", 10, "NSE", "CNC"),
    ]
    report = diff(example_positions(), broker, CONFIG)
    assert report.matched == (
        Matched("BANKNIFTY30DEC2552000PE", "NFO", -120),
        Matched("GOLDM05JAN26FUT", "MCX", 2),
    )
    assert report.mismatched == (
        Mismatched("BANKNIFTY30DEC2552000CE", "NFO", 120, 90, -30, (1, 2)),
    )
    assert report.missing == (Missing("BANKNIFTY30DEC2553000CE", "NFO", 30),)
    assert report.orphaned == ()
    assert report.ignored == (Ignored("RELIANCE", "NSE", "CNC", 10, "unregistered_symbol"),)
    assert not report.clean
    assert report.instruments_with_differences == ("BANK_NIFTY",)
    blocks = reconciliation_blocks(report, CONFIG, NOW)
    assert list(blocks) == ["BANK_NIFTY"] and blocks["BANK_NIFTY"].reason == "reconciliation"
    relaxed = default_config(reconciliation_fail_closed=False)
    assert reconciliation_blocks(report, relaxed, NOW) == {}


def test_clean_orphaned_zero_rows_and_unmanaged() -> None:
    broker = [
        row("BANKNIFTY30DEC2552000PE", -120),
        row("BANKNIFTY30DEC2552000CE", 120),
        row("GOLDM05JAN26FUT", 0, "MCX"),
        row("BANKNIFTY30DEC2552000CE", 5, product="MIS"),
        row("GOLDM05JAN26FUT", 1, "NFO"),  # a registered root on the wrong exchange
    ]
    report = diff(example_positions(), broker, CONFIG)
    assert report.orphaned == (Orphaned("GOLDM05JAN26FUT", "MCX", 2, (3,)),)
    assert [(i.symbol, i.reason) for i in report.ignored] == [
        ("BANKNIFTY30DEC2552000CE", "unmanaged_product"),
        ("GOLDM05JAN26FUT", "unregistered_symbol"),
    ]
    assert report.instruments_with_differences == ("GOLD_MINI",)
    clean = diff(example_positions()[:2], broker[:2], CONFIG)
    assert clean.clean and clean.instruments_with_differences == ()
    assert diff([], [], CONFIG).clean


def test_sign_flip_is_mismatched_and_closed_positions_do_not_count() -> None:
    report = diff(
        [position(), position(id=9, label="Long_2", status="closed")],
        [row("BANKNIFTY30DEC2552000PE", 90), row("BANKNIFTY30DEC2552000CE", 90)],
        CONFIG,
    )
    assert report.mismatched == (Mismatched("BANKNIFTY30DEC2552000PE", "NFO", -90, 90, 180, (1,)),)
    assert report.matched == (Matched("BANKNIFTY30DEC2552000CE", "NFO", 90),)


def test_incomplete_roll_contributes_only_legs_held() -> None:
    rolling = position(
        rollover_status="failed",
        rollover_step=3,
        rollover_target_expiry=dt.date(2026, 1, 27),
        rollover_target_strike=53000.0,
    )
    broker = [row("BANKNIFTY27JAN2653000CE", 90)]
    report = diff([rolling], broker, CONFIG)
    assert report.clean and report.matched == (Matched("BANKNIFTY27JAN2653000CE", "NFO", 90),)
    after_pe = attrs.evolve(rolling, rollover_step=1)
    report = diff([after_pe], [row("BANKNIFTY30DEC2552000CE", 90)], CONFIG)
    assert report.clean
