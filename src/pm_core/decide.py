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
    Contract,
    entry_contract,
    futures_symbol,
    option_symbol,
)
from pm_core.config import DomainConfig, InstrumentConfig
from pm_core.gates import base_entry_gate, pyramid_gates
from pm_core.marking import effective_stop, mark
from pm_core.metrics import (
    RiskTotals,
    equity_view,
    instrument_open_pnl,
    margin_available,
    risk_totals,
)
from pm_core.model import (
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
    Settlement,
    Signal,
    Trade,
    label_number,
)
from pm_core.orders import entry_legs, exit_legs, intents_for
from pm_core.rollover import reference_price, select_strike
from pm_core.signal import find_duplicate, recorded_from
from pm_core.sizing import size_base, size_pyramid

_STAT_PREFIX = {"BASE_ENTRY": "entries", "PYRAMID": "pyramids", "EXIT": "exits"}


# --------------------------------------------------------------------------- decide


@attrs.define
class _Draft:
    """Mutable scratch state of one decision; frozen into a Decision at the end."""

    positions: list[Position]  # live positions after marking, opening order
    updated: dict[int, Position] = attrs.field(factory=dict)
    created: list[Position] = attrs.field(factory=list)
    events: list[Code] = attrs.field(factory=list)
    intents: list[OrderIntent] = attrs.field(factory=list)
    pyramiding: dict[str, PyramidingState | None] = attrs.field(factory=dict)
    marks: dict[str, Mark] = attrs.field(factory=dict)
    statistics: dict[str, float] = attrs.field(factory=dict)

    def replace(self, new: Position) -> None:
        self.updated[new.id] = new
        self.positions = [new if p.id == new.id else p for p in self.positions]

    def changes(self) -> ChangeSet:
        return ChangeSet(
            create=tuple(self.created),
            update=tuple(self.updated.values()),
            pyramiding=self.pyramiding,
            marks=self.marks,
            statistics=self.statistics,
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
    own = [p for p in draft.positions if p.instrument == instrument.id]
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
    for before, after in zip(own, result.positions, strict=True):
        if after is not before:
            draft.replace(after)
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
    return Decision(
        outcome=outcome,  # type: ignore[arg-type]
        codes=tuple(found),
        messages=tuple(reason.render(c) for c in found),
        sizing=sizing,
        events=tuple(draft.events),
        changes=draft.changes(),
        intents=tuple(draft.intents),
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
    return equity_view(snapshot.closed_equity, draft.positions, portfolio).sizing


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
    return Decision(
        outcome="pending",
        sizing=sizing,
        positions=(DecisionPosition(position.key, position.lots, position.entry_price),),
        events=tuple(draft.events),
        changes=draft.changes(),
        intents=tuple(draft.intents),
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
        contract = Contract(
            instrument.id,
            position.contract_month or "",
            position.expiry or dt.date.min,
            position.lot_size,
            position.point_value,
        )
        legs = entry_legs(instrument, contract, position.strike, lots, price)
    else:
        legs = exit_legs(instrument, position, lots, price)
    return intents_for(
        legs,
        fingerprint_part=fingerprint,
        label_number=label_number(position.label),
        origin="signal",
        position_id=position.id,
        group_id=fingerprint,
        instrument=instrument.id,
        first_seq=seq_start + 1,
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
    pending = PendingExit(
        lots=lots,
        price=price,
        reason=why,
        timestamp=ts,
        prior_status=position.status,
        fingerprint=fingerprint,
        stop_hit=stop_hit,
    )
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
    return Decision(
        outcome="pending",
        positions=tuple(closed),
        total_pnl=total,
        events=tuple(draft.events),
        changes=draft.changes(),
        intents=tuple(draft.intents),
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
) -> tuple[int, dict[str, Decimal | None], Code]:
    """Lots held on every leg (the smallest filled leg), average fill per leg, failure code.

    A leg split at the freeze quantity arrives as several child intents: their fills add up,
    at their quantity-weighted average price.
    """
    quantity: dict[str, int] = {}
    per_lot: dict[str, int] = {}
    priced: dict[str, list[tuple[int, Decimal]]] = {}
    detail = ""
    failure: Fill | None = None
    for intent in intents:
        leg = intent.leg
        per_lot[leg] = intent.quantity // intent.lots if intent.lots else 1
        quantity.setdefault(leg, 0)
        fill = fills.get(intent.client_order_id)
        if fill is None:
            detail = detail or f"{intent.symbol} {intent.action} {intent.quantity} not filled"
            continue
        filled = fill.filled_quantity
        quantity[leg] += filled
        if fill.average_price is not None and filled > 0:
            priced.setdefault(leg, []).append((filled, fill.average_price))
        if fill.state != "filled" and not detail:
            detail = (
                fill.detail or f"{intent.symbol} {intent.action} {intent.quantity} {fill.state}"
            )
            failure = fill
    averages = {leg: _average(priced.get(leg)) for leg in quantity}
    lots = min((qty // per_lot[leg] if per_lot[leg] else 0) for leg, qty in quantity.items())
    return lots, averages, _failure_code(failure, detail)


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


def apply_fills(
    snapshot: PortfolioSnapshot,
    intents: Sequence[OrderIntent],
    fills: Mapping[str, Fill],
    config: DomainConfig,
) -> ChangeSet:
    """Turn a signal's reservations into actual positions and closes from the fills."""
    by_position: dict[int, list[OrderIntent]] = {}
    for intent in intents:
        by_position.setdefault(intent.position_id, []).append(intent)
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

    def bump(name: str) -> None:
        stats[name] = stats.get(name, 0) + 1

    live = {p.id: p for p in snapshot.positions if p.id in by_position}
    # Closes settle before opens so that a cleared anchor is never resurrected by a pyramid.
    ordered = sorted(live.values(), key=lambda p: p.status == "pending_open")
    for position in ordered:
        group = by_position[position.id]
        lots, by_leg, failure = _filled_lots(group, fills)
        fill_px, ce_px, pe_px = _fill_price(position, by_leg)
        if position.status == "pending_open":
            kind = "entries" if position.is_base_position else "pyramids"
            if lots <= 0:
                updates.append(position.replace(status="failed", lots=0, quantity=0))
                state = snapshot.pyramiding.get(position.instrument)
                if position.is_base_position and state and state.base_position_id == position.id:
                    pyramiding[position.instrument] = None
                bump("orders_failed")
                own_failed += 1
                codes_out.append(failure)
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
            state = snapshot.pyramiding.get(position.instrument)
            cleared = position.instrument in pyramiding and pyramiding[position.instrument] is None
            if not position.is_base_position and state is not None and not cleared:
                pyramiding[position.instrument] = PyramidingState(
                    state.base_position_id, position.entry_price
                )
            bump(f"{kind}_executed")
            own_ok += 1
            settled.append(DecisionPosition(position.key, lots, position.entry_price))
            continue

        pending = position.pending_exit
        if position.status != "closing" or pending is None:
            continue
        if lots <= 0:
            updates.append(position.replace(status=pending.prior_status, pending_exit=None))
            bump("orders_failed")
            if not pending.stop_hit:
                own_failed += 1
                codes_out.append(Code(failure.code, {"key": position.key, **failure.params}))
            continue
        k = min(lots, pending.lots)
        exit_price = fill_px if (use_fill and fill_px is not None) else pending.price
        pnl = (exit_price - position.basis) * k * position.point_value
        closed_equity += pnl
        whole = k >= position.lots
        if whole:
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
            state = snapshot.pyramiding.get(position.instrument)
            if state is not None and state.base_position_id == position.id:
                pyramiding[position.instrument] = None
        else:
            remaining = position.lots - k
            last = snapshot.marks.get(position.instrument)
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
                position_id=position.id,
                instrument=position.instrument,
                label=position.label,
                is_base=position.is_base_position,
                entry_time=position.entry_timestamp,
                entry_price=position.entry_price,
                initial_stop=position.initial_stop,
                point_value=position.point_value,
                exit_time=pending.timestamp,
                exit_price=exit_price,
                lots=k,
                pnl=trade_pnl,
                exit_reason=pending.reason,
            )
        )
        if pnl != 0.0:
            ledger.append(
                LedgerEntry("trading_pnl", pnl, closed_equity, position.id, pending.reason)
            )
        if pending.stop_hit:
            bump("stop_hit_exits")
        else:
            bump("exits_executed")
            own_ok += 1
            settled.append(DecisionPosition(position.key, k, exit_price, pnl))

    if own_failed and own_ok:
        outcome = "partially_executed"
    elif own_failed:
        outcome = "failed"
    else:
        outcome = "executed"
    total = sum((p.pnl or 0.0 for p in settled), 0.0)
    equity = None
    if closed_equity != snapshot.closed_equity:
        equity = EquityUpdate(closed_equity, max(snapshot.equity_high, closed_equity))
    return ChangeSet(
        update=tuple(updates),
        close=tuple(trades),
        pyramiding=pyramiding,
        portfolio=equity,
        ledger=tuple(ledger),
        statistics=stats,
        settlement=Settlement(
            outcome=outcome,  # type: ignore[arg-type]
            codes=tuple(codes_out),
            messages=tuple(reason.render(c) for c in codes_out),
            positions=tuple(settled),
            total_pnl=total,
        ),
    )


def settle_decision(decision: Decision, settlement: Settlement | None) -> Decision:
    """The final decision: the reservation's decision with the settlement's outcome and results."""
    if settlement is None:
        return decision
    total = decision.total_pnl
    if total is not None:
        total = settlement.total_pnl if settlement.total_pnl is not None else 0.0
    return attrs.evolve(
        decision,
        outcome=settlement.outcome,
        codes=decision.codes + settlement.codes,
        messages=decision.messages + settlement.messages,
        positions=settlement.positions,
        total_pnl=total,
    )


# --------------------------------------------------------------------------- apply_changes


def apply_changes_mapped(
    snapshot: PortfolioSnapshot, changes: ChangeSet
) -> tuple[PortfolioSnapshot, dict[int, int]]:
    """Apply a ChangeSet to an in-memory snapshot; returns it and placeholder -> real ids."""
    next_id = snapshot.next_position_id
    idmap: dict[int, int] = {}
    for p in changes.create:
        idmap[p.id] = next_id
        next_id += 1

    def real(pid: int | None) -> int | None:
        if pid is None or pid >= 0:
            return pid
        return idmap.get(pid, pid)

    positions = snapshot.positions
    if changes.update or changes.create:
        # Insertion order stays ascending by id: updates keep their place, new ids are larger.
        by_id: dict[int, Position] = {p.id: p for p in positions}
        for p in changes.update:
            current = by_id.get(p.id)
            version = (current.version if current is not None else p.version) + 1
            if p.status in ("closed", "failed"):
                by_id.pop(p.id, None)
            else:
                by_id[p.id] = p.replace(version=version)
        for p in changes.create:
            new_id = idmap[p.id]
            by_id[new_id] = p.replace(id=new_id, anchor_base_id=real(p.anchor_base_id))
        positions = tuple(by_id.values())

    pyramiding = snapshot.pyramiding
    if changes.pyramiding:
        pyramiding = dict(pyramiding)
        for inst, state in changes.pyramiding.items():
            if state is None:
                pyramiding.pop(inst, None)
            else:
                pyramiding[inst] = PyramidingState(
                    real(state.base_position_id), state.last_pyramid_price
                )
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
    closed_equity, equity_high = snapshot.closed_equity, snapshot.equity_high
    if changes.portfolio is not None:
        closed_equity = changes.portfolio.closed_equity
        equity_high = changes.portfolio.equity_high
    new = snapshot.replace(
        version=snapshot.version + 1,
        closed_equity=closed_equity,
        equity_high=equity_high,
        positions=positions,
        pyramiding=pyramiding,
        marks=marks,
        blocks=blocks,
        next_position_id=next_id,
    )
    return new, idmap


def apply_changes(snapshot: PortfolioSnapshot, changes: ChangeSet) -> PortfolioSnapshot:
    """The snapshot after a ChangeSet (backtest and in-memory state)."""
    return apply_changes_mapped(snapshot, changes)[0]


def remap_intents(
    intents: Sequence[OrderIntent], idmap: Mapping[int, int]
) -> tuple[OrderIntent, ...]:
    """Intents with placeholder position ids replaced by the ids a save gave."""
    return tuple(
        i.replace(position_id=idmap[i.position_id]) if i.position_id in idmap else i
        for i in intents
    )


# --------------------------------------------------------------------------- backtest step


@attrs.frozen
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
    state, idmap = apply_changes_mapped(snapshot, decision.changes)
    trades = decision.changes.close
    final = decision
    if decision.intents:
        intents = remap_intents(decision.intents, idmap)
        tick = config.instruments[signal.instrument].tick_size
        fills = {i.client_order_id: paper_fill(i, slippage_ticks, tick) for i in intents}
        settled = apply_fills(state, intents, fills, config)
        state = apply_changes(state, settled)
        trades = trades + settled.close
        final = settle_decision(decision, settled.settlement)
    if dedup and final.outcome in RECORDED_OUTCOMES:
        ref = recorded_from(signal, received.fingerprint, final.outcome)
        state = state.replace(recorded=state.recorded.with_signal(ref))
    return StepResult(state, final, trades, False)
