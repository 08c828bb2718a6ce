"""The decision flow: ``decide``, ``apply_fills``, ``apply_changes`` and the backtest ``step``.

Live processing and the backtest share these functions, so a replayed webhook log reproduces
the live decisions (architecture.md section 5, domain section 7).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal

import attrs

from pm_core import codes as reason
from pm_core.calendar import (
    entry_contract,
    futures_symbol,
    option_symbol,
)
from pm_core.config import DomainConfig, InstrumentConfig
from pm_core.gates import base_entry_gate, pyramid_gates
from pm_core.marking import effective_stop, mark
from pm_core.metrics import (
    RiskTotals,
    equity_figures,
    instrument_open_pnl,
    margin_available,
    risk_totals,
)
from pm_core.model import (
    EMPTY_MAP,
    EMPTY_MARKET,
    RECORDED_OUTCOMES,
    BaseSizing,
    ChangeSet,
    Code,
    Decision,
    DecisionPosition,
    EquityUpdate,
    Fill,
    LedgerEntry,
    Mark,
    MarketContext,
    OrderIntent,
    PendingExit,
    PortfolioSnapshot,
    Position,
    PyramidingState,
    PyramidSizing,
    ReceivedSignal,
    RecordedSignals,
    Settlement,
    Signal,
    Trade,
    label_number,
)
from pm_core.orders import exit_legs, make_intents, position_entry_legs
from pm_core.rollover import reference_price, select_strike
from pm_core.signal import find_duplicate, recorded_from
from pm_core.sizing import size_base, size_pyramid

_STAT_PREFIX = {"BASE_ENTRY": "entries", "PYRAMID": "pyramids", "EXIT": "exits"}


# --------------------------------------------------------------------------- decide


class _Draft:
    """Mutable scratch state of one decision; frozen into a Decision at the end.

    A plain slotted class, not attrs: one is built per signal, and the backtest folds many.
    """

    __slots__ = (
        "created",
        "events",
        "intents",
        "marks",
        "positions",
        "pyramiding",
        "statistics",
        "updated",
    )

    def __init__(self, positions: list[Position]) -> None:
        self.positions = positions  # live positions after marking, opening order
        self.updated: dict[int, Position] = {}
        self.created: list[Position] = []
        self.events: list[Code] = []
        self.intents: list[OrderIntent] = []
        self.pyramiding: dict[str, PyramidingState | None] = {}
        self.marks: dict[str, Mark] = {}
        self.statistics: dict[str, float] = {}

    def replace(self, new: Position) -> None:
        pid = new.id
        self.updated[pid] = new
        positions = []
        for p in self.positions:  # a loop, not a comprehension: cheaper on a few items
            positions.append(new if p.id == pid else p)
        self.positions = positions

    def replace_many(self, news: Mapping[int, Position]) -> None:
        """Several replacements in one pass over the positions (marking updates many)."""
        self.updated.update(news)
        positions = []
        for p in self.positions:
            positions.append(news.get(p.id, p))
        self.positions = positions

    def changes(self) -> ChangeSet:
        # Positional (field order): built for every signal.
        return ChangeSet(
            tuple(self.created),
            tuple(self.updated.values()),
            (),  # close
            self.pyramiding,
            self.marks,
            None,  # portfolio
            (),  # ledger
            self.statistics,
        )


def decide(
    snapshot: PortfolioSnapshot,
    received: ReceivedSignal,
    market: MarketContext,
    config: DomainConfig,
    now: dt.datetime,
    *,
    check_duplicates: bool = True,
) -> Decision:
    """Decide what a valid signal does to the portfolio (domain 7.2), without side effects."""
    signal = received.signal
    portfolio = config.portfolio
    if check_duplicates:
        dup = find_duplicate(
            snapshot.recorded, signal, received.fingerprint, portfolio.near_duplicate_window_s
        )
        if dup is not None:
            code_name, original = dup
            if code_name == "duplicate_fingerprint":
                code = Code(code_name, {"fingerprint": received.fingerprint})
                layer = "l3"
            else:
                ts = original.timestamp.isoformat() if original.timestamp else ""
                code = Code(
                    code_name, {"window": portfolio.near_duplicate_window_s, "original_ts": ts}
                )
                layer = "near"
            return Decision(
                outcome="duplicate",
                codes=(code,),
                messages=(reason.render(code),),
                changes=ChangeSet(statistics={f"duplicates_{layer}": 1}),
                duplicate_of=original,
            )

    instrument = config.instruments[signal.instrument]
    draft = _Draft(positions=list(snapshot.positions))
    _mark_instrument(snapshot, draft, signal, instrument, config, received.fingerprint)

    if signal.type == "EXIT":
        return _decide_exit(snapshot, draft, received, instrument, config)

    prefix = _STAT_PREFIX[signal.type]
    if received.queued and (now - received.received_at).total_seconds() > portfolio.max_queue_age_s:
        return _refuse(
            draft,
            "rejected",
            [Code("stale_in_queue", {"max_age": portfolio.max_queue_age_s})],
            f"{prefix}_rejected",
        )
    if not instrument.enabled:
        return _refuse(
            draft,
            "rejected",
            [Code("instrument_disabled", {"instrument": instrument.id})],
            f"{prefix}_rejected",
        )
    block = snapshot.blocks.get(instrument.id)
    if block is not None:
        return _refuse(
            draft,
            "rejected",
            [Code("instrument_blocked", {"instrument": instrument.id, "reason": block.reason})],
            f"{prefix}_rejected",
        )
    if _live_by_label(draft, signal.instrument, signal.position) is not None:
        return _refuse(
            draft,
            "rejected",
            [Code("position_already_open", {"key": signal.key})],
            f"{prefix}_rejected",
        )
    if signal.type == "BASE_ENTRY":
        return _decide_base(snapshot, draft, received, market, instrument, config)
    return _decide_pyramid(snapshot, draft, received, market, instrument, config)


def _mark_instrument(
    snapshot: PortfolioSnapshot,
    draft: _Draft,
    signal: Signal,
    instrument: InstrumentConfig,
    config: DomainConfig,
    fingerprint: str,
) -> None:
    inst_id = instrument.id
    own = []
    for p in draft.positions:
        if p.instrument == inst_id:
            own.append(p)
    if not own:
        # What mark() gives for no positions: only the new mark, unless it is stale.
        last = snapshot.marks.get(inst_id)
        if last is None or not signal.timestamp < last.ts:
            draft.marks[inst_id] = Mark(signal.price, signal.atr, signal.timestamp)
        return
    result = mark(
        own,
        instrument,
        signal.price,
        signal.atr,
        signal.timestamp,
        snapshot.marks.get(instrument.id),
    )
    if result.stale:
        return
    if result.mark is not None:
        draft.marks[instrument.id] = result.mark
    changed: dict[int, Position] = {}
    for before, after in zip(own, result.positions, strict=True):
        if after is not before:
            changed[after.id] = after
    if changed:
        draft.replace_many(changed)
    if not config.portfolio.exit_on_stop_hit or not result.hit_ids:
        draft.events.extend(result.events)
        return
    # Stop-hit closes happen before the signal's own decision, whole, at the mark price.
    hits = set(result.hit_ids)
    for event in result.events:
        key = event.params.get("key")
        position = next((p for p in draft.positions if p.key == key), None)
        if position is None or position.id not in hits or position.status == "closing":
            draft.events.append(event)
            continue
        pnl = (signal.price - position.basis) * position.lots * position.point_value
        params = dict(event.params)
        params["lots"] = position.lots
        params["pnl"] = pnl
        draft.events.append(Code("stop_hit", params))
        _reserve_exit(
            draft,
            position,
            position.lots,
            signal.price,
            "stop_hit",
            signal.timestamp,
            fingerprint,
            instrument,
            stop_hit=True,
        )


def _refuse(
    draft: _Draft,
    outcome: str,
    found: list[Code],
    stat: str,
    sizing: BaseSizing | PyramidSizing | None = None,
) -> Decision:
    draft.statistics[stat] = draft.statistics.get(stat, 0) + 1
    return Decision(  # positional, in field order
        outcome,  # type: ignore[arg-type]
        tuple(found),
        tuple([reason.render(c) for c in found]),
        sizing,
        (),  # positions
        None,  # total_pnl
        tuple(draft.events),
        draft.changes(),
        tuple(draft.intents),
    )


def _live_by_label(draft: _Draft, instrument: str, label: str) -> Position | None:
    for p in draft.positions:
        if p.instrument == instrument and p.label == label:
            return p
    return None


def _anchor(snapshot: PortfolioSnapshot, draft: _Draft, instrument: str) -> Position | None:
    state = snapshot.pyramiding.get(instrument)
    if state is None or state.base_position_id is None:
        return None
    for p in draft.positions:
        if p.id == state.base_position_id:
            # An anchor closing whole (a stop hit found while marking) no longer anchors.
            pending = p.pending_exit
            if pending is not None and pending.lots >= p.lots:
                return None
            return p
    return None


def _sizing_equity(
    draft: _Draft, snapshot: PortfolioSnapshot, market: MarketContext, config: DomainConfig
) -> float:
    portfolio = config.portfolio
    if portfolio.equity_source == "broker":
        if market.funds is not None:
            return float(market.funds.availablecash + market.funds.utiliseddebits)
        draft.events.append(Code("equity_fallback", {"reason": "broker funds unavailable"}))
    return equity_figures(snapshot.closed_equity, draft.positions, portfolio)[1]


def _entry_inputs(
    draft: _Draft,
    snapshot: PortfolioSnapshot,
    market: MarketContext,
    config: DomainConfig,
    signal: Signal,
    instrument: InstrumentConfig,
) -> tuple[float, float, RiskTotals, float]:
    """Effective stop (with its warning), sizing equity E, risk totals and margin M."""
    stop, fallback = effective_stop(signal.price, signal.stop, signal.atr, instrument)
    if fallback:
        draft.events.append(Code("stop_fallback_atr", {"stop": signal.stop, "effective": stop}))
    equity = _sizing_equity(draft, snapshot, market, config)
    totals = risk_totals(draft.positions, config)
    return stop, equity, totals, margin_available(equity, totals.margin_used, config.portfolio)


def _decide_base(
    snapshot: PortfolioSnapshot,
    draft: _Draft,
    received: ReceivedSignal,
    market: MarketContext,
    instrument: InstrumentConfig,
    config: DomainConfig,
) -> Decision:
    signal = received.signal
    anchor = _anchor(snapshot, draft, instrument.id)
    if anchor is not None:
        return _refuse(
            draft,
            "rejected",
            [Code("base_already_open", {"instrument": instrument.id, "key": anchor.key})],
            "entries_rejected",
        )
    try:
        contract = entry_contract(instrument, signal.timestamp, config)
        symbols = _contract_symbols(instrument, contract.expiry, signal.price, market)
    except ValueError as exc:
        # A contract the symbol format cannot name (e.g. expiring after 2099): refuse, never
        # crash; nothing is reserved.
        return _refuse(
            draft,
            "rejected",
            [Code("no_contract", {"instrument": instrument.id, "detail": str(exc)})],
            "entries_rejected",
        )
    pv = contract.point_value
    stop, equity, totals, m_avail = _entry_inputs(
        draft, snapshot, market, config, signal, instrument
    )
    sizing = size_base(
        signal.price,
        stop,
        signal.atr,
        signal.er,
        signal.lots,
        equity,
        m_avail,
        instrument,
        pv,
        config.portfolio.sizing_mode,
    )
    if sizing.final <= 0:
        code = _zero_base_code(sizing, signal, stop)
        return _refuse(draft, "blocked", [code], "entries_blocked", sizing)
    gate = base_entry_gate(
        signal.price,
        stop,
        signal.atr,
        sizing.final,
        pv,
        equity,
        totals,
        instrument,
        config.portfolio,
    )
    if gate:
        return _refuse(draft, "blocked", list(gate), "entries_blocked", sizing)
    position = _new_position(
        draft,
        signal,
        instrument,
        lots=sizing.final,
        lot_size=contract.lot_size,
        point_value=pv,
        stop=stop,
        is_base=True,
        limiter=sizing.limiter,
        contract_month=contract.month,
        expiry=contract.expiry,
        symbols=symbols,
        fingerprint=received.fingerprint,
        anchor_id=None,
    )
    draft.pyramiding[instrument.id] = PyramidingState(position.id, signal.price)
    return _pending(draft, sizing, position)


def _zero_base_code(sizing: BaseSizing, signal: Signal, stop: float) -> Code:
    if sizing.limiter == "invalid_risk":
        return Code("invalid_risk", {"stop": stop, "price": signal.price})
    if sizing.limiter == "invalid_volatility":
        return Code("invalid_volatility", {"atr": signal.atr})
    return Code("zero_lots", {"limiter": sizing.limiter})


def _pending(draft: _Draft, sizing: BaseSizing | PyramidSizing, position: Position) -> Decision:
    return Decision(  # positional, in field order
        "pending",
        (),  # codes
        (),  # messages
        sizing,
        (DecisionPosition(position.key, position.lots, position.entry_price),),
        None,  # total_pnl
        tuple(draft.events),
        draft.changes(),
        tuple(draft.intents),
    )


def _decide_pyramid(
    snapshot: PortfolioSnapshot,
    draft: _Draft,
    received: ReceivedSignal,
    market: MarketContext,
    instrument: InstrumentConfig,
    config: DomainConfig,
) -> Decision:
    signal = received.signal
    anchor = _anchor(snapshot, draft, instrument.id)
    if anchor is None or anchor.roll_incomplete:
        return _refuse(draft, "blocked", [Code("no_base_position")], "pyramids_blocked")
    open_pyramids = sum(
        1 for p in draft.positions if p.instrument == instrument.id and not p.is_base_position
    )
    if open_pyramids >= instrument.max_pyramids:
        return _refuse(
            draft,
            "blocked",
            [Code("max_pyramids_reached", {"open": open_pyramids, "max": instrument.max_pyramids})],
            "pyramids_blocked",
        )
    pv = anchor.point_value
    stop, equity, totals, m_avail = _entry_inputs(
        draft, snapshot, market, config, signal, instrument
    )
    base_risk = (
        max(0.0, anchor.entry_price - anchor.initial_stop) * anchor.lots * anchor.point_value
    )
    open_pnl = instrument_open_pnl(draft.positions, instrument.id)
    sizing = size_pyramid(
        signal.price,
        stop,
        m_avail,
        anchor.lots,
        open_pnl - base_risk,
        signal.lots,
        instrument,
        pv,
        config.portfolio.sizing_mode,
    )
    state = snapshot.pyramiding.get(instrument.id)
    report = pyramid_gates(
        signal.price,
        stop,
        signal.atr,
        sizing,
        anchor,
        state.last_pyramid_price if state else None,
        equity,
        totals,
        open_pnl,
        pv,
        instrument,
        config.portfolio,
    )
    if report.codes:
        return _refuse(draft, "blocked", list(report.codes), "pyramids_blocked", sizing)
    symbols: tuple[float | None, str | None, str | None, str | None] = (None, None, None, None)
    if anchor.expiry is not None:
        # The anchor's contract is tradable (it holds it); only the strike is new (ATM now).
        symbols = _contract_symbols(instrument, anchor.expiry, signal.price, market)
    position = _new_position(
        draft,
        signal,
        instrument,
        lots=sizing.final,
        lot_size=anchor.lot_size,
        point_value=pv,
        stop=stop,
        is_base=False,
        limiter=None,
        contract_month=anchor.contract_month,
        expiry=anchor.expiry,
        symbols=symbols,
        fingerprint=received.fingerprint,
        anchor_id=anchor.id,
    )
    return _pending(draft, sizing, position)


def _new_position(
    draft: _Draft,
    signal: Signal,
    instrument: InstrumentConfig,
    *,
    lots: int,
    lot_size: int,
    point_value: float,
    stop: float,
    is_base: bool,
    limiter: str | None,
    contract_month: str | None,
    expiry: dt.date | None,
    symbols: tuple[float | None, str | None, str | None, str | None],
    fingerprint: str,
    anchor_id: int | None,
) -> Position:
    placeholder = -(len(draft.created) + 1)
    price = signal.price
    strike, ce, pe, fut = symbols
    position = Position(
        id=placeholder,
        instrument=instrument.id,
        label=signal.position,
        status="pending_open",
        is_base_position=is_base,
        lots=lots,
        quantity=lots * lot_size,
        lot_size=lot_size,
        point_value=point_value,
        entry_timestamp=signal.timestamp,
        entry_price=price,
        initial_stop=stop,
        current_stop=stop,
        highest_close=price,
        atr=signal.atr,
        basis=price,
        contract_month=contract_month,
        expiry=expiry,
        strike=strike,
        ce_symbol=ce,
        pe_symbol=pe,
        futures_symbol=fut,
        limiter=limiter,
        anchor_base_id=anchor_id,
        opened_by_fingerprint=fingerprint,
    )
    draft.created.append(position)
    draft.positions.append(position)
    draft.intents.extend(
        _leg_intents(position, instrument, lots, "open", price, fingerprint, len(draft.intents))
    )
    return position


def _contract_symbols(
    instrument: InstrumentConfig, expiry: dt.date, price: float, market: MarketContext
) -> tuple[float | None, str | None, str | None, str | None]:
    """(strike, CE, PE, future) symbols of a new position; ValueError if they cannot exist."""
    if instrument.kind == "synthetic_future":
        interval = instrument.strike_interval or 1.0
        # Strikes are positive: below half an interval the lowest listed strike is nearest.
        strike = max(
            interval, select_strike(_reference_price(instrument, expiry, market, price), interval)
        )
        return (
            strike,
            option_symbol(instrument.symbol_root, expiry, strike, "CE"),
            option_symbol(instrument.symbol_root, expiry, strike, "PE"),
            None,
        )
    return None, None, None, futures_symbol(instrument.symbol_root, expiry)


def _reference_price(
    instrument: InstrumentConfig, expiry: dt.date, market: MarketContext, fallback: float
) -> float:
    """First positive LTP of the reference list (domain 9.6), else the signal price."""
    if not market.quotes:
        return fallback  # the backtest: no quotes, the signal price is the reference
    found = reference_price(instrument, market.quotes, expiry, expiry, fallback)
    return found.price if found.price is not None else fallback


def _leg_intents(
    position: Position,
    instrument: InstrumentConfig,
    lots: int,
    direction: str,
    price: float,
    fingerprint: str,
    seq_start: int,
) -> tuple[OrderIntent, ...]:
    """Orders for one position: hedge first (open BUY CE, SELL PE; close BUY PE, SELL CE)."""
    if direction == "open":
        legs = position_entry_legs(instrument, position, lots, price)
    else:
        legs = exit_legs(instrument, position, lots, price)
    return make_intents(
        legs,
        fingerprint,  # fingerprint_part
        label_number(position.label),
        "signal",  # origin
        position.id,
        fingerprint,  # group_id
        instrument.id,
        1,  # attempt
        seq_start + 1,  # first_seq
    )


def _reserve_exit(
    draft: _Draft,
    position: Position,
    lots: int,
    price: float,
    why: str,
    ts: dt.datetime,
    fingerprint: str,
    instrument: InstrumentConfig,
    *,
    stop_hit: bool = False,
) -> None:
    pending = PendingExit(lots, price, why, ts, position.status, fingerprint, stop_hit)
    draft.replace(position.replace(status="closing", pending_exit=pending))
    draft.intents.extend(
        _leg_intents(position, instrument, lots, "close", price, fingerprint, len(draft.intents))
    )


def _decide_exit(
    snapshot: PortfolioSnapshot,
    draft: _Draft,
    received: ReceivedSignal,
    instrument: InstrumentConfig,
    config: DomainConfig,
) -> Decision:
    signal = received.signal
    why = signal.reason or "EXIT"
    price = signal.price
    if signal.position == "ALL":
        targets = [
            p for p in draft.positions if p.instrument == instrument.id and p.status != "closing"
        ]
        targets.sort(key=lambda p: label_number(p.label))
        if not targets:
            return _refuse(
                draft,
                "rejected",
                [Code("position_not_open", {"instrument": instrument.id})],
                "exits_rejected",
            )
    else:
        found = _live_by_label(draft, signal.instrument, signal.position)
        if found is None or found.status == "closing":
            return _refuse(
                draft,
                "rejected",
                [Code("position_not_open", {"key": signal.key})],
                "exits_rejected",
            )
        targets = [found]
    closed: list[DecisionPosition] = []
    for position in targets:
        whole = (
            signal.position == "ALL"
            or position.roll_incomplete
            or not 0 < signal.lots < position.lots
        )
        k = position.lots if whole else signal.lots
        pnl = (price - position.basis) * k * position.point_value
        closed.append(DecisionPosition(position.key, k, price, pnl))
        _reserve_exit(
            draft, position, k, price, why, signal.timestamp, received.fingerprint, instrument
        )
    total = sum((c.pnl or 0.0 for c in closed), 0.0) if signal.position == "ALL" else None
    return Decision(  # positional, in field order
        "pending",
        (),  # codes
        (),  # messages
        None,  # sizing
        tuple(closed),
        total,
        tuple(draft.events),
        draft.changes(),
        tuple(draft.intents),
    )


# --------------------------------------------------------------------------- fills


def paper_fill(intent: OrderIntent, slippage_ticks: int = 0, tick_size: float = 0.0) -> Fill:
    """Fill the whole quantity at the intent's reference price, slippage against the order."""
    price = Decimal(repr(intent.ref_price))
    if slippage_ticks and tick_size:
        slip = Decimal(repr(tick_size)) * slippage_ticks
        price = price + slip if intent.action == "BUY" else max(Decimal(0), price - slip)
    return Fill(intent.client_order_id, intent.quantity, price, "filled")


def _filled_lots(
    intents: Sequence[OrderIntent], fills: Mapping[str, Fill]
) -> tuple[int, dict[str, Decimal | None], Fill | None, str]:
    """Lots held on every leg (the smallest filled leg), average fill per leg, and what failed.

    A leg split at the freeze quantity arrives as several child intents: their fills add up,
    at their quantity-weighted average price. The failing fill (if any) and the detail give
    the failure code (``_failure_code``), built only when a caller needs it.
    """
    # The common case first: one order per leg, each filled in full (paper fills always are).
    averages: dict[str, Decimal | None] = {}
    least = -1
    for intent in intents:
        leg = intent.leg
        fill = fills.get(intent.client_order_id)
        if fill is None or fill.state != "filled" or leg in averages:
            break
        filled = fill.filled_quantity
        per_lot = intent.quantity // intent.lots if intent.lots else 1
        averages[leg] = fill.average_price if filled > 0 else None
        held = filled // per_lot if per_lot else 0
        if least < 0 or held < least:
            least = held
    else:
        if least >= 0:
            return least, averages, None, ""
    return _filled_lots_general(intents, fills)


def _filled_lots_general(
    intents: Sequence[OrderIntent], fills: Mapping[str, Fill]
) -> tuple[int, dict[str, Decimal | None], Fill | None, str]:
    quantity: dict[str, int] = {}
    per_lot: dict[str, int] = {}
    priced: dict[str, list[tuple[int, Decimal]]] = {}
    detail = ""
    failure: Fill | None = None
    for intent in intents:
        leg = intent.leg
        per_lot[leg] = intent.quantity // intent.lots if intent.lots else 1
        fill = fills.get(intent.client_order_id)
        if fill is None:
            quantity.setdefault(leg, 0)
            detail = detail or f"{intent.symbol} {intent.action} {intent.quantity} not filled"
            continue
        filled = fill.filled_quantity
        quantity[leg] = quantity.get(leg, 0) + filled
        if fill.average_price is not None and filled > 0:
            parts = priced.get(leg)
            if parts is None:
                priced[leg] = [(filled, fill.average_price)]
            else:
                parts.append((filled, fill.average_price))
        if fill.state != "filled" and not detail:
            detail = (
                fill.detail or f"{intent.symbol} {intent.action} {intent.quantity} {fill.state}"
            )
            failure = fill
    averages = {leg: _average(priced.get(leg)) for leg in quantity}
    lots = min((qty // per_lot[leg] if per_lot[leg] else 0) for leg, qty in quantity.items())
    return lots, averages, failure, detail


def _average(parts: list[tuple[int, Decimal]] | None) -> Decimal | None:
    """Quantity-weighted average price of a leg's fills (one fill: its own price)."""
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0][1]
    total = sum(q for q, _ in parts)
    return sum((price * q for q, price in parts), Decimal(0)) / total


def _failure_code(failure: Fill | None, detail: str) -> Code:
    """Why too little filled: the failing fill's reason code (order_failed by default)."""
    if failure is None:
        return Code("order_failed", {"detail": detail or "no fill"})
    return Code(failure.code, {**failure.params, "detail": detail or "no fill"})


def _fill_price(
    position: Position, averages: Mapping[str, Decimal | None]
) -> tuple[float | None, float | None, float | None]:
    """(synthetic or futures fill, CE fill, PE fill) as floats; None when not reported."""
    fut = averages.get("FUT")
    if fut is not None:
        return float(fut), None, None
    ce = averages.get("CE")
    pe = averages.get("PE")
    if ce is not None and pe is not None:
        ce_f = float(ce)
        pe_f = float(pe)
        return (position.strike or 0.0) + ce_f - pe_f, ce_f, pe_f
    return None, None, None


_EXECUTED_STAT = {True: "entries_executed", False: "pyramids_executed"}


def apply_fills(
    snapshot: PortfolioSnapshot,
    intents: Sequence[OrderIntent],
    fills: Mapping[str, Fill],
    config: DomainConfig,
) -> ChangeSet:
    """Turn a signal's reservations into actual positions and closes from the fills."""
    by_position: dict[int, list[OrderIntent]] = {}
    for intent in intents:
        group = by_position.get(intent.position_id)
        if group is None:
            by_position[intent.position_id] = [intent]
        else:
            group.append(intent)
    use_fill = config.portfolio.pnl_price_source == "fill"
    closed_equity = snapshot.closed_equity
    updates: list[Position] = []
    trades: list[Trade] = []
    ledger: list[LedgerEntry] = []
    stats: dict[str, float] = {}
    pyramiding: dict[str, PyramidingState | None] = {}
    settled: list[DecisionPosition] = []
    codes_out: list[Code] = []
    own_ok = own_failed = 0

    # Closes settle before opens so that a cleared anchor is never resurrected by a pyramid.
    closes: list[Position] = []
    opens: list[Position] = []
    for p in snapshot.positions:
        if p.id in by_position:
            (opens if p.status == "pending_open" else closes).append(p)
    for position in closes + opens if opens and closes else closes or opens:
        lots, by_leg, failed, detail = _filled_lots(by_position[position.id], fills)
        fill_px, ce_px, pe_px = _fill_price(position, by_leg)
        instrument = position.instrument
        if position.status == "pending_open":
            if lots <= 0:
                updates.append(position.replace(status="failed", lots=0, quantity=0))
                state = snapshot.pyramiding.get(instrument)
                if position.is_base_position and state and state.base_position_id == position.id:
                    pyramiding[instrument] = None
                stats["orders_failed"] = stats.get("orders_failed", 0) + 1
                own_failed += 1
                codes_out.append(_failure_code(failed, detail))
                continue
            basis = fill_px if (use_fill and fill_px is not None) else position.entry_price
            updates.append(
                position.replace(
                    status="open",
                    lots=lots,
                    quantity=lots * position.lot_size,
                    basis=basis,
                    entry_fill_price=fill_px,
                    ce_entry_price=ce_px,
                    pe_entry_price=pe_px,
                )
            )
            state = snapshot.pyramiding.get(instrument)
            cleared = instrument in pyramiding and pyramiding[instrument] is None
            if not position.is_base_position and state is not None and not cleared:
                pyramiding[instrument] = PyramidingState(
                    state.base_position_id, position.entry_price
                )
            stat = _EXECUTED_STAT[position.is_base_position]
            stats[stat] = stats.get(stat, 0) + 1
            own_ok += 1
            settled.append(DecisionPosition(position.key, lots, position.entry_price))
            continue

        pending = position.pending_exit
        if position.status != "closing" or pending is None:
            continue
        if lots <= 0:
            updates.append(position.replace(status=pending.prior_status, pending_exit=None))
            stats["orders_failed"] = stats.get("orders_failed", 0) + 1
            if not pending.stop_hit:
                own_failed += 1
                failure = _failure_code(failed, detail)
                codes_out.append(Code(failure.code, {"key": position.key, **failure.params}))
            continue
        k = min(lots, pending.lots)
        exit_price = fill_px if (use_fill and fill_px is not None) else pending.price
        pnl = (exit_price - position.basis) * k * position.point_value
        closed_equity += pnl
        if k >= position.lots:
            new = position.replace(
                status="closed",
                pending_exit=None,
                unrealized_pnl=0.0,
                realized_pnl=position.realized_pnl + pnl,
                exit_timestamp=pending.timestamp,
                exit_price=exit_price,
                exit_reason=pending.reason,
            )
            trade_pnl = pnl + position.rollover_realized_pnl
            state = snapshot.pyramiding.get(instrument)
            if state is not None and state.base_position_id == position.id:
                pyramiding[instrument] = None
        else:
            remaining = position.lots - k
            last = snapshot.marks.get(instrument)
            mark_price = last.price if last is not None else pending.price
            new = position.replace(
                status="partial",
                pending_exit=None,
                lots=remaining,
                quantity=remaining * position.lot_size,
                unrealized_pnl=(mark_price - position.basis) * remaining * position.point_value,
                realized_pnl=position.realized_pnl + pnl,
            )
            trade_pnl = pnl
        updates.append(new)
        trades.append(
            Trade(
                position.id,
                instrument,
                position.label,
                position.is_base_position,
                position.entry_timestamp,
                position.entry_price,
                position.initial_stop,
                position.point_value,
                pending.timestamp,
                exit_price,
                k,
                trade_pnl,
                pending.reason,
            )
        )
        if pnl != 0.0:
            ledger.append(
                LedgerEntry("trading_pnl", pnl, closed_equity, position.id, pending.reason)
            )
        if pending.stop_hit:
            stats["stop_hit_exits"] = stats.get("stop_hit_exits", 0) + 1
        else:
            stats["exits_executed"] = stats.get("exits_executed", 0) + 1
            own_ok += 1
            settled.append(DecisionPosition(position.key, k, exit_price, pnl))

    if own_failed and own_ok:
        outcome = "partially_executed"
    elif own_failed:
        outcome = "failed"
    else:
        outcome = "executed"
    if len(settled) == 1:
        total = 0.0 + (settled[0].pnl or 0.0)  # sum() of one, without a generator
    else:
        total = sum((p.pnl or 0.0 for p in settled), 0.0)
    equity = None
    if closed_equity != snapshot.closed_equity:
        equity = EquityUpdate(closed_equity, max(snapshot.equity_high, closed_equity))
    return ChangeSet(  # positional, in field order
        (),  # create
        tuple(updates),
        tuple(trades),
        pyramiding,
        EMPTY_MAP,  # marks
        equity,
        tuple(ledger),
        stats,
        EMPTY_MAP,  # blocks
        Settlement(
            outcome,  # type: ignore[arg-type]
            tuple(codes_out),
            tuple([reason.render(c) for c in codes_out]) if codes_out else (),
            tuple(settled),
            total,
        ),
    )


def settle_decision(decision: Decision, settlement: Settlement | None) -> Decision:
    """The final decision: the reservation's decision with the settlement's outcome and results."""
    if settlement is None:
        return decision
    total = decision.total_pnl
    if total is not None:
        total = settlement.total_pnl if settlement.total_pnl is not None else 0.0
    # Built directly rather than with attrs.evolve: the backtest settles every signal.
    return Decision(
        settlement.outcome,
        decision.codes + settlement.codes,
        decision.messages + settlement.messages,
        decision.sizing,
        settlement.positions,
        total,
        decision.events,
        decision.changes,
        decision.intents,
        decision.duplicate_of,
    )


# --------------------------------------------------------------------------- apply_changes


def apply_changes_mapped(
    snapshot: PortfolioSnapshot, changes: ChangeSet
) -> tuple[PortfolioSnapshot, dict[int, int]]:
    """Apply a ChangeSet to an in-memory snapshot; returns it and placeholder -> real ids."""
    return _apply_changes(snapshot, changes, None)


def _apply_changes(
    snapshot: PortfolioSnapshot, changes: ChangeSet, recorded: RecordedSignals | None
) -> tuple[PortfolioSnapshot, dict[int, int]]:
    """apply_changes_mapped, optionally also replacing ``recorded`` (one snapshot copy less)."""
    next_id = snapshot.next_position_id
    idmap: dict[int, int] = {}
    create = changes.create
    for p in create:
        idmap[p.id] = next_id
        next_id += 1

    positions = snapshot.positions
    update = changes.update
    if update or create:
        # Insertion order stays ascending by id: updates keep their place, new ids are larger.
        by_id: dict[int, Position] = {}
        for p in positions:  # a loop, not a comprehension: cheaper on a few positions
            by_id[p.id] = p
        for p in update:
            pid = p.id
            current = by_id.get(pid)
            version = (current.version if current is not None else p.version) + 1
            if p.status == "closed" or p.status == "failed":
                by_id.pop(pid, None)
            else:
                by_id[pid] = p.replace(version=version)
        for p in create:
            new_id = idmap[p.id]
            anchor = p.anchor_base_id
            if anchor is not None and anchor < 0:
                anchor = idmap.get(anchor, anchor)
            by_id[new_id] = p.replace(id=new_id, anchor_base_id=anchor)
        positions = tuple(by_id.values())

    pyramiding = snapshot.pyramiding
    if changes.pyramiding:
        pyramiding = dict(pyramiding)
        for inst, state in changes.pyramiding.items():
            if state is None:
                pyramiding.pop(inst, None)
            else:
                base = state.base_position_id
                if base is not None and base < 0:
                    base = idmap.get(base, base)
                pyramiding[inst] = PyramidingState(base, state.last_pyramid_price)
    marks = snapshot.marks
    if changes.marks:
        marks = {**marks, **changes.marks}
    blocks = snapshot.blocks
    if changes.blocks:
        new_blocks = dict(blocks)
        for inst, block in changes.blocks.items():
            if block is None:
                new_blocks.pop(inst, None)
            else:
                new_blocks[inst] = block
        blocks = new_blocks
    equity = changes.portfolio
    new = PortfolioSnapshot(  # positional, in field order (twice per backtest signal)
        snapshot.version + 1,
        snapshot.initial_capital,
        snapshot.closed_equity if equity is None else equity.closed_equity,
        snapshot.equity_high if equity is None else equity.equity_high,
        positions,
        pyramiding,
        marks,
        blocks,
        snapshot.recorded if recorded is None else recorded,
        next_id,
    )
    return new, idmap


def apply_changes(snapshot: PortfolioSnapshot, changes: ChangeSet) -> PortfolioSnapshot:
    """The snapshot after a ChangeSet (backtest and in-memory state)."""
    return apply_changes_mapped(snapshot, changes)[0]


def remap_intents(
    intents: Sequence[OrderIntent], idmap: Mapping[int, int]
) -> tuple[OrderIntent, ...]:
    """Intents with placeholder position ids replaced by the ids a save gave."""
    if not idmap:
        return tuple(intents)
    return tuple(
        i.replace(position_id=idmap[i.position_id]) if i.position_id in idmap else i
        for i in intents
    )


# --------------------------------------------------------------------------- backtest step


@attrs.frozen(slots=False)  # built per signal: see "Slots or not" in pm_core.model
class StepResult:
    """One signal folded into the portfolio: new state, final decision, closes it caused."""

    snapshot: PortfolioSnapshot
    decision: Decision
    trades: tuple[Trade, ...]
    duplicate: bool


def step(
    snapshot: PortfolioSnapshot,
    received: ReceivedSignal,
    config: DomainConfig,
    *,
    dedup: bool = True,
    slippage_ticks: int = 0,
) -> StepResult:
    """Decide, fill on paper and settle one signal: the backtest's unit of work."""
    signal = received.signal
    decision = decide(
        snapshot, received, EMPTY_MARKET, config, signal.timestamp, check_duplicates=dedup
    )
    if decision.outcome == "duplicate":
        return StepResult(snapshot, decision, (), True)
    changes = decision.changes
    if not decision.intents:
        final = decision
        recorded = _recorded(snapshot, signal, received.fingerprint, final.outcome, dedup)
        state = _apply_changes(snapshot, changes, recorded)[0]
        return StepResult(state, final, changes.close, False)
    state, idmap = _apply_changes(snapshot, changes, None)
    intents = remap_intents(decision.intents, idmap) if idmap else decision.intents
    tick = config.instruments[signal.instrument].tick_size if slippage_ticks else 0.0
    fills: dict[str, Fill] = {}
    for i in intents:
        fills[i.client_order_id] = paper_fill(i, slippage_ticks, tick)
    settled = apply_fills(state, intents, fills, config)
    final = settle_decision(decision, settled.settlement)
    recorded = _recorded(state, signal, received.fingerprint, final.outcome, dedup)
    state = _apply_changes(state, settled, recorded)[0]
    return StepResult(state, final, changes.close + settled.close, False)


def _recorded(
    snapshot: PortfolioSnapshot, signal: Signal, fingerprint: str, outcome: str, dedup: bool
) -> RecordedSignals | None:
    """The duplicate index after this signal (None: unchanged)."""
    if dedup and outcome in RECORDED_OUTCOMES:
        return snapshot.recorded.with_signal(recorded_from(signal, fingerprint, outcome))
    return None
