"""Strike selection, limit ladder, roll plans and roll accounting (domain 9.5-9.11, 12.6-12.9)."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pm_core import rollover
from pm_core.config import DomainConfig, LotSizeEntry, PortfolioConfig, default_config
from pm_core.marking import mark
from pm_core.model import Action, Code, EquityUpdate, Position, Quote

BN = default_config().instrument("BANK_NIFTY")
NOW = dt.datetime(2026, 1, 2, 10, tzinfo=dt.UTC)
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))


@pytest.mark.parametrize(
    ("price", "strike"),
    [
        (52100, 52000),
        (52050, 52000),
        (52249.99, 52000),
        (52250, 52000),
        (52250.01, 52500),
        (52300, 52500),
        (52400, 52500),
        (52600, 52500),
        (52700, 52500),
        (52749.5, 52500),
        (52750, 53000),
        (52850, 53000),
        (51250, 51000),
        (51750, 52000),
    ],
)
def test_strike_vectors(price: float, strike: float) -> None:
    assert rollover.select_strike(float(price), 500.0) == float(strike)


@given(
    st.floats(min_value=1.0, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.sampled_from([50.0, 100.0, 500.0, 1000.0]),
)
def test_strike_is_nearest_multiple(price: float, interval: float) -> None:
    strike = rollover.select_strike(price, interval)
    step = Decimal(repr(interval))
    assert Decimal(repr(strike)) % step == 0
    assert abs(Decimal(repr(strike)) - Decimal(repr(price))) <= step / 2


# --------------------------------------------------------------------------- ladder (12.8)

BUY_LADDER = ["52130.00", "52156.00", "52182.00", "52208.00", "52234.00", "52260.00"]
SELL_LADDER = ["51870.00", "51844.00", "51818.00", "51792.00", "51766.00", "51740.00"]


@pytest.mark.parametrize(("action", "expected"), [("BUY", BUY_LADDER), ("SELL", SELL_LADDER)])
def test_ladder_vector(action: Action, expected: list[str]) -> None:
    plan = rollover.ladder_plan(action, Decimal("52000"), 0.05, PortfolioConfig())
    assert plan.prices == tuple(Decimal(p) for p in expected)
    assert plan.polls == 6 and plan.market_fallback
    bid, ask = Decimal("51990"), Decimal("52010")
    # the fresh mid (52000) is never more aggressive than this ladder
    assert [plan.price_at(k, bid, ask) for k in range(6)] == list(plan.prices)


@pytest.mark.parametrize(
    ("action", "ltp", "tick", "p0"),
    [
        ("BUY", "150", 0.05, "150.40"),
        ("SELL", "1250", 0.05, "1246.85"),
        ("SELL", "600", 0.05, "598.50"),
        ("BUY", "700", 0.05, "701.75"),
        ("SELL", "79000", 1.0, "78802"),
        ("BUY", "79400", 1.0, "79599"),
    ],
)
def test_first_ladder_price(action: Action, ltp: str, tick: float, p0: str) -> None:
    assert rollover.ladder_price(action, Decimal(ltp), 0, tick, 0.25, 0.05) == Decimal(p0)


def test_modification_follows_a_better_mid() -> None:
    p1 = rollover.ladder_price("BUY", Decimal("100"), 1, 0.05, 0.25, 0.05)
    assert p1 == Decimal("100.30")
    # the market ran away: mid 101.02 -> BUY at ceil_tick(mid)
    assert rollover.modification_price(
        "BUY", p1, Decimal("101.00"), Decimal("101.04"), 0.05
    ) == Decimal("101.05")
    p1s = rollover.ladder_price("SELL", Decimal("100"), 1, 0.05, 0.25, 0.05)
    assert rollover.modification_price(
        "SELL", p1s, Decimal("98.96"), Decimal("99.00"), 0.05
    ) == Decimal("98.95")
    plan = rollover.ladder_plan("BUY", Decimal("100"), 0.05, PortfolioConfig())
    assert plan.price_at(0, Decimal("200"), Decimal("200")) == plan.prices[0]


def test_tick_rounding() -> None:
    tick = Decimal("0.05")
    assert rollover.ceil_tick(Decimal("150.375"), tick) == Decimal("150.40")
    assert rollover.floor_tick(Decimal("150.375"), tick) == Decimal("150.35")
    assert rollover.ceil_tick(Decimal("150.35"), tick) == Decimal("150.35")
    with pytest.raises(ValueError):
        rollover.ladder_price("BUY", Decimal(0), 0, tick, 0.25, 0.05)


ltps = st.decimals(min_value=Decimal("0.05"), max_value=Decimal("200000"), places=2)
ticks = st.sampled_from([Decimal("0.05"), Decimal("0.1"), Decimal("1"), Decimal("0.25")])


@given(ltps, ticks, st.integers(min_value=0, max_value=20))
def test_ladder_monotone_on_tick_grid(ltp: Decimal, tick: Decimal, steps: int) -> None:
    buys = [rollover.ladder_price("BUY", ltp, k, tick, 0.25, 0.05) for k in range(steps + 1)]
    sells = [rollover.ladder_price("SELL", ltp, k, tick, 0.25, 0.05) for k in range(steps + 1)]
    assert all(a <= b for a, b in itertools.pairwise(buys))
    assert all(a >= b for a, b in itertools.pairwise(sells))
    assert all(p >= ltp and p % tick == 0 for p in buys)
    assert all(p <= ltp and p % tick == 0 for p in sells)


# --------------------------------------------------------------------------- reference price


def test_reference_price_order_and_fallback() -> None:
    cur, nxt = dt.date(2025, 12, 30), dt.date(2026, 1, 27)
    quotes = {
        ("NFO", "BANKNIFTY27JAN26FUT"): Quote(Decimal(0)),
        ("NFO", "BANKNIFTY30DEC25FUT"): Quote(Decimal("53120.5")),
        ("NSE_INDEX", "BANKNIFTY"): Quote(Decimal("53000")),
    }
    ref = rollover.reference_price(BN, quotes, cur, nxt, None)
    assert (ref.price, ref.source) == (53120.5, "BANKNIFTY30DEC25FUT")
    none = rollover.reference_price(BN, {}, cur, nxt, None)
    assert none.price is None and none.code is not None
    assert rollover.rollover_message(none.code) == (
        "Could not get reference price (tried: BANKNIFTY27JAN26FUT, BANKNIFTY30DEC25FUT, BANKNIFTY)"
    )
    fallback = rollover.reference_price(BN, {}, cur, cur, 52010.0)
    assert (fallback.price, fallback.source) == (52010.0, "signal")


# --------------------------------------------------------------------------- roll plans


def bn35() -> DomainConfig:
    config = default_config()
    bn = attrs.evolve(config.instrument("BANK_NIFTY"), lot_size_history=(LotSizeEntry(None, 35),))
    return attrs.evolve(config, instruments={**config.instruments, "BANK_NIFTY": bn})


def bn_position(**changes: Any) -> Position:
    base = Position(
        id=7,
        instrument="BANK_NIFTY",
        label="Long_1",
        status="open",
        is_base_position=True,
        lots=3,
        quantity=105,
        lot_size=35,
        point_value=35.0,
        entry_timestamp=dt.datetime(2025, 12, 1, 10, tzinfo=dt.UTC),
        entry_price=52000.0,
        initial_stop=51000.0,
        current_stop=51500.0,
        highest_close=52600.0,
        atr=350.0,
        basis=52000.0,
        contract_month="2025-12",
        expiry=dt.date(2025, 12, 30),
        strike=52000.0,
        ce_symbol="BANKNIFTY30DEC2552000CE",
        pe_symbol="BANKNIFTY30DEC2552000PE",
        ce_entry_price=420.0,
        pe_entry_price=400.0,
    )
    return attrs.evolve(base, **changes)


BN_QUOTES = {
    ("NFO", "BANKNIFTY27JAN26FUT"): Quote(Decimal("53120")),
    ("NFO", "BANKNIFTY30DEC2552000PE"): Quote(Decimal("150")),
    ("NFO", "BANKNIFTY30DEC2552000CE"): Quote(Decimal("1250")),
    ("NFO", "BANKNIFTY27JAN2653000CE"): Quote(Decimal("700")),
    ("NFO", "BANKNIFTY27JAN2653000PE"): Quote(Decimal("600")),
}


def bn_plan(position: Position, config: DomainConfig) -> rollover.RollPlan:
    plan = rollover.plan_roll(position, config, BN_QUOTES)
    assert isinstance(plan, rollover.RollPlan)
    return plan


def run_roll(
    position: Position, plan: rollover.RollPlan, prices: list[float], equity: float
) -> list[rollover.RollStepResult]:
    pos = rollover.start_roll(position, plan)
    fills: dict[int, float] = {}
    results = []
    for step, price in enumerate(prices, start=1):
        fills[step] = price
        result = rollover.apply_roll_step(pos, plan, step, fills, equity, equity)
        if result.changes.portfolio is not None:
            equity = result.changes.portfolio.closed_equity
        pos = result.position
        results.append(result)
    return results


def test_bank_nifty_plan_is_hedge_first_dry_run() -> None:
    config = bn35()
    position = bn_position()
    plan = bn_plan(position, config)
    assert (plan.new_expiry, plan.new_strike, plan.new_month) == (
        dt.date(2026, 1, 27),
        53000.0,
        "2026-01",
    )
    assert plan.reference is not None and plan.reference.price == 53120.0
    assert [(s.name, s.action, s.symbol, s.quantity, s.p0) for s in plan.steps] == [
        ("close old PE", "BUY", "BANKNIFTY30DEC2552000PE", 105, Decimal("150.40")),
        ("close old CE", "SELL", "BANKNIFTY30DEC2552000CE", 105, Decimal("1246.85")),
        ("open new CE", "BUY", "BANKNIFTY27JAN2653000CE", 105, Decimal("701.75")),
        ("open new PE", "SELL", "BANKNIFTY27JAN2653000PE", 105, Decimal("598.50")),
    ]
    assert plan.start_step == 1 and len(plan.remaining) == 4


def test_bank_nifty_roll_accounting_vector() -> None:
    config = bn35()
    position = bn_position()
    plan = bn_plan(position, config)
    results = run_roll(position, plan, [151.0, 1248.0, 703.0, 598.0], 5_000_000.0)
    closed = results[1]
    assert closed.close_value == 53097.0
    assert rollover.entry_value(position, future=False) == 52020.0
    assert closed.realized == 113_085.0
    assert closed.changes.portfolio == EquityUpdate(5_113_085.0, 5_113_085.0)
    (ledger,) = closed.changes.ledger
    assert (ledger.kind, ledger.amount, ledger.equity_after) == (
        "rollover_pnl",
        113_085.0,
        5_113_085.0,
    )
    assert closed.position.unrealized_pnl == 0.0
    assert closed.position.rollover_realized_pnl == 113_085.0
    final = results[3]
    assert final.spread == 840.0
    assert final.changes.statistics == {"rollover_cost_total": 840.0}
    assert final.changes.portfolio is None and final.changes.ledger == ()
    new = final.position
    assert new.basis == 53105.0
    assert (new.strike, new.expiry, new.pe_entry_price, new.ce_entry_price) == (
        53000.0,
        dt.date(2026, 1, 27),
        598.0,
        703.0,
    )
    assert (new.ce_symbol, new.pe_symbol) == ("BANKNIFTY27JAN2653000CE", "BANKNIFTY27JAN2653000PE")
    assert (new.entry_price, new.initial_stop, new.current_stop, new.highest_close) == (
        52000.0,
        51000.0,
        51500.0,
        52600.0,
    )
    assert (new.original_expiry, new.original_strike) == (dt.date(2025, 12, 30), 52000.0)
    assert (new.rollover_count, new.rollover_status, new.rollover_spread_total) == (
        1,
        "rolled",
        840.0,
    )
    assert new.contract_month == "2026-01" and new.rollover_realized_pnl == 113_085.0
    assert final.codes[0].code == "rolled"
    marked = mark([new], config.instrument("BANK_NIFTY"), 53200.0, 350.0, NOW, None)
    assert marked.positions[0].unrealized_pnl == 9_975.0


def test_bank_nifty_roll_premiums_unknown() -> None:
    config = bn35()
    position = bn_position(ce_entry_price=None, pe_entry_price=None)
    results = run_roll(position, bn_plan(position, config), [151.0, 1248.0], 5_000_000.0)
    assert results[1].realized == (53097 - 52000) * 105 == 115_185.0


def test_gold_roll_vector() -> None:
    config = default_config()
    position = attrs.evolve(
        bn_position(),
        instrument="GOLD_MINI",
        lots=2,
        quantity=200,
        lot_size=100,
        point_value=10.0,
        entry_price=78000.0,
        basis=78000.0,
        strike=None,
        ce_symbol=None,
        pe_symbol=None,
        ce_entry_price=None,
        pe_entry_price=None,
        futures_symbol="GOLDM05DEC25FUT",
        expiry=dt.date(2025, 12, 5),
    )
    quotes = {("MCX", "GOLDM05DEC25FUT"): Quote(Decimal("79000"))}
    plan = rollover.plan_roll(position, config, quotes)
    assert isinstance(plan, rollover.RollPlan)
    assert [(s.action, s.symbol, s.quantity, s.p0) for s in plan.steps] == [
        ("SELL", "GOLDM05DEC25FUT", 2, Decimal("78802")),
        ("BUY", "GOLDM05JAN26FUT", 2, None),
    ]
    results = run_roll(position, plan, [78990.0, 79410.0], 5_000_000.0)
    assert results[0].realized == 19_800.0
    assert results[0].changes.portfolio == EquityUpdate(5_019_800.0, 5_019_800.0)
    new = results[1].position
    assert results[1].spread == 8_400.0
    assert (new.basis, new.entry_price, new.entry_fill_price) == (79410.0, 78000.0, 79410.0)
    assert new.futures_symbol == "GOLDM05JAN26FUT" and new.expiry == dt.date(2026, 1, 5)


def test_lot_size_change_keeps_lots() -> None:
    config = default_config()  # 35 until Nov 2025, 30 from the Dec series
    position = bn_position(
        contract_month="2025-11",
        expiry=dt.date(2025, 11, 25),
        ce_symbol="BANKNIFTY25NOV2552000CE",
        pe_symbol="BANKNIFTY25NOV2552000PE",
    )
    quotes = {("NFO", "BANKNIFTY30DEC25FUT"): Quote(Decimal("52100"))}
    plan = rollover.plan_roll(position, config, quotes)
    assert isinstance(plan, rollover.RollPlan)
    assert plan.new_expiry == dt.date(2025, 12, 30) and plan.new_strike == 52000.0
    assert [s.quantity for s in plan.steps] == [105, 105, 90, 90]
    assert all(s.lots == 3 for s in plan.steps)
    results = run_roll(position, plan, [100.0, 300.0, 310.0, 105.0], 5_000_000.0)
    # realized with pv 35: close 52200 vs entry 52020
    assert results[1].realized == (52000 + 300 - 100 - 52020.0) * 3 * 35.0
    new = results[3].position
    assert (new.lots, new.lot_size, new.point_value, new.quantity) == (3, 30, 30.0, 90)
    assert results[3].spread == ((52000 + 310 - 105) - 52200) * 3 * 35.0


def test_failed_step_then_resume() -> None:
    config = bn35()
    position = bn_position()
    plan = bn_plan(position, config)
    started = rollover.start_roll(position, plan)
    step1 = rollover.apply_roll_step(started, plan, 1, {1: 151.0}, 5e6, 5e6)
    assert step1.realized is None and step1.changes.portfolio is None
    # step 2 has no LTP: the leg fails before any order
    quotes_without_ce = {k: v for k, v in BN_QUOTES.items() if k[1] != "BANKNIFTY30DEC2552000CE"}
    assert rollover.positive_ltp(quotes_without_ce.get(("NFO", "BANKNIFTY30DEC2552000CE"))) is None
    code = rollover.quote_unavailable("BANKNIFTY30DEC2552000CE")
    assert rollover.rollover_message(code) == "Could not get LTP for BANKNIFTY30DEC2552000CE"
    failed = rollover.fail_roll(step1.position)
    assert (failed.rollover_status, failed.rollover_step) == ("failed", 1)
    assert failed.roll_incomplete and failed.rollover_realized_pnl == 0.0
    marked = mark([failed], config.instrument("BANK_NIFTY"), 53200.0, 350.0, NOW, None)
    assert marked.positions[0] == failed  # marking skips an incomplete roll
    held = rollover.legs_held(failed, config.instrument("BANK_NIFTY"))
    assert [(h.symbol, h.quantity) for h in held] == [("BANKNIFTY30DEC2552000CE", 105)]
    assert rollover.resume_step(failed) == 2
    # resume: persisted target kept even with no reference quote at all
    resumed = rollover.plan_roll(failed, config, {})
    assert isinstance(resumed, rollover.RollPlan)
    assert (resumed.start_step, resumed.new_strike, resumed.new_expiry) == (
        2,
        53000.0,
        dt.date(2026, 1, 27),
    )
    assert [s.step for s in resumed.remaining] == [2, 3, 4]
    again = rollover.start_roll(failed, resumed)
    assert (again.rollover_status, again.rollover_step) == ("in_progress", 1)
    step2 = rollover.apply_roll_step(again, resumed, 2, {1: 151.0, 2: 1248.0}, 5e6, 5e6)
    assert step2.realized == 113_085.0
    assert rollover.legs_held(step2.position, config.instrument("BANK_NIFTY")) == ()
    step3 = rollover.apply_roll_step(
        step2.position, resumed, 3, {1: 151.0, 2: 1248.0, 3: 703.0}, 5e6, 5e6
    )
    held3 = rollover.legs_held(step3.position, config.instrument("BANK_NIFTY"))
    assert [(h.symbol, h.quantity) for h in held3] == [("BANKNIFTY27JAN2653000CE", 105)]
    with pytest.raises(ValueError):
        rollover.apply_roll_step(step3.position, resumed, 3, {3: 703.0}, 5e6, 5e6)


def test_reselect_strike_only_before_new_ce() -> None:
    config = bn35()
    failed = bn_position(
        rollover_status="failed",
        rollover_step=2,
        rollover_target_expiry=dt.date(2026, 1, 27),
        rollover_target_strike=53000.0,
    )
    quotes = {("NFO", "BANKNIFTY27JAN26FUT"): Quote(Decimal("53800"))}
    plan = rollover.plan_roll(failed, config, quotes, reselect_strike=True)
    assert isinstance(plan, rollover.RollPlan) and plan.new_strike == 54000.0
    after_ce = attrs.evolve(failed, rollover_step=3)
    plan3 = rollover.plan_roll(after_ce, config, quotes, reselect_strike=True)
    assert isinstance(plan3, rollover.RollPlan) and plan3.new_strike == 53000.0


def test_no_reference_price_starts_nothing() -> None:
    code = rollover.plan_roll(bn_position(), bn35(), {})
    assert isinstance(code, Code) and code.code == "no_reference_price"


def test_roll_blocker_market_hours_and_auto_switch() -> None:
    config = bn35()
    bn = config.instrument("BANK_NIFTY")
    open_at = dt.datetime(2025, 12, 15, 10, 0, tzinfo=IST)
    closed_at = dt.datetime(2025, 12, 15, 15, 30, 1, tzinfo=IST)
    assert rollover.roll_blocker(bn, open_at, config, scheduled=True) is None
    blocked = rollover.roll_blocker(bn, closed_at, config, scheduled=False)
    assert blocked is not None and blocked.code == "outside_market_hours"
    off = attrs.evolve(config, portfolio=PortfolioConfig(enable_auto_rollover=False))
    assert rollover.roll_blocker(bn, open_at, off, scheduled=False) is None
    auto = rollover.roll_blocker(bn, open_at, off, scheduled=True)
    assert auto is not None and auto.code == "auto_rollover_disabled"


def test_roll_intents_use_roll_ids_and_limit_prices() -> None:
    config = bn35()
    position = bn_position(rollover_count=2)
    plan = bn_plan(position, config)
    group = rollover.roll_group_id(position)
    assert group == "r7.3"
    (first,) = rollover.roll_intents(config.instrument("BANK_NIFTY"), plan, plan.steps[0], group)
    assert (first.client_order_id, first.origin, first.pricetype, first.limit_price) == (
        "pm-r7.3-1-PE-1",
        "rollover",
        "LIMIT",
        Decimal("150.40"),
    )
    assert (first.action, first.quantity, first.lots, first.group_id) == ("BUY", 105, 3, "r7.3")
    frozen = attrs.evolve(config.instrument("BANK_NIFTY"), freeze_quantity=70)
    children = rollover.roll_intents(
        frozen, plan, plan.steps[3], group, attempt=2, limit_price=Decimal("590.00")
    )
    assert [(c.client_order_id, c.quantity, c.lots, c.limit_price) for c in children] == [
        ("pm-r7.3-4-PE-2.1", 70, 2, Decimal("590.00")),
        ("pm-r7.3-4-PE-2.2", 35, 1, Decimal("590.00")),
    ]
