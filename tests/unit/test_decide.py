"""The decision flow (domain 7) through decide/apply_fills/apply_changes, vectors 12.11 and more."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import attrs
import pytest

from pm_core.config import DomainConfig, default_config
from pm_core.decide import apply_changes_mapped, apply_fills, decide, remap_intents
from pm_core.model import (
    EMPTY_MARKET,
    Block,
    Fill,
    Funds,
    MarketContext,
    OrderIntent,
    PortfolioSnapshot,
    Quote,
    ReceivedSignal,
)
from pm_core.signal import fingerprint, validate
from tests.unit.decide_kit import Fold, bn35_config, payload


def nov(day: int, minute: int = 0) -> str:
    return f"2025-11-{day:02d}T10:{minute:02d}:00"


# --------------------------------------------------------------------------- 12.11 partial exits


@pytest.fixture
def partial_book() -> Fold:
    """BN Nov 2025 (lot 35): base Long_1 6 lots @52000 stop 51900, pyramid Long_2 3 @52300."""
    fold = Fold(bn35_config())
    base = fold.snapshot
    # Build the state of 12.11 directly: the vector fixes lots, not a sizing path.
    from pm_core.model import Mark, Position, PyramidingState

    ts = dt.datetime(2025, 11, 10, 4, 0, tzinfo=dt.UTC)
    common = {
        "instrument": "BANK_NIFTY",
        "lot_size": 35,
        "point_value": 35.0,
        "atr": 100.0,
        "contract_month": "2025-11",
        "expiry": dt.date(2025, 11, 25),
        "strike": 52000.0,
    }
    long1 = Position(
        id=1,
        label="Long_1",
        status="open",
        is_base_position=True,
        lots=6,
        quantity=210,
        entry_timestamp=ts,
        entry_price=52000.0,
        initial_stop=51900.0,
        current_stop=51900.0,
        highest_close=52000.0,
        basis=52000.0,
        **common,  # type: ignore[arg-type]
    )
    long2 = Position(
        id=2,
        label="Long_2",
        status="open",
        is_base_position=False,
        lots=3,
        quantity=105,
        entry_timestamp=ts,
        entry_price=52300.0,
        initial_stop=52100.0,
        current_stop=52100.0,
        highest_close=52300.0,
        basis=52300.0,
        anchor_base_id=1,
        **common,  # type: ignore[arg-type]
    )
    fold.snapshot = attrs.evolve(
        base,
        positions=(long1, long2),
        pyramiding={"BANK_NIFTY": PyramidingState(1, 52300.0)},
        marks={"BANK_NIFTY": Mark(52300.0, 100.0, ts)},
        next_position_id=3,
    )
    return fold


def test_partial_exit_books_only_the_closed_lots(partial_book: Fold) -> None:
    r = partial_book.send(payload("EXIT", "Long_1", 52400, nov(11), lots=2, atr=0))
    assert r.decision.outcome == "executed"
    assert [(t.lots, t.pnl) for t in r.trades] == [(2, 28000.0)]
    assert partial_book.snapshot.closed_equity == 5_028_000.0
    long1 = partial_book.position("BANK_NIFTY", "Long_1")
    assert long1 is not None
    assert (long1.status, long1.lots, long1.quantity) == ("partial", 4, 140)
    assert long1.unrealized_pnl == 400 * 4 * 35 == 56000.0
    trade = r.trades[0]
    r_multiple = trade.pnl / ((trade.entry_price - trade.initial_stop) * trade.lots * 35)
    assert r_multiple == 4.0


def test_partial_anchor_still_anchors_and_sizes_pyramid_on_current_lots(
    partial_book: Fold,
) -> None:
    partial_book.send(payload("EXIT", "Long_1", 52400, nov(11), lots=2, atr=0))
    again = partial_book.send(payload("BASE_ENTRY", "Long_1", 52400, nov(11, 5), stop=52000))
    assert again.decision.outcome == "rejected"
    assert [c.code for c in again.decision.codes] == ["position_already_open"]
    r = partial_book.send(
        payload("PYRAMID", "Long_3", 52700, nov(11, 10), stop=52500, atr=120, lots=0)
    )
    sizing = r.decision.record()["sizing"]
    assert sizing == {"a": 4, "b": 2, "c": 9, "final": 2, "limiter": "base_ratio"}
    assert r.decision.outcome == "executed"


def test_repeated_partial_exits_then_whole_close(partial_book: Fold) -> None:
    first = partial_book.send(payload("EXIT", "Long_2", 52800, nov(12), lots=1, atr=0))
    second = partial_book.send(payload("EXIT", "Long_2", 52900, nov(12, 5), lots=0, atr=0))
    assert [t.pnl for t in first.trades] == [17500.0]
    assert [(t.lots, t.pnl) for t in second.trades] == [(2, 42000.0)]
    assert partial_book.position("BANK_NIFTY", "Long_2") is None
    repeat = partial_book.send(payload("EXIT", "Long_2", 52950, nov(12, 9), lots=0, atr=0))
    assert repeat.decision.outcome == "rejected"
    assert repeat.trades == ()
    assert partial_book.snapshot.closed_equity == 5_000_000.0 + 17500.0 + 42000.0


def test_exit_more_lots_than_held_closes_whole(partial_book: Fold) -> None:
    r = partial_book.send(payload("EXIT", "Long_2", 53000, nov(13), lots=5, atr=0))
    assert [(t.lots, t.pnl) for t in r.trades] == [(3, 700 * 3 * 35)]


def test_exit_all_closes_partial_positions_whole(partial_book: Fold) -> None:
    partial_book.send(payload("EXIT", "Long_1", 52400, nov(11), lots=2, atr=0))
    r = partial_book.send(payload("EXIT", "ALL", 52500, nov(14), lots=1, atr=0))
    record = r.decision.record()
    assert record["outcome"] == "executed"
    assert [(p["key"], p["lots"]) for p in record["positions"]] == [
        ("BANK_NIFTY_Long_1", 4),
        ("BANK_NIFTY_Long_2", 3),
    ]
    assert record["total_pnl"] == 500 * 4 * 35 + 200 * 3 * 35
    assert partial_book.snapshot.positions == ()
    assert "BANK_NIFTY" not in partial_book.snapshot.pyramiding


# --------------------------------------------------------------------------- webhook trades


def test_webhook_examples_second_trade() -> None:
    fold = Fold(default_config())
    base = fold.send(
        payload("BASE_ENTRY", "Long_1", 52000, "2025-12-01T10:30:00", stop=51900, atr=100, er=0.85)
    )
    assert base.decision.record()["sizing"]["final"] == 7
    pyr = fold.send(
        payload("PYRAMID", "Long_2", 52300, "2025-12-01T11:00:00", stop=52100, atr=120, er=0.85)
    )
    assert pyr.decision.record()["sizing"] == {
        "a": 4,
        "b": 3,
        "c": 3,
        "final": 3,
        "limiter": "base_ratio",
    }
    long2 = fold.position("BANK_NIFTY", "Long_2")
    assert long2 is not None and long2.strike == 52500.0
    assert long2.ce_symbol == "BANKNIFTY30DEC2552500CE"
    part = fold.send(
        payload("EXIT", "Long_1", 52500, "2025-12-01T12:00:00", lots=3, atr=120, reason="Partial")
    )
    assert [p.pnl for p in part.decision.positions] == [45000.0]
    every = fold.send(payload("EXIT", "ALL", 52600, "2025-12-01T13:00:00", atr=120))
    assert every.decision.total_pnl == 99000.0
    assert fold.snapshot.closed_equity == 5_000_000.0 + 45000.0 + 99000.0


def test_intents_follow_hedge_first_order_and_client_ids() -> None:
    config = default_config()
    signal = validate(
        payload("BASE_ENTRY", "Long_1", 52000, "2025-11-28T10:30:00", stop=51650, er=0.82),
        config,
    )
    assert not isinstance(signal, tuple)
    fp = fingerprint(signal)
    snap = PortfolioSnapshot.initial(5_000_000.0)
    d = decide(
        snap, ReceivedSignal(signal, fp, signal.timestamp), EMPTY_MARKET, config, signal.timestamp
    )
    assert d.outcome == "pending"
    assert [(i.client_order_id, i.symbol, i.action, i.quantity) for i in d.intents] == [
        ("pm-fb6ca43d510c08d5-1-CE-1", "BANKNIFTY30DEC2552000CE", "BUY", 30),
        ("pm-fb6ca43d510c08d5-1-PE-1", "BANKNIFTY30DEC2552000PE", "SELL", 30),
    ]
    assert d.changes.create[0].status == "pending_open"


# --------------------------------------------------------------------------- settlement


def _reserve(
    body: dict[str, object],
) -> tuple[DomainConfig, PortfolioSnapshot, tuple[OrderIntent, ...]]:
    """Decide one payload on an empty book and apply the reservation."""
    config = default_config()
    signal = validate(body, config)
    assert not isinstance(signal, tuple)
    snap = PortfolioSnapshot.initial(5_000_000.0)
    received = ReceivedSignal(signal, fingerprint(signal), signal.timestamp)
    d = decide(snap, received, EMPTY_MARKET, config, signal.timestamp)
    state, idmap = apply_changes_mapped(snap, d.changes)
    return config, state, remap_intents(d.intents, idmap)


def test_nothing_filled_reverts_the_reservation_as_failed() -> None:
    config, state, intents = _reserve(
        payload("BASE_ENTRY", "Long_1", 78500, nov(20), instrument="GOLD_MINI", stop=77800, atr=450)
    )
    fills = {
        intents[0].client_order_id: Fill(intents[0].client_order_id, 0, None, "rejected", "RMS")
    }
    changes = apply_fills(state, intents, fills, config)
    assert changes.settlement is not None and changes.settlement.outcome == "failed"
    assert [c.code for c in changes.settlement.codes] == ["order_failed"]
    after, _ = apply_changes_mapped(state, changes)
    assert after.positions == ()
    assert "GOLD_MINI" not in after.pyramiding
    assert after.closed_equity == 5_000_000.0


def test_unequal_legs_keep_the_smallest_filled_leg() -> None:
    config, state, intents = _reserve(
        payload("BASE_ENTRY", "Long_1", 52000, "2025-12-01T10:30:00", stop=51900, atr=100)
    )
    ce, pe = intents
    fills = {
        ce.client_order_id: Fill(ce.client_order_id, ce.quantity, Decimal("600"), "filled"),
        pe.client_order_id: Fill(pe.client_order_id, 60, Decimal("590"), "partially_filled"),
    }
    changes = apply_fills(state, intents, fills, config)
    after, _ = apply_changes_mapped(state, changes)
    (position,) = after.positions
    assert (position.lots, position.quantity, position.status) == (2, 60, "open")
    assert position.ce_entry_price == 600.0 and position.pe_entry_price == 590.0


def test_exit_all_with_one_failed_close_is_partially_executed(partial_book: Fold) -> None:
    config = partial_book.config
    signal = validate(payload("EXIT", "ALL", 52600, nov(15), atr=0), config)
    assert not isinstance(signal, tuple)
    received = ReceivedSignal(signal, fingerprint(signal), signal.timestamp)
    snap = partial_book.snapshot
    d = decide(snap, received, EMPTY_MARKET, config, signal.timestamp)
    state, idmap = apply_changes_mapped(snap, d.changes)
    intents = remap_intents(d.intents, idmap)
    fills = {
        i.client_order_id: Fill(i.client_order_id, i.quantity, Decimal(repr(i.ref_price)), "filled")
        for i in intents
        if i.position_id == 1
    }
    changes = apply_fills(state, intents, fills, config)
    assert changes.settlement is not None
    assert changes.settlement.outcome == "partially_executed"
    after, _ = apply_changes_mapped(state, changes)
    assert [(p.label, p.status, p.lots) for p in after.positions] == [("Long_2", "open", 3)]
    assert after.closed_equity == 5_000_000.0 + 600 * 6 * 35


# --------------------------------------------------------------------------- rejections and edges


def test_repeated_base_entry_is_rejected_without_state_change() -> None:
    fold = Fold(default_config())
    fold.send(
        payload("BASE_ENTRY", "Long_1", 78500, nov(20), instrument="GOLD_MINI", stop=77800, atr=450)
    )
    before = fold.snapshot.positions
    r = fold.send(
        payload(
            "BASE_ENTRY", "Long_2", 78600, nov(20, 30), instrument="GOLD_MINI", stop=77800, atr=450
        )
    )
    assert r.decision.outcome == "rejected"
    assert [c.code for c in r.decision.codes] == ["base_already_open"]
    assert [p.id for p in fold.snapshot.positions] == [p.id for p in before]


def test_exact_and_near_duplicates_change_nothing() -> None:
    fold = Fold(default_config())
    body = payload(
        "BASE_ENTRY", "Long_1", 78500, nov(20), instrument="GOLD_MINI", stop=77800, atr=450
    )
    fold.send(body)
    state = fold.snapshot
    exact = fold.send(dict(body, timestamp="2025-11-20T10:00:00.500"))
    assert exact.duplicate and exact.decision.codes[0].code == "duplicate_fingerprint"
    near = fold.send(dict(body, timestamp="2025-11-20T10:00:40"))
    assert near.duplicate and near.decision.codes[0].code == "duplicate_near_window"
    assert fold.snapshot is state
    off = fold.send(dict(body, timestamp="2025-11-20T10:00:40"), dedup=False)
    assert not off.duplicate


def test_lot_size_series_change_and_pyramid_keeps_anchor_contract() -> None:
    fold = Fold(default_config())
    early = fold.send(payload("BASE_ENTRY", "Long_1", 52000, nov(10), stop=51650, er=0.82))
    position = fold.position("BANK_NIFTY", "Long_1")
    assert position is not None and (position.lot_size, position.expiry) == (
        35,
        dt.date(2025, 11, 25),
    )
    assert early.decision.outcome == "executed"
    fold2 = Fold(default_config())
    fold2.send(payload("BASE_ENTRY", "Long_1", 52000, nov(20), stop=51650, er=0.82))
    position = fold2.position("BANK_NIFTY", "Long_1")
    assert position is not None and (position.lot_size, position.expiry) == (
        30,
        dt.date(2025, 12, 30),
    )


def test_stop_at_or_above_price_uses_atr_fallback_with_warning() -> None:
    fold = Fold(bn35_config())
    r = fold.send(payload("BASE_ENTRY", "Long_1", 52000, nov(10), stop=52100, er=0.8))
    events = [(e.code, dict(e.params)) for e in r.decision.events]
    assert events == [("stop_fallback_atr", {"stop": 52100.0, "effective": 51475.0})]
    position = fold.position("BANK_NIFTY", "Long_1")
    assert position is not None and position.initial_stop == 51475.0


def test_atr_zero_with_unusable_stop_is_invalid_risk() -> None:
    fold = Fold(bn35_config())
    r = fold.send(payload("BASE_ENTRY", "Long_1", 52000, nov(10), stop=0, atr=0))
    assert r.decision.outcome == "blocked"
    assert [c.code for c in r.decision.codes] == ["invalid_risk"]
    assert r.decision.messages == ("Stop 52000.0 is not below price 52000.0",)


def test_non_positive_equity_blocks_entries() -> None:
    fold = Fold(bn35_config(), capital=-1_000_000.0)
    r = fold.send(payload("BASE_ENTRY", "Long_1", 52000, nov(10), stop=51650, er=0.82))
    assert r.decision.outcome == "blocked"
    assert fold.snapshot.positions == ()


def test_blocked_instrument_rejects_entries_but_processes_exits(partial_book: Fold) -> None:
    since = dt.datetime(2025, 11, 10, tzinfo=dt.UTC)
    partial_book.snapshot = attrs.evolve(
        partial_book.snapshot, blocks={"BANK_NIFTY": Block("reconciliation", since)}
    )
    r = partial_book.send(payload("PYRAMID", "Long_3", 52700, nov(11), stop=52500, atr=120))
    assert [c.code for c in r.decision.codes] == ["instrument_blocked"]
    exit_ = partial_book.send(payload("EXIT", "Long_2", 52800, nov(11, 5), atr=0))
    assert exit_.decision.outcome == "executed"


def test_disabled_instrument_rejects_entries() -> None:
    config = default_config()
    gold = attrs.evolve(config.instruments["GOLD_MINI"], enabled=False)
    config = attrs.evolve(config, instruments={**config.instruments, "GOLD_MINI": gold})
    fold = Fold(config)
    r = fold.send(
        payload("BASE_ENTRY", "Long_1", 78500, nov(20), instrument="GOLD_MINI", stop=77800, atr=450)
    )
    assert r.decision.messages == ("Instrument GOLD_MINI is disabled",)


def test_stale_queued_entry_is_rejected_after_marking() -> None:
    config = default_config()
    signal = validate(
        payload(
            "BASE_ENTRY", "Long_1", 78500, nov(20), instrument="GOLD_MINI", stop=77800, atr=450
        ),
        config,
    )
    assert not isinstance(signal, tuple)
    received = ReceivedSignal(signal, fingerprint(signal), signal.timestamp, queued=True)
    later = signal.timestamp + dt.timedelta(seconds=61)
    d = decide(PortfolioSnapshot.initial(5e6), received, EMPTY_MARKET, config, later)
    assert d.outcome == "rejected" and d.codes[0].code == "stale_in_queue"
    assert "GOLD_MINI" in d.changes.marks


def test_exit_on_stop_hit_closes_before_the_decision() -> None:
    fold = Fold(bn35_config(exit_on_stop_hit=True))
    fold.send(payload("BASE_ENTRY", "Long_1", 52000, nov(10), stop=51650, er=0.82))
    r = fold.send(payload("BASE_ENTRY", "Long_2", 51600, nov(10, 30), stop=51000, er=0.82))
    stop_events = [e for e in r.decision.events if e.code == "stop_hit"]
    assert stop_events and stop_events[0].params["lots"] == 1
    assert [t.exit_reason for t in r.trades] == ["stop_hit"]
    assert fold.position("BANK_NIFTY", "Long_1") is None


def test_broker_equity_source_uses_funds_or_falls_back_with_event() -> None:
    config = bn35_config(equity_source="broker")
    signal = validate(payload("BASE_ENTRY", "Long_1", 52000, nov(10), stop=51650, er=0.82), config)
    assert not isinstance(signal, tuple)
    received = ReceivedSignal(signal, fingerprint(signal), signal.timestamp)
    snap = PortfolioSnapshot.initial(5e6)
    rich = MarketContext(funds=Funds(Decimal("9000000"), Decimal("1000000")))
    d = decide(snap, received, rich, config, signal.timestamp)
    assert d.sizing is not None and d.sizing.final == 3
    poor = decide(snap, received, EMPTY_MARKET, config, signal.timestamp)
    assert [e.code for e in poor.events] == ["equity_fallback"]


def test_strike_uses_reference_quote_when_available() -> None:
    config = default_config()
    signal = validate(
        payload("BASE_ENTRY", "Long_1", 52000, "2025-12-01T10:30:00", stop=51900, atr=100), config
    )
    assert not isinstance(signal, tuple)
    received = ReceivedSignal(signal, fingerprint(signal), signal.timestamp)
    market = MarketContext(quotes={("NFO", "BANKNIFTY30DEC25FUT"): Quote(Decimal("52300"))})
    d = decide(PortfolioSnapshot.initial(5e6), received, market, config, signal.timestamp)
    assert d.changes.create[0].strike == 52500.0


def test_a_price_below_half_a_strike_interval_uses_the_lowest_strike() -> None:
    fold = Fold(default_config(sizing_mode="as_signalled"))
    r = fold.send(payload("BASE_ENTRY", "Long_1", 200.0, "2025-12-01T10:00:00", stop=150, lots=1))
    assert r.decision.outcome == "executed"
    position = fold.position("BANK_NIFTY", "Long_1")
    assert position is not None and position.strike == 500.0
    assert position.ce_symbol == "BANKNIFTY30DEC25500CE"


def test_an_entry_whose_contract_cannot_be_named_is_rejected_not_crashed() -> None:
    fold = Fold(default_config())
    r = fold.send(
        payload(
            "BASE_ENTRY",
            "Long_1",
            78000,
            "2099-12-20T10:00:00",
            instrument="GOLD_MINI",
            stop=77500,
            atr=400,
        )
    )
    assert r.decision.outcome == "rejected"
    assert [c.code for c in r.decision.codes] == ["no_contract"]
    assert fold.snapshot.positions == ()


def test_freeze_split_children_fill_as_one_leg_at_their_average() -> None:
    config = default_config()
    gold = attrs.evolve(config.instruments["GOLD_MINI"], freeze_quantity=2)
    config = attrs.evolve(config, instruments={**config.instruments, "GOLD_MINI": gold})
    signal = validate(
        payload("BASE_ENTRY", "Long_1", 78500, nov(20), instrument="GOLD_MINI", stop=77800, lots=3),
        config,
    )
    assert not isinstance(signal, tuple)
    config = attrs.evolve(
        config, portfolio=attrs.evolve(config.portfolio, sizing_mode="as_signalled")
    )
    snap = PortfolioSnapshot.initial(5_000_000.0)
    d = decide(
        snap,
        ReceivedSignal(signal, fingerprint(signal), signal.timestamp),
        EMPTY_MARKET,
        config,
        signal.timestamp,
    )
    state, idmap = apply_changes_mapped(snap, d.changes)
    intents = remap_intents(d.intents, idmap)
    parent = intents[0].client_order_id.rsplit(".", 1)[0]
    assert [(i.client_order_id, i.quantity) for i in intents] == [
        (f"{parent}.1", 2),
        (f"{parent}.2", 1),
    ]
    prices = [Decimal("78500"), Decimal("78503")]
    fills = {
        i.client_order_id: Fill(i.client_order_id, i.quantity, price, "filled")
        for i, price in zip(intents, prices, strict=True)
    }
    config_fill = attrs.evolve(
        config, portfolio=attrs.evolve(config.portfolio, pnl_price_source="fill")
    )
    after, _ = apply_changes_mapped(state, apply_fills(state, intents, fills, config_fill))
    (position,) = after.positions
    assert position.lots == 3
    assert position.entry_fill_price == float((Decimal("78500") * 2 + Decimal("78503")) / 3)


def test_market_reads_for_an_entry_with_no_nameable_contract_are_none() -> None:
    """The pre-T1 market reads must not raise where decide answers no_contract."""
    from pm_core.service.market import market_needs

    config = default_config()
    when = "1970-01-02T10:00:00"  # no expiry of that year can be written as DDMMMYY
    signal = validate(payload("BASE_ENTRY", "Long_1", 52000, when), config)
    assert not isinstance(signal, tuple), signal
    assert market_needs(signal, config, dt.datetime(2025, 11, 28, tzinfo=dt.UTC)).quotes == ()
    r = Fold(config).send(payload("BASE_ENTRY", "Long_1", 52000, when))
    assert [c.code for c in r.decision.codes] == ["no_contract"]
