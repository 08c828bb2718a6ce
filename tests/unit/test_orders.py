"""Client order ids, leg planning, intent states and unknown-order matching."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from typing import Any, get_args

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pm_core import calendar as cal
from pm_core import orders
from pm_core.config import default_config
from pm_core.model import OrderIntent, Position
from pm_core.ports import IntentState, OrderStatus, TradeRow
from pm_core.rollover import select_strike
from tests.strategies import make_intent

FP = "fb6ca43d510c08d5" + "0" * 48


def test_client_order_id_format() -> None:
    assert orders.client_order_id(FP, 1, "CE", 1) == "pm-fb6ca43d510c08d5-1-CE-1"
    assert orders.client_order_id(FP.upper(), 0, "FUT", 2) == "pm-fb6ca43d510c08d5-0-FUT-2"
    assert orders.client_order_id("r12.3", 4, "PE", 1) == "pm-r12.3-4-PE-1"
    assert orders.client_order_id("m77", 0, "FUT", 1) == "pm-m77-0-FUT-1"
    parent = orders.client_order_id(FP, 6, "PE", 3)
    assert orders.child_order_id(parent, 2) == "pm-fb6ca43d510c08d5-6-PE-3.2"


@pytest.mark.parametrize(
    ("part", "label", "leg", "attempt"),
    [
        ("xyz", 1, "CE", 1),
        ("fb6ca43d", 1, "CE", 1),
        ("g" * 64, 1, "CE", 1),
        (FP, 1, "XX", 1),
        (FP, -1, "CE", 1),
        (FP, 1, "CE", 0),
        ("r" + "9" * 30 + ".1", 1, "CE", 1),
    ],
)
def test_client_order_id_rejects_bad_input(part: str, label: int, leg: str, attempt: int) -> None:
    with pytest.raises(ValueError):
        orders.client_order_id(part, label, leg, attempt)


hex_fingerprints = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
id_keys = st.tuples(
    st.integers(min_value=0, max_value=99),
    st.sampled_from(["CE", "PE", "FUT"]),
    st.integers(min_value=1, max_value=999),
    st.integers(min_value=0, max_value=99),  # 0 = no freeze child
)


@given(hex_fingerprints, st.lists(id_keys, min_size=1, max_size=30, unique=True))
def test_client_ids_short_and_unique(fp: str, keys: list[tuple[int, str, int, int]]) -> None:
    ids = set()
    for label, leg, attempt, child in keys:
        cid = orders.client_order_id(fp, label, leg, attempt)
        if child:
            cid = orders.child_order_id(cid, child)
        assert len(cid) <= 40
        assert cid.startswith("pm-" + fp[:16] + "-")
        ids.add(cid)
    assert len(ids) == len(keys)


# --------------------------------------------------------------------------- legs

CONFIG = default_config()
BN = CONFIG.instrument("BANK_NIFTY")
GOLD = CONFIG.instrument("GOLD_MINI")
DEC = cal.contract_for(BN, 2025, 12, CONFIG)
SENT = dt.datetime(2025, 12, 15, 5, 0, tzinfo=dt.UTC)


def test_ref_price_makes_paper_synthetic_fill_at_signal_price() -> None:
    assert orders.ref_price("FUT", 78000.0, None) == 78000.0
    assert orders.ref_price("CE", 52100.0, 52000.0) == 100.0
    assert orders.ref_price("PE", 52100.0, 52000.0) == 0.0
    assert orders.ref_price("PE", 51900.0, 52000.0) == 100.0
    with pytest.raises(ValueError):
        orders.ref_price("CE", 52100.0, None)


@given(
    st.floats(min_value=1000, max_value=200000, allow_nan=False),
    st.sampled_from([500.0, 100.0]),
)
def test_synthetic_ref_prices_sum_to_price(price: float, interval: float) -> None:
    strike = select_strike(price, interval)
    ce = orders.ref_price("CE", price, strike)
    pe = orders.ref_price("PE", price, strike)
    assert strike + ce - pe == pytest.approx(price, rel=1e-12)


def test_entry_and_exit_legs_hedge_first() -> None:
    legs = orders.entry_legs(BN, DEC, 52000.0, 3, 52100.0)
    assert [(x.leg, x.action, x.symbol, x.quantity, x.lots, x.ref_price) for x in legs] == [
        ("CE", "BUY", "BANKNIFTY30DEC2552000CE", 90, 3, 100.0),
        ("PE", "SELL", "BANKNIFTY30DEC2552000PE", 90, 3, 0.0),
    ]
    assert all(x.product == "NRML" and x.exchange == "NFO" and x.slices == (90,) for x in legs)
    pos = Position(
        id=4,
        instrument="BANK_NIFTY",
        label="Long_2",
        status="open",
        is_base_position=False,
        lots=3,
        quantity=105,
        lot_size=35,
        point_value=35.0,
        entry_timestamp=SENT,
        entry_price=52000.0,
        initial_stop=51000.0,
        current_stop=51000.0,
        highest_close=52000.0,
        atr=300.0,
        basis=52000.0,
        expiry=dt.date(2025, 11, 25),
        strike=52000.0,
        ce_symbol="BANKNIFTY25NOV2552000CE",
        pe_symbol="BANKNIFTY25NOV2552000PE",
    )
    out = orders.exit_legs(BN, pos, 2, 51800.0)
    assert [(x.leg, x.action, x.symbol, x.quantity, x.ref_price) for x in out] == [
        ("PE", "BUY", "BANKNIFTY25NOV2552000PE", 70, 200.0),
        ("CE", "SELL", "BANKNIFTY25NOV2552000CE", 70, 0.0),
    ]
    with pytest.raises(ValueError):
        orders.exit_legs(BN, pos, 4, 51800.0)


def test_gold_legs_in_lots() -> None:
    jan = cal.contract_for(GOLD, 2026, 1, CONFIG)
    (leg,) = orders.entry_legs(GOLD, jan, None, 2, 78000.0)
    assert (leg.leg, leg.action, leg.symbol, leg.quantity, leg.ref_price) == (
        "FUT",
        "BUY",
        "GOLDM05JAN26FUT",
        2,
        78000.0,
    )


def test_freeze_split_into_children() -> None:
    frozen = attrs.evolve(BN, freeze_quantity=100)
    legs = orders.entry_legs(frozen, DEC, 52000.0, 8, 52100.0)
    assert legs[0].quantity == 240 and legs[0].slices == (90, 90, 60)
    intents = orders.intents_for(
        legs,
        fingerprint_part=FP,
        label_number=1,
        origin="signal",
        position_id=-1,
        group_id="17",
        instrument="BANK_NIFTY",
    )
    assert [(i.client_order_id, i.seq, i.quantity, i.lots, i.action) for i in intents] == [
        ("pm-fb6ca43d510c08d5-1-CE-1.1", 1, 90, 3, "BUY"),
        ("pm-fb6ca43d510c08d5-1-CE-1.2", 2, 90, 3, "BUY"),
        ("pm-fb6ca43d510c08d5-1-CE-1.3", 3, 60, 2, "BUY"),
        ("pm-fb6ca43d510c08d5-1-PE-1.1", 4, 90, 3, "SELL"),
        ("pm-fb6ca43d510c08d5-1-PE-1.2", 5, 90, 3, "SELL"),
        ("pm-fb6ca43d510c08d5-1-PE-1.3", 6, 60, 2, "SELL"),
    ]
    assert all(i.pricetype == "MARKET" and i.group_id == "17" for i in intents)
    plain = orders.intents_for(
        orders.entry_legs(BN, DEC, 52000.0, 1, 52100.0),
        fingerprint_part=FP,
        label_number=2,
        origin="signal",
        position_id=-1,
        group_id="18",
        instrument="BANK_NIFTY",
    )
    assert [i.client_order_id for i in plain] == [
        "pm-fb6ca43d510c08d5-2-CE-1",
        "pm-fb6ca43d510c08d5-2-PE-1",
    ]
    assert orders.split_quantity(5, 2, 1) == (2, 2, 1)
    with pytest.raises(ValueError):
        orders.split_quantity(60, 20, 30)


@given(
    st.integers(min_value=1, max_value=500),
    st.integers(min_value=1, max_value=2000),
    st.sampled_from([1, 15, 30, 35]),
)
def test_split_sums_and_respects_freeze(lots: int, freeze: int, step: int) -> None:
    quantity = lots * step
    if freeze < step:
        return
    slices = orders.split_quantity(quantity, freeze, step)
    assert sum(slices) == quantity
    assert all(0 < s <= freeze and s % step == 0 for s in slices)


# --------------------------------------------------------------------------- states


def test_intent_state_machine() -> None:
    assert set(orders.ALLOWED_TRANSITIONS) == set(get_args(IntentState))
    for state in get_args(IntentState):
        assert orders.is_terminal(state) == (not orders.ALLOWED_TRANSITIONS[state])
    path: list[IntentState] = ["pending", "sending", "accepted", "partially_filled", "filled"]
    assert all(orders.can_transition(a, b) for a, b in itertools.pairwise(path))
    targets: list[IntentState] = ["accepted", "filled", "not_found", "ambiguous"]
    assert all(orders.can_transition("unknown", target) for target in targets)
    assert not orders.can_transition("unknown", "pending")
    assert not orders.can_transition("unknown", "sending")  # an unknown order is never re-sent
    assert not orders.can_transition("filled", "cancelled")
    assert not orders.can_transition("pending", "filled")


# --------------------------------------------------------------------------- unknown matching


def intent(qty: int = 90) -> OrderIntent:
    """The Bank Nifty CE leg the unknown-order look-ups search for."""
    intent: OrderIntent = make_intent(
        "pm-fb6ca43d510c08d5-1-CE-1",
        1,
        leg="CE",
        symbol="BANKNIFTY30DEC2552000CE",
        exchange="NFO",
        quantity=qty,
        lots=3,
        ref_price=100.0,
        group_id="1",
    )
    return intent


def order(oid: str, *, qty: int = 90, secs: float = 1.0, **changes: Any) -> OrderStatus:
    base = OrderStatus(
        order_id=oid,
        symbol="BANKNIFTY30DEC2552000CE",
        exchange="NFO",
        action="buy",
        quantity=qty,
        price=Decimal(0),
        pricetype="MARKET",
        product="NRML",
        status="COMPLETE",
        timestamp=SENT + dt.timedelta(seconds=secs),
    )
    return attrs.evolve(base, **changes)


def trade(oid: str, qty: int, secs: float = 1.0) -> TradeRow:
    return TradeRow(
        oid,
        "BANKNIFTY30DEC2552000CE",
        "NFO",
        "BUY",
        qty,
        Decimal("101.5"),
        "NRML",
        SENT + dt.timedelta(seconds=secs),
    )


def test_match_one_candidate_binds() -> None:
    book = [
        order("A"),
        order("B", qty=60),
        order("C", action="SELL"),
        order("D", secs=-11),
        order("E", pricetype="LIMIT"),
        order("F", product="MIS"),
    ]
    result = orders.match_unknown(intent(), SENT, book, [], [], 10.0)
    assert (result.kind, result.order_id, result.source) == ("bind", "A", "orderbook")
    # the same order already bound to another intent is not a candidate
    assert orders.match_unknown(intent(), SENT, book, [], ["A"], 10.0).kind == "none"
    # within the window before sent_at still counts
    assert orders.match_unknown(intent(), SENT, [order("D", secs=-10)], [], [], 10.0).kind == "bind"


def test_match_several_is_ambiguous_and_none_is_none() -> None:
    result = orders.match_unknown(intent(), SENT, [order("B"), order("A")], [], [], 10.0)
    assert (result.kind, result.candidates, result.order_id) == ("ambiguous", ("A", "B"), None)
    assert orders.match_unknown(intent(), SENT, [], [], [], 10.0) == orders.MatchResult("none")


def test_match_from_trade_book_when_order_book_lags() -> None:
    trades = [trade("T1", 60), trade("T1", 30), trade("T2", 100), trade("A", 90)]
    result = orders.match_unknown(intent(), SENT, [order("A", symbol="X")], trades, [], 10.0)
    # T2 traded more than the intent; A shows in the order book (with other params)
    assert (result.kind, result.order_id, result.source) == ("bind", "T1", "tradebook")
    partial = orders.match_unknown(intent(), SENT, [], [trade("T3", 30)], [], 10.0)
    assert partial.order_id == "T3"
    old = orders.match_unknown(intent(), SENT, [], [trade("T4", 30, secs=-60)], [], 10.0)
    assert old.kind == "none"
