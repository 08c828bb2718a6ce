"""Rollover: strike selection, limit ladder prices and roll plans (domain 9.5-9.13)."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

import attrs

from pm_core.calendar import (
    Contract,
    format_expiry,
    futures_symbol,
    is_session_open,
    month_key,
    next_contract,
    option_symbol,
)
from pm_core.config import DomainConfig, InstrumentConfig, PortfolioConfig
from pm_core.model import (
    Action,
    ChangeSet,
    Code,
    EquityUpdate,
    LedgerEntry,
    Leg,
    OrderIntent,
    Position,
    Quote,
)
from pm_core.orders import child_order_id, client_order_id, split_quantity


def to_decimal(value: float | int | Decimal | str) -> Decimal:
    """The exact decimal a number is written as (floats via their shortest round-trip form)."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def select_strike(price: float, interval: float) -> float:
    """ATM strike: nearest multiple of ``interval``, exact ties to the even multiple."""
    if not interval > 0:
        raise ValueError(f"strike interval must be > 0, got {interval!r}")
    step = to_decimal(interval)
    ratio = (to_decimal(price) / step).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    return float(ratio * step)


# --------------------------------------------------------------------------- rollover codes


def outside_market_hours(instrument: str) -> Code:
    """The exchange session is closed: no roll step runs, nothing changes."""
    return Code("outside_market_hours", {"instrument": instrument})


def no_reference_price(symbols: Sequence[str]) -> Code:
    """No positive LTP anywhere in the strike reference list: the roll does not start."""
    return Code("no_reference_price", {"symbols": ", ".join(symbols)})


def quote_unavailable(symbol: str) -> Code:
    """A leg has no positive LTP to price its ladder from: the leg fails."""
    return Code("quote_unavailable", {"symbol": symbol})


def leg_failed(step: str, detail: str) -> Code:
    """A roll step was rejected or cancelled with nothing filled."""
    return Code("leg_failed", {"step": step, "detail": detail})


def leg_timeout(step: str) -> Code:
    """The ladder ran out without a fill and the market fallback is off."""
    return Code("leg_timeout", {"step": step})


def contract_expired(expiry: dt.date) -> Code:
    """The held contract is past its expiry: roll manually."""
    return Code("contract_expired", {"expiry": format_expiry(expiry)})


def rolled(key: str, old_expiry: dt.date, new_expiry: dt.date) -> Code:
    """A roll completed: the position now holds the next contract."""
    return Code(
        "rolled",
        {"key": key, "from": format_expiry(old_expiry), "to": format_expiry(new_expiry)},
    )


ROLLOVER_MESSAGES = {
    "outside_market_hours": "Market closed for {instrument}",
    "no_reference_price": "Could not get reference price (tried: {symbols})",
    "quote_unavailable": "Could not get LTP for {symbol}",
    "leg_failed": "Failed to {step}: {detail}",
    "leg_timeout": "Timed out trying to {step}",
    "contract_expired": "Contract expired on {expiry}: roll manually",
    "rolled": "Rolled {key} from {from} to {to}",
}


def rollover_message(code: Code) -> str:
    """Human text of a rollover code (domain 9.13)."""
    template = ROLLOVER_MESSAGES.get(code.code)
    return code.code if template is None else template.format(**code.params)


# --------------------------------------------------------------------------- reference price


@attrs.frozen
class ReferencePrice:
    """The strike reference: the price and where it came from (``signal`` = the fallback)."""

    price: float | None
    source: str | None
    tried: tuple[str, ...]

    @property
    def code(self) -> Code | None:
        """``no_reference_price`` when nothing gave a price."""
        return None if self.price is not None else no_reference_price(self.tried)


def reference_quotes_for(
    instrument: InstrumentConfig, cur_expiry: dt.date, next_expiry: dt.date
) -> tuple[tuple[str, str], ...]:
    """(exchange, symbol) of each strike reference, ``{next}``/``{cur}`` filled, in order."""
    nxt, cur = format_expiry(next_expiry), format_expiry(cur_expiry)
    return tuple(
        (q.exchange, q.symbol.replace("{next}", nxt).replace("{cur}", cur))
        for q in instrument.reference_quotes
    )


def reference_price(
    instrument: InstrumentConfig,
    quotes: Mapping[tuple[str, str], Quote],
    cur_expiry: dt.date,
    next_expiry: dt.date,
    fallback: float | None,
) -> ReferencePrice:
    """First positive LTP of the reference list, else ``fallback`` (the signal price at entry)."""
    tried: list[str] = []
    for exchange, symbol in reference_quotes_for(instrument, cur_expiry, next_expiry):
        tried.append(symbol)
        quote = quotes.get((exchange, symbol))
        if quote is not None and quote.ltp.is_finite() and quote.ltp > 0:
            return ReferencePrice(float(quote.ltp), symbol, tuple(tried))
    if fallback is not None and math.isfinite(fallback) and fallback > 0:
        return ReferencePrice(fallback, "signal", tuple(tried))
    return ReferencePrice(None, None, tuple(tried))


# --------------------------------------------------------------------------- limit ladder


def ceil_tick(value: Decimal, tick: Decimal) -> Decimal:
    """Smallest multiple of ``tick`` at or above ``value`` (a BUY never gets less aggressive)."""
    return (value / tick).to_integral_value(rounding=ROUND_CEILING) * tick


def floor_tick(value: Decimal, tick: Decimal) -> Decimal:
    """Largest multiple of ``tick`` at or below ``value`` (a SELL never gets more passive)."""
    return (value / tick).to_integral_value(rounding=ROUND_FLOOR) * tick


def ladder_price(
    action: Action,
    ltp: Decimal | float,
    k: int,
    tick: Decimal | float,
    initial_buffer_pct: Decimal | float,
    increment_pct: Decimal | float,
) -> Decimal:
    """Limit price of ladder step ``k``, always from the original LTP (domain 9.7)."""
    if k < 0:
        raise ValueError("ladder steps start at 0")
    price, step = to_decimal(ltp), to_decimal(tick)
    if not price > 0 or not step > 0:
        raise ValueError("ladder needs a positive LTP and tick")
    buffer = to_decimal(initial_buffer_pct) + k * to_decimal(increment_pct)
    if action == "BUY":
        return ceil_tick(price * (1 + buffer / 100), step)
    return floor_tick(price * (1 - buffer / 100), step)


def modification_price(
    action: Action, p_k: Decimal, bid: Decimal, ask: Decimal, tick: Decimal | float
) -> Decimal:
    """A ladder modification: P_k, or the fresh mid when more aggressive (domain 9.7 step 4)."""
    step = to_decimal(tick)
    mid = (bid + ask) / 2
    if action == "BUY":
        return max(p_k, ceil_tick(mid, step))
    return min(p_k, floor_tick(mid, step))


@attrs.frozen
class LadderPlan:
    """One leg's ladder: prices P_0..P_n, the poll wait and what happens after the last poll."""

    action: Action
    ltp: Decimal
    tick: Decimal
    prices: tuple[Decimal, ...]  # P_0 is placed; P_1..P_n are the modifications
    poll_interval_s: float
    market_fallback: bool

    @property
    def polls(self) -> int:
        """Polls before the cancel: after the placement and after every modification."""
        return len(self.prices)

    def price_at(self, k: int, bid: Decimal | None = None, ask: Decimal | None = None) -> Decimal:
        """Price to send at step ``k``; modifications follow a fresh mid when it is better."""
        p_k = self.prices[k]
        if k == 0 or bid is None or ask is None or not (bid > 0 and ask > 0):
            return p_k
        return modification_price(self.action, p_k, bid, ask, self.tick)


def ladder_plan(
    action: Action, ltp: Decimal | float, tick: Decimal | float, portfolio: PortfolioConfig
) -> LadderPlan:
    """The ladder of one leg from the portfolio's rollover settings (domain 9.7)."""
    prices = tuple(
        ladder_price(
            action,
            ltp,
            k,
            tick,
            portfolio.rollover_initial_buffer_pct,
            portfolio.rollover_increment_pct,
        )
        for k in range(portfolio.rollover_max_retries + 1)
    )
    return LadderPlan(
        action=action,
        ltp=to_decimal(ltp),
        tick=to_decimal(tick),
        prices=prices,
        poll_interval_s=portfolio.rollover_retry_interval_s,
        market_fallback=portfolio.rollover_market_fallback,
    )


def positive_ltp(quote: Quote | None) -> Decimal | None:
    """The quote's LTP when it is positive (a ladder needs one), else None."""
    if quote is None or not quote.ltp.is_finite() or not quote.ltp > 0:
        return None
    return quote.ltp


# --------------------------------------------------------------------------- roll plans


@attrs.frozen
class RollStep:
    """One order of a roll: which leg, direction, symbol, broker quantity and its P_0."""

    step: int  # 1-based, hedge first
    name: str  # "close old PE": used in leg_failed messages
    leg: Leg
    action: Action
    symbol: str
    exchange: str
    quantity: int  # broker units (openalgo.md 4)
    lots: int
    opens: bool  # True for the new contract's legs
    ltp: Decimal | None = None
    p0: Decimal | None = None


@attrs.frozen
class RollPlan:
    """What a roll does (also the dry-run answer): target contract, strike, steps, P_0 per leg."""

    position_id: int
    key: str
    instrument: str
    lots: int
    old_month: str | None
    old_expiry: dt.date
    old_strike: float | None
    old_lot_size: int
    old_point_value: float
    new_month: str
    new_expiry: dt.date
    new_strike: float | None
    new_lot_size: int
    new_point_value: float
    steps: tuple[RollStep, ...]
    start_step: int = 1  # first step still to run (resume)
    reference: ReferencePrice | None = None

    @property
    def close_steps(self) -> int:
        """Number of steps that close old legs (they come first)."""
        return sum(1 for s in self.steps if not s.opens)

    @property
    def is_future(self) -> bool:
        """Whether the roll trades futures (one leg each way) rather than option pairs."""
        return any(s.leg == "FUT" for s in self.steps)

    @property
    def remaining(self) -> tuple[RollStep, ...]:
        """Steps still to run, in order."""
        return tuple(s for s in self.steps if s.step >= self.start_step)


def _old_symbols(position: Position, inst: InstrumentConfig) -> dict[Leg, str]:
    if position.expiry is None:
        raise ValueError(f"{position.key} has no expiry to roll from")
    if inst.kind == "future":
        return {"FUT": position.futures_symbol or futures_symbol(inst.symbol_root, position.expiry)}
    if position.strike is None:
        raise ValueError(f"{position.key} has no strike to roll from")
    return {
        "PE": position.pe_symbol
        or option_symbol(inst.symbol_root, position.expiry, position.strike, "PE"),
        "CE": position.ce_symbol
        or option_symbol(inst.symbol_root, position.expiry, position.strike, "CE"),
    }


def _new_symbols(inst: InstrumentConfig, expiry: dt.date, strike: float | None) -> dict[Leg, str]:
    if inst.kind == "future":
        return {"FUT": futures_symbol(inst.symbol_root, expiry)}
    assert strike is not None
    return {
        "CE": option_symbol(inst.symbol_root, expiry, strike, "CE"),
        "PE": option_symbol(inst.symbol_root, expiry, strike, "PE"),
    }


# (leg, action, opens, name) per step, hedge first: the short PE goes before the long CE on
# close and after it on open, so the account never holds a naked short option.
_SYNTHETIC_STEPS: tuple[tuple[Leg, Action, bool, str], ...] = (
    ("PE", "BUY", False, "close old PE"),
    ("CE", "SELL", False, "close old CE"),
    ("CE", "BUY", True, "open new CE"),
    ("PE", "SELL", True, "open new PE"),
)
_FUTURE_STEPS: tuple[tuple[Leg, Action, bool, str], ...] = (
    ("FUT", "SELL", False, "close old future"),
    ("FUT", "BUY", True, "open new future"),
)


def roll_steps_layout(inst: InstrumentConfig) -> tuple[tuple[Leg, Action, bool, str], ...]:
    """(leg, action, opens, name) of each roll step of this instrument kind (domain 9.8, 9.9)."""
    return _SYNTHETIC_STEPS if inst.kind == "synthetic_future" else _FUTURE_STEPS


def roll_target(position: Position, config: DomainConfig) -> Contract:
    """The contract a roll goes to: the persisted target on resume, else the next month."""
    inst = config.instruments[position.instrument]
    if position.expiry is None:
        raise ValueError(f"{position.key} has no expiry to roll from")
    month = position.contract_month or month_key(position.expiry.year, position.expiry.month)
    nxt = next_contract(inst, month, config)
    target = position.rollover_target_expiry if position.roll_incomplete else None
    if target is None or target == nxt.expiry:
        return nxt
    lot_size = inst.lot_size_for(target)
    return Contract(
        inst.id, month_key(target.year, target.month), target, lot_size, lot_size / inst.quote_unit
    )


def resume_step(position: Position) -> int:
    """The first step a roll (re)starts at: after the last completed one if incomplete."""
    return position.rollover_step + 1 if position.roll_incomplete else 1


def plan_roll(
    position: Position,
    config: DomainConfig,
    quotes: Mapping[tuple[str, str], Quote],
    *,
    reselect_strike: bool = False,
) -> RollPlan | Code:
    """The roll of ``position`` as a plan (dry run changes nothing), or ``no_reference_price``.

    A resumed roll keeps its persisted target expiry and strike; the strike is re-selected
    only when asked and only while the new CE (step 3) has not filled (domain 9.8).
    """
    inst = config.instruments[position.instrument]
    if position.expiry is None:
        raise ValueError(f"{position.key} has no expiry to roll from")
    target = roll_target(position, config)
    start = resume_step(position)
    reference: ReferencePrice | None = None
    new_strike: float | None = None
    if inst.kind == "synthetic_future":
        persisted = position.rollover_target_strike if position.roll_incomplete else None
        if persisted is not None and (position.rollover_step >= 3 or not reselect_strike):
            new_strike = persisted
        else:
            reference = reference_price(inst, quotes, position.expiry, target.expiry, None)
            if reference.price is None:
                return no_reference_price(reference.tried)
            assert inst.strike_interval is not None
            new_strike = select_strike(reference.price, inst.strike_interval)
    old = _old_symbols(position, inst)
    new = _new_symbols(inst, target.expiry, new_strike)
    old_qty = inst.broker_quantity(position.lots, position.lot_size)
    new_qty = inst.broker_quantity(position.lots, target.lot_size)
    portfolio = config.portfolio
    steps: list[RollStep] = []
    for n, (leg, action, opens, name) in enumerate(roll_steps_layout(inst), start=1):
        symbol = new[leg] if opens else old[leg]
        ltp = positive_ltp(quotes.get((inst.exchange, symbol)))
        p0 = (
            None
            if ltp is None
            else ladder_price(
                action,
                ltp,
                0,
                inst.tick_size,
                portfolio.rollover_initial_buffer_pct,
                portfolio.rollover_increment_pct,
            )
        )
        steps.append(
            RollStep(
                step=n,
                name=name,
                leg=leg,
                action=action,
                symbol=symbol,
                exchange=inst.exchange,
                quantity=new_qty if opens else old_qty,
                lots=position.lots,
                opens=opens,
                ltp=ltp,
                p0=p0,
            )
        )
    return RollPlan(
        position_id=position.id,
        key=position.key,
        instrument=inst.id,
        lots=position.lots,
        old_month=position.contract_month,
        old_expiry=position.expiry,
        old_strike=position.strike,
        old_lot_size=position.lot_size,
        old_point_value=position.point_value,
        new_month=target.month,
        new_expiry=target.expiry,
        new_strike=new_strike,
        new_lot_size=target.lot_size,
        new_point_value=target.point_value,
        steps=tuple(steps),
        start_step=start,
        reference=reference,
    )


# --------------------------------------------------------------------------- roll accounting


def close_value(plan: RollPlan, fills: Mapping[int, float]) -> float:
    """Value of the closed old contract: the close fill, or K_old + CE_close - PE_close."""
    by_leg = {s.leg: fills[s.step] for s in plan.steps if not s.opens}
    if "FUT" in by_leg:
        return by_leg["FUT"]
    assert plan.old_strike is not None
    return plan.old_strike + by_leg["CE"] - by_leg["PE"]


def open_value(plan: RollPlan, fills: Mapping[int, float]) -> float:
    """Value of the opened new contract: the open fill, or K_new + CE_open - PE_open."""
    by_leg = {s.leg: fills[s.step] for s in plan.steps if s.opens}
    if "FUT" in by_leg:
        return by_leg["FUT"]
    assert plan.new_strike is not None
    return plan.new_strike + by_leg["CE"] - by_leg["PE"]


def entry_value(position: Position, future: bool) -> float:
    """What the old contract was entered at: entry fill or K + CE - PE; unknown -> basis."""
    if future:
        known = position.entry_fill_price
        return known if known is not None else position.basis
    if (
        position.strike is not None
        and position.ce_entry_price is not None
        and position.pe_entry_price is not None
    ):
        return position.strike + position.ce_entry_price - position.pe_entry_price
    return position.basis


def roll_realized(position: Position, close: float, future: bool) -> float:
    """P&L booked when the old legs are closed: (close_value - entry_value) x lots x pv_old."""
    return (close - entry_value(position, future)) * position.lots * position.point_value


def roll_spread(open_: float, close: float, lots: int, old_point_value: float) -> float:
    """Roll cost (open_value - close_value) x lots x pv_old: a statistic, never P&L."""
    return (open_ - close) * lots * old_point_value


@attrs.frozen
class RollStepResult:
    """A filled roll step committed: the new position record and the changes to save."""

    position: Position
    changes: ChangeSet
    realized: float | None = None  # set when this step closed the last old leg
    close_value: float | None = None
    open_value: float | None = None
    spread: float | None = None  # set when this step opened the last new leg
    codes: tuple[Code, ...] = ()


def start_roll(position: Position, plan: RollPlan) -> Position:
    """The position as a roll starts or resumes: in progress with its target persisted."""
    return attrs.evolve(
        position,
        rollover_status="in_progress",
        rollover_step=plan.start_step - 1,
        rollover_target_expiry=plan.new_expiry,
        rollover_target_strike=plan.new_strike,
    )


def fail_roll(position: Position) -> Position:
    """A step failed: the roll is ``failed`` at the last completed step, to resume later."""
    return attrs.evolve(position, rollover_status="failed")


def apply_roll_step(
    position: Position,
    plan: RollPlan,
    step: int,
    fills: Mapping[int, float],
    closed_equity: float,
    equity_high: float,
) -> RollStepResult:
    """Commit a filled step; ``fills`` maps every filled step (this one included) to its price.

    Closing the last old leg books the realized roll P&L into closed equity (ledger
    ``rollover_pnl``) and zeroes unrealized P&L; opening the last new leg moves the position
    to the new contract with basis = open value and records the spread (domain 9.10).
    """
    if step not in fills:
        raise ValueError(f"step {step} has no fill")
    if not 1 <= step <= len(plan.steps):
        raise ValueError(f"step {step} is not a step of this roll")
    if position.rollover_step != step - 1:
        raise ValueError(
            f"{position.key}: step {step} cannot follow completed step {position.rollover_step}"
        )
    pos = attrs.evolve(position, rollover_status="in_progress", rollover_step=step)
    n_close = plan.close_steps
    if step == n_close:
        close = close_value(plan, fills)
        realized = roll_realized(position, close, plan.is_future)
        equity = closed_equity + realized
        pos = attrs.evolve(
            pos,
            unrealized_pnl=0.0,
            rollover_realized_pnl=position.rollover_realized_pnl + realized,
        )
        ledger = LedgerEntry(
            kind="rollover_pnl",
            amount=realized,
            equity_after=equity,
            position_id=position.id,
            note=f"roll {position.rollover_count + 1} of {position.key}",
        )
        changes = ChangeSet(
            update=(pos,),
            ledger=(ledger,),
            portfolio=EquityUpdate(equity, max(equity_high, equity)),
        )
        return RollStepResult(pos, changes, realized=realized, close_value=close)
    if step < len(plan.steps):
        return RollStepResult(pos, ChangeSet(update=(pos,)))
    close = close_value(plan, fills)
    opened = open_value(plan, fills)
    spread = roll_spread(opened, close, plan.lots, plan.old_point_value)
    new_fills = {s.leg: fills[s.step] for s in plan.steps if s.opens}
    symbols = {s.leg: s.symbol for s in plan.steps if s.opens}
    pos = attrs.evolve(
        pos,
        rollover_status="rolled",
        basis=opened,
        lot_size=plan.new_lot_size,
        point_value=plan.new_point_value,
        quantity=plan.lots * plan.new_lot_size,
        contract_month=plan.new_month,
        expiry=plan.new_expiry,
        strike=plan.new_strike,
        ce_symbol=symbols.get("CE"),
        pe_symbol=symbols.get("PE"),
        futures_symbol=symbols.get("FUT"),
        ce_entry_price=new_fills.get("CE"),
        pe_entry_price=new_fills.get("PE"),
        entry_fill_price=new_fills["FUT"] if plan.is_future else position.entry_fill_price,
        original_expiry=plan.old_expiry,
        original_strike=plan.old_strike,
        rollover_count=position.rollover_count + 1,
        rollover_spread_total=position.rollover_spread_total + spread,
        rollover_target_expiry=None,
        rollover_target_strike=None,
        unrealized_pnl=0.0,
    )
    changes = ChangeSet(update=(pos,), statistics={"rollover_cost_total": spread})
    return RollStepResult(
        pos,
        changes,
        close_value=close,
        open_value=opened,
        spread=spread,
        codes=(rolled(position.key, plan.old_expiry, plan.new_expiry),),
    )


# --------------------------------------------------------------------------- legs held


@attrs.frozen
class HeldLeg:
    """A leg the account should hold for a position: signed broker quantity on a symbol."""

    exchange: str
    symbol: str
    leg: Leg
    quantity: int  # signed, broker units


def legs_held(position: Position, inst: InstrumentConfig) -> tuple[HeldLeg, ...]:
    """Legs held right now; an incomplete roll holds only what its completed steps left."""
    if position.lots <= 0 or position.expiry is None:
        return ()
    synthetic = inst.kind == "synthetic_future"
    old_qty = inst.broker_quantity(position.lots, position.lot_size)

    def old_legs() -> list[HeldLeg]:
        symbols = _old_symbols(position, inst)
        if not synthetic:
            return [HeldLeg(inst.exchange, symbols["FUT"], "FUT", old_qty)]
        return [
            HeldLeg(inst.exchange, symbols["PE"], "PE", -old_qty),
            HeldLeg(inst.exchange, symbols["CE"], "CE", old_qty),
        ]

    if not position.roll_incomplete:
        return tuple(old_legs())
    layout = roll_steps_layout(inst)
    done = position.rollover_step
    held = [
        leg
        for leg in old_legs()
        if not any(
            n <= done and not opens and lg == leg.leg
            for n, (lg, _, opens, _) in enumerate(layout, start=1)
        )
    ]
    target = position.rollover_target_expiry
    if target is not None:
        new_qty = inst.broker_quantity(position.lots, inst.lot_size_for(target))
        strike = position.rollover_target_strike
        for n, (leg, action, opens, _) in enumerate(layout, start=1):
            if opens and n <= done and (strike is not None or not synthetic):
                symbol = _new_symbols(inst, target, strike)[leg]
                signed = new_qty if action == "BUY" else -new_qty
                held.append(HeldLeg(inst.exchange, symbol, leg, signed))
    return tuple(held)


# --------------------------------------------------------------------------- running a roll


def roll_blocker(
    inst: InstrumentConfig, now: dt.datetime, config: DomainConfig, *, scheduled: bool
) -> Code | None:
    """Why no roll step may run now (``outside_market_hours``), or None when it may.

    Scheduled runs also need enable_auto_rollover; manual rolls ignore it.
    """
    if scheduled and not config.portfolio.enable_auto_rollover:
        return Code("auto_rollover_disabled", {"instrument": inst.id})
    if not is_session_open(inst, now, config):
        return outside_market_hours(inst.id)
    return None


def roll_group_id(position: Position, roll_no: int | None = None) -> str:
    """Fingerprint part and group id of a roll's intents: ``r<position id>.<roll no>``."""
    number = position.rollover_count + 1 if roll_no is None else roll_no
    return f"r{position.id}.{number}"


def roll_intents(
    inst: InstrumentConfig,
    plan: RollPlan,
    step: RollStep,
    group_id: str,
    attempt: int = 1,
    limit_price: Decimal | None = None,
) -> tuple[OrderIntent, ...]:
    """Intents of one roll step: LIMIT at ``limit_price`` (default P_0), split above the freeze.

    The step number is the label number of the client order id (architecture 4.1).
    """
    price = limit_price if limit_price is not None else step.p0
    if price is None:
        raise ValueError(f"{step.name}: no limit price (no LTP for {step.symbol})")
    lot_size = plan.new_lot_size if step.opens else plan.old_lot_size
    unit = lot_size if inst.order_quantity_unit == "units" else 1
    parent = client_order_id(group_id, step.step, step.leg, attempt)
    slices = split_quantity(step.quantity, inst.freeze_quantity, unit)
    ref = float(step.ltp) if step.ltp is not None else float(price)
    return tuple(
        OrderIntent(
            client_order_id=parent if len(slices) == 1 else child_order_id(parent, n),
            origin="rollover",
            position_id=plan.position_id,
            leg=step.leg,
            seq=step.step,
            attempt=attempt,
            symbol=step.symbol,
            exchange=step.exchange,
            action=step.action,
            product=inst.product,
            pricetype="LIMIT",
            quantity=qty,
            lots=qty // unit,
            ref_price=ref,
            group_id=group_id,
            limit_price=price,
            instrument=inst.id,
        )
        for n, qty in enumerate(slices, start=1)
    )
