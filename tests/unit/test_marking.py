"""Effective stops, marking, trailing ratchet and stop hits (domain 4, 12.4 T1-T11, 13.3)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pm_core.config import gold_mini
from pm_core.marking import effective_stop, mark
from pm_core.model import Code, Mark, Position
from tests.unit import vectors as v

BN35 = v.bn35()
GOLD = gold_mini()
TS = v.TS0
LATER = TS + dt.timedelta(minutes=5)


def gold_pos(stop: float, high: float, **kw: object) -> Position:
    return v.position(GOLD, entry=78500.0, stop=stop, high=high, atr=700.0, **kw)


def test_t1_t2_atr_fallback() -> None:
    assert effective_stop(78500.0, 0.0, 700.0, GOLD) == (77800.0, True)
    assert effective_stop(52000.0, 0.0, 400.0, BN35) == (51400.0, True)


def test_t9_signal_stop_used() -> None:
    assert effective_stop(52000.0, 51650.0, 350.0, BN35) == (51650.0, False)


@pytest.mark.parametrize("stop", [0.0, 52100.0, 52000.0, -5.0])
def test_t10_unusable_signal_stop(stop: float) -> None:
    assert effective_stop(52000.0, stop, 350.0, BN35) == (51475.0, True)


def test_atr_zero_fallback_is_not_below_price() -> None:
    assert effective_stop(52000.0, 0.0, 0.0, BN35) == (52000.0, True)


def test_t3_trail_below_stop_keeps_stop() -> None:
    r = mark([gold_pos(77800.0, 78500.0)], GOLD, 79000.0, 700.0, TS, None)
    (p,) = r.positions
    assert (p.current_stop, p.highest_close) == (77800.0, 79000.0)
    assert r.events == () and r.hit_ids == ()
    assert r.mark == Mark(79000.0, 700.0, TS) and not r.stale


def test_t4_ratchet_up() -> None:
    r = mark([gold_pos(77800.0, 78500.0)], GOLD, 80000.0, 700.0, TS, None)
    (p,) = r.positions
    assert (p.current_stop, p.highest_close) == (78600.0, 80000.0)
    assert p.unrealized_pnl == (80000.0 - 78500.0) * 1 * 10.0


def test_t5_no_ratchet_on_lower_close() -> None:
    r = mark([gold_pos(78600.0, 80000.0)], GOLD, 79000.0, 700.0, TS, None)
    (p,) = r.positions
    assert (p.current_stop, p.highest_close) == (78600.0, 80000.0)
    assert r.events == ()


@pytest.mark.parametrize(("price", "hit"), [(78200.0, False), (78000.0, False), (77900.0, True)])
def test_t6_strict_stop_hit(price: float, hit: bool) -> None:
    pos = gold_pos(78000.0, 78200.0)
    r = mark([pos], GOLD, price, 0.0, TS, None)
    assert bool(r.hit_ids) is hit
    if hit:
        assert r.events == (
            Code("stop_hit", {"key": "GOLD_MINI_Long_1", "price": price, "stop": 78000.0}),
        )
        assert r.hit_ids == (pos.id,)


def test_t7_two_instruments_trail() -> None:
    g = mark([gold_pos(77800.0, 78500.0)], GOLD, 79500.0, 700.0, TS, None)
    assert g.positions[0].current_stop == 78100.0
    b_pos = v.position(BN35, entry=52000.0, stop=51400.0, high=52000.0, atr=400.0)
    b = mark([b_pos], BN35, 53000.0, 400.0, TS, None)
    assert b.positions[0].current_stop == 52000.0
    assert g.events == () and b.events == ()


def test_t8_hits_in_label_order_stops_unchanged() -> None:
    # Long_2 was opened first (smaller id): positions keep opening order, events label order.
    l2 = gold_pos(78800.0, 79500.0, id=1, label="Long_2", is_base=False)
    l1 = gold_pos(78200.0, 79500.0, id=2, label="Long_1")
    r = mark([l2, l1], GOLD, 78100.0, 700.0, TS, None)
    assert [p.label for p in r.positions] == ["Long_2", "Long_1"]
    assert [p.current_stop for p in r.positions] == [78800.0, 78200.0]
    assert r.hit_ids == (2, 1)
    assert [e.params["key"] for e in r.events] == ["GOLD_MINI_Long_1", "GOLD_MINI_Long_2"]


def test_label_order_is_numeric() -> None:
    l10 = gold_pos(79000.0, 79500.0, id=1, label="Long_10", is_base=False)
    l2 = gold_pos(79000.0, 79500.0, id=2, label="Long_2", is_base=False)
    r = mark([l10, l2], GOLD, 78100.0, 0.0, TS, None)
    assert r.hit_ids == (2, 1)


def test_t11_atr_zero_leaves_stop() -> None:
    r = mark([gold_pos(78600.0, 79000.0)], GOLD, 80000.0, 0.0, TS, None)
    (p,) = r.positions
    assert (p.highest_close, p.current_stop) == (80000.0, 78600.0)


def test_stop_hit_reports_stop_after_ratchet() -> None:
    # High 80000, ATR 700: the trail lifts the stop to 78600 and 78500 is below it.
    r = mark([gold_pos(78000.0, 80000.0)], GOLD, 78500.0, 700.0, TS, None)
    assert r.positions[0].current_stop == 78600.0
    assert r.events == (
        Code("stop_hit", {"key": "GOLD_MINI_Long_1", "price": 78500.0, "stop": 78600.0}),
    )


def test_unrealized_uses_basis_and_keeps_version() -> None:
    pos = v.position(BN35, lots=3, entry=52000.0, basis=53105.0, version=7)
    r = mark([pos], BN35, 53200.0, 350.0, TS, None)
    assert r.positions[0].unrealized_pnl == 9_975.0
    assert r.positions[0].version == 7


def test_stale_mark_changes_nothing() -> None:
    pos = gold_pos(78000.0, 78500.0)
    last = Mark(79000.0, 700.0, LATER)
    r = mark([pos], GOLD, 70000.0, 700.0, TS, last)
    assert r.stale and r.mark is None
    assert r.positions[0] is pos
    assert r.events == () and r.hit_ids == ()


def test_equal_instant_marks_again() -> None:
    pos = gold_pos(78000.0, 78500.0)
    r = mark([pos], GOLD, 77000.0, 700.0, TS, Mark(79000.0, 700.0, TS))
    assert not r.stale and r.hit_ids == (pos.id,)
    assert r.mark == Mark(77000.0, 700.0, TS)


def test_aware_instants_compare_across_zones() -> None:
    ist = dt.timezone(dt.timedelta(hours=5, minutes=30))
    same_instant = TS.astimezone(ist)
    r = mark([], GOLD, 1.0, 0.0, same_instant, Mark(2.0, 0.0, TS))
    assert not r.stale


def test_skips_pending_open_and_incomplete_rolls() -> None:
    pending = gold_pos(78000.0, 78500.0, id=1, status="pending_open")
    rolling = gold_pos(78000.0, 78500.0, id=2, label="Long_2", rollover_status="failed")
    in_prog = gold_pos(78000.0, 78500.0, id=3, label="Long_3", rollover_status="in_progress")
    rolled = gold_pos(78000.0, 78500.0, id=4, label="Long_4", rollover_status="rolled")
    r = mark([pending, rolling, in_prog, rolled], GOLD, 70000.0, 700.0, TS, None)
    assert r.positions[0] is pending and r.positions[1] is rolling and r.positions[2] is in_prog
    assert r.positions[3].unrealized_pnl == (70000.0 - 78500.0) * 10.0
    assert r.hit_ids == (4,)


def test_unchanged_position_is_not_copied() -> None:
    pos = gold_pos(78600.0, 80000.0)
    first = mark([pos], GOLD, 79000.0, 700.0, TS, None).positions[0]
    again = mark([first], GOLD, 79000.0, 700.0, LATER, None).positions[0]
    assert again is first


def test_empty_instrument_still_records_mark() -> None:
    r = mark([], GOLD, 78000.0, 0.0, TS, None)
    assert r.mark == Mark(78000.0, 0.0, TS) and r.positions == ()


@given(
    st.lists(st.tuples(v.prices, v.atrs), min_size=1, max_size=20),
    st.floats(min_value=100.0, max_value=200_000.0),
)
def test_ratchet_never_lowers_stop(marks: list[tuple[float, float]], stop: float) -> None:
    pos = v.position(GOLD, entry=stop + 1.0, stop=stop)
    for i, (price, atr) in enumerate(marks):
        before = pos.current_stop
        r = mark([pos], GOLD, price, atr, TS + dt.timedelta(seconds=i), None)
        pos = r.positions[0]
        assert pos.current_stop >= before
        assert pos.highest_close >= price
        assert (price < pos.current_stop) == bool(r.hit_ids)


@given(
    v.prices,
    st.floats(min_value=-1e6, max_value=1e6),
    st.floats(min_value=0.01, max_value=5_000.0),
    v.instruments,
)
def test_effective_stop_below_price(price: float, stop: float, atr: float, inst: object) -> None:
    s, fallback = effective_stop(price, stop, atr, inst)  # type: ignore[arg-type]
    assert s < price
    assert fallback is not (0 < stop < price)
