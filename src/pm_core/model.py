"""The values the pure core takes and returns (architecture.md section 3).

Every value is frozen. Positions created by a decision carry negative placeholder ids
(-1, -2, ...) until a unit of work saves them; ``save`` maps placeholders to real ids
everywhere they appear (pyramiding anchor, ``anchor_base_id``, intents).
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterable, Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Literal

import attrs

SignalType = Literal["BASE_ENTRY", "PYRAMID", "EXIT"]
SIGNAL_TYPES: tuple[SignalType, ...] = ("BASE_ENTRY", "PYRAMID", "EXIT")
Outcome = Literal[
    "executed",
    "partially_executed",
    "blocked",
    "rejected",
    "failed",
    "duplicate",
    "invalid",
    "pending",
]
RECORDED_OUTCOMES = frozenset({"executed", "partially_executed", "blocked", "rejected", "failed"})
PositionStatus = Literal["pending_open", "open", "partial", "closing", "closed", "failed"]
LIVE_STATUSES = frozenset({"pending_open", "open", "partial", "closing"})
RolloverStatus = Literal["none", "in_progress", "rolled", "failed", "abandoned"]
Leg = Literal["CE", "PE", "FUT"]
Action = Literal["BUY", "SELL"]
IntentOrigin = Literal["signal", "rollover", "unwind", "manual"]
BlockReason = Literal["reconciliation", "ambiguous_order", "unwind_failed", "manual"]
LedgerKind = Literal["deposit", "withdraw", "trading_pnl", "rollover_pnl", "adjustment"]

UTC = dt.UTC
# A shared, read-only empty mapping: the default of hot value fields (a fresh dict per value
# is measurable in a 100k-signal backtest).
EMPTY_MAP: Mapping[Any, Any] = MappingProxyType({})
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = dt.timedelta(microseconds=1)


def label_number(label: str) -> int:
    """n of ``Long_n``; 0 for ``ALL`` or anything else (instrument-wide)."""
    number = _LABEL_NUMBERS.get(label)
    if number is None:
        head, _, tail = label.rpartition("_")
        number = int(tail) if head and tail.isdigit() else 0
        if len(_LABEL_NUMBERS) < 1024:  # a handful of labels in practice; never unbounded
            _LABEL_NUMBERS[label] = number
    return number


_LABEL_NUMBERS: dict[str, int] = {}


# The last instant_us answer, by the datetime's identity: decide's duplicate check and the
# recorded-signal index ask for the same signal's instant in turn. The entry holds the datetime,
# so its id cannot be reused while the entry stands.
_LAST_INSTANT: tuple[dt.datetime | None, int] = (None, 0)


def instant_us(ts: dt.datetime) -> int:
    """Exact microseconds since the Unix epoch of an aware datetime (for instant comparisons)."""
    global _LAST_INSTANT
    last = _LAST_INSTANT
    if last[0] is ts:
        return last[1]
    us = (ts - _EPOCH) // _MICRO
    _LAST_INSTANT = (ts, us)
    return us


# --------------------------------------------------------------------------- signals


@attrs.frozen(slots=True)
class Signal:
    """A validated, normalised TradingView signal (domain 3.1)."""

    type: SignalType
    instrument: str
    position: str  # Long_n or ALL
    price: float
    stop: float
    lots: int
    atr: float
    er: float
    supertrend: float
    timestamp: dt.datetime  # aware; fractions kept
    roc: float | None = None
    reason: str | None = None

    @property
    def key(self) -> str:
        """Position key ``<INSTRUMENT>_<label>``."""
        return f"{self.instrument}_{self.position}"


@attrs.frozen(slots=True)
class FieldError:
    """One validation failure: the field, a stable code and a human message (domain 3.3)."""

    field: str
    code: str
    message: str


@attrs.frozen(slots=False)  # built per signal: see "Slots or not" in pm_core.model
class ReceivedSignal:
    """A signal as it enters decide: its fingerprint, when it was received, whether it queued."""

    signal: Signal
    fingerprint: str
    received_at: dt.datetime
    queued: bool = False
    signal_id: int | None = None


@attrs.frozen(slots=True)
class RecordedSignal:
    """A signal that reached a decision, as duplicate checks see it (domain 3.5)."""

    fingerprint: str
    instrument: str
    type: str
    label: str
    instant_us: int  # full-precision signal instant
    outcome: str
    signal_id: int | None = None
    timestamp: dt.datetime | None = None


class RecordedSignals:
    """The recorded signals duplicates are tested against; immutable to its readers.

    ``with_signal`` returns a new view sharing an append-only log, so a backtest fold of
    n signals costs O(n) memory, not O(n^2). Views never see entries appended after them.
    """

    __slots__ = ("_by_key", "_count", "_fps", "_log")

    def __init__(self, refs: Iterable[RecordedSignal] = ()) -> None:
        self._log: list[RecordedSignal] = []
        self._fps: dict[str, int] = {}
        # Per key: instants in ascending order and the log index of each, so the near-window
        # check is a bisection, not a scan of every signal of the key (O(n^2) in a backtest).
        self._by_key: dict[tuple[str, str, str], tuple[list[int], list[int]]] = {}
        self._count = 0
        for ref in refs:
            self._append(ref)
        self._count = len(self._log)

    def _append(self, ref: RecordedSignal) -> None:
        index = len(self._log)
        self._log.append(ref)
        self._fps.setdefault(ref.fingerprint, index)
        key = (ref.instrument, ref.type, ref.label)
        entry = self._by_key.get(key)
        if entry is None:
            self._by_key[key] = ([ref.instant_us], [index])
            return
        instants, indexes = entry
        if not instants or ref.instant_us >= instants[-1]:
            instants.append(ref.instant_us)
            indexes.append(index)
        else:
            at = bisect.bisect_right(instants, ref.instant_us)
            instants.insert(at, ref.instant_us)
            indexes.insert(at, index)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Any:
        return iter(self._log[: self._count])

    def with_signal(self, ref: RecordedSignal) -> RecordedSignals:
        """A view that also holds ``ref``."""
        if self._count != len(self._log):
            # An older view is being extended: fork a private copy.
            fork = RecordedSignals(self._log[: self._count])
            return fork.with_signal(ref)
        self._append(ref)
        new = object.__new__(RecordedSignals)
        new._log, new._fps, new._by_key = self._log, self._fps, self._by_key
        new._count = len(self._log)
        return new

    def by_fingerprint(self, fingerprint: str) -> RecordedSignal | None:
        """The recorded signal with this fingerprint, if any."""
        index = self._fps.get(fingerprint)
        if index is None or index >= self._count:
            return None
        return self._log[index]

    def near(
        self, instrument: str, type_: str, label: str, at_us: int, window_us: int
    ) -> RecordedSignal | None:
        """The first recorded signal of this key whose instant is within the window, inclusive."""
        entry = self._by_key.get((instrument, type_, label))
        if entry is None:
            return None
        instants, indexes = entry
        lo = bisect.bisect_left(instants, at_us - window_us)
        hi = bisect.bisect_right(instants, at_us + window_us)
        # Of the matches this view can see, the most recently recorded one.
        best = -1
        count = self._count
        for k in range(lo, hi):
            index = indexes[k]
            if best < index < count:
                best = index
        return self._log[best] if best >= 0 else None


# --------------------------------------------------------------------------- portfolio state


@attrs.frozen(slots=True)
class Mark:
    """An instrument's latest mark: price, ATR and signal time (domain 4.2)."""

    price: float
    atr: float
    ts: dt.datetime


@attrs.frozen(slots=True)
class PyramidingState:
    """Per-instrument pyramiding state: the anchor base and the last pyramid price (domain 7.6)."""

    base_position_id: int | None
    last_pyramid_price: float | None


@attrs.frozen(slots=True)
class Block:
    """An instrument blocked for new entries (reconciliation, ambiguous order, ...)."""

    reason: BlockReason
    since: dt.datetime
    detail: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(slots=False)  # built per signal: see "Slots or not" in pm_core.model
class PendingExit:
    """What a ``closing`` position is waiting to close: applied (or reverted) by apply_fills."""

    lots: int
    price: float
    reason: str
    timestamp: dt.datetime
    prior_status: PositionStatus
    fingerprint: str
    stop_hit: bool = False  # a stop-hit close made while marking, not the signal's own exit


# Slots or not. A frozen slotted attrs class sets each field through object.__setattr__ (a
# wrapper call per field); a dict-backed one stores into its instance dict. So short-lived
# values built once or more per backtest signal with four or more fields (decisions, change
# sets, fills, ...) are dict-backed: about 4 % fewer instructions in the fold. Values a backtest
# keeps one of per signal (recorded signals, trades, equity points) stay slotted, for memory.
#
# Position and the snapshot are dict-backed (not slotted) on purpose: ``replace`` copies the
# instance dict in C, about ten times faster than attrs.evolve, and a 100k-signal backtest
# replaces positions several times per signal.
@attrs.frozen(slots=False)
class Position:
    """One position (domain 7.7). Lots and quantity are integers; money and prices floats."""

    id: int
    instrument: str
    label: str
    status: PositionStatus
    is_base_position: bool
    lots: int
    quantity: int
    lot_size: int
    point_value: float
    entry_timestamp: dt.datetime
    entry_price: float
    initial_stop: float
    current_stop: float
    highest_close: float
    atr: float
    basis: float
    contract_month: str | None = None  # YYYY-MM
    expiry: dt.date | None = None
    strike: float | None = None
    ce_symbol: str | None = None
    pe_symbol: str | None = None
    futures_symbol: str | None = None
    ce_entry_price: float | None = None
    pe_entry_price: float | None = None
    entry_fill_price: float | None = None
    limiter: str | None = None
    unrealized_pnl: float = 0.0
    realized_pnl: float = 0.0
    exit_timestamp: dt.datetime | None = None
    exit_price: float | None = None
    exit_reason: str | None = None
    rollover_realized_pnl: float = 0.0
    rollover_spread_total: float = 0.0
    rollover_count: int = 0
    rollover_status: RolloverStatus = "none"
    rollover_step: int = 0
    rollover_target_expiry: dt.date | None = None
    rollover_target_strike: float | None = None
    original_expiry: dt.date | None = None
    original_strike: float | None = None
    anchor_base_id: int | None = None
    opened_by_fingerprint: str | None = None
    pending_exit: PendingExit | None = None
    version: int = 1

    @property
    def key(self) -> str:
        """Position key ``<INSTRUMENT>_<label>``."""
        return f"{self.instrument}_{self.label}"

    def replace(self, **changes: Any) -> Position:
        """A copy with ``changes`` applied (a fast attrs.evolve; unknown names raise)."""
        if not _POSITION_FIELDS.issuperset(changes):
            raise TypeError(f"unknown Position fields: {sorted(changes.keys() - _POSITION_FIELDS)}")
        new = _object_new(Position)
        state = new.__dict__
        state.update(self.__dict__)
        state.update(changes)
        return new

    @property
    def is_live(self) -> bool:
        """Counts as open for every rule: pending_open, open, partial, closing."""
        return self.status in LIVE_STATUSES

    @property
    def roll_incomplete(self) -> bool:
        """A roll is in progress or failed: marking skips the position (domain 9.11)."""
        return self.rollover_status in ("in_progress", "failed")


_POSITION_FIELDS = frozenset(f.name for f in attrs.fields(Position))
_object_new = object.__new__


@attrs.frozen(slots=False)
class PortfolioSnapshot:
    """Everything decide needs, read under the portfolio lock (architecture 3)."""

    version: int
    initial_capital: float
    closed_equity: float
    equity_high: float
    positions: tuple[Position, ...]  # live positions, opening order (ascending id)
    pyramiding: Mapping[str, PyramidingState] = attrs.field(factory=dict)
    marks: Mapping[str, Mark] = attrs.field(factory=dict)
    blocks: Mapping[str, Block] = attrs.field(factory=dict)
    recorded: RecordedSignals = attrs.field(factory=RecordedSignals)
    next_position_id: int = 1  # used by apply_changes (memory, backtest) to give ids

    def replace(self, **changes: Any) -> PortfolioSnapshot:
        """A copy with ``changes`` applied (a fast attrs.evolve; unknown names raise)."""
        if not changes.keys() <= _SNAPSHOT_FIELDS:
            raise TypeError(f"unknown snapshot fields: {sorted(changes.keys() - _SNAPSHOT_FIELDS)}")
        new = object.__new__(PortfolioSnapshot)
        state = new.__dict__
        state.update(self.__dict__)
        state.update(changes)
        return new

    @classmethod
    def initial(cls, capital: float) -> PortfolioSnapshot:
        """An empty portfolio holding ``capital``."""
        return cls(
            version=1,
            initial_capital=capital,
            closed_equity=capital,
            equity_high=capital,
            positions=(),
        )

    def open_positions(self, instrument: str | None = None) -> tuple[Position, ...]:
        """Live positions, optionally of one instrument, in opening order."""
        if instrument is None:
            return self.positions
        return tuple(p for p in self.positions if p.instrument == instrument)

    def position_by_label(self, instrument: str, label: str) -> Position | None:
        """The live position of this instrument and label, if any."""
        for p in self.positions:
            if p.instrument == instrument and p.label == label:
                return p
        return None

    def position_by_id(self, position_id: int) -> Position | None:
        """The live position with this id, if any."""
        for p in self.positions:
            if p.id == position_id:
                return p
        return None


_SNAPSHOT_FIELDS = frozenset(f.name for f in attrs.fields(PortfolioSnapshot))


# --------------------------------------------------------------------------- market data


@attrs.frozen(slots=True)
class Quote:
    """A broker quote; decimals as the broker sent them (bid/ask default to ltp)."""

    ltp: Decimal
    bid: Decimal | None = None
    ask: Decimal | None = None


@attrs.frozen(slots=True)
class Funds:
    """Broker funds (openalgo ``funds``); decimals."""

    availablecash: Decimal
    utiliseddebits: Decimal = Decimal(0)
    collateral: Decimal = Decimal(0)
    m2mrealized: Decimal = Decimal(0)
    m2munrealized: Decimal = Decimal(0)


@attrs.frozen(slots=True)
class MarketContext:
    """Quotes and funds read before T1; empty in the backtest (architecture 3)."""

    quotes: Mapping[tuple[str, str], Quote] = attrs.field(factory=dict)  # (exchange, symbol)
    funds: Funds | None = None
    as_of: dt.datetime | None = None


EMPTY_MARKET = MarketContext()


# --------------------------------------------------------------------------- decisions


@attrs.frozen(slots=True)
class Code:
    """A reason code with its message placeholders (domain 6.4)."""

    code: str
    params: Mapping[str, Any] = EMPTY_MAP


@attrs.frozen(slots=True)
class BaseSizing:
    """Base-entry sizing result (domain 5.2/5.3)."""

    lot_r: float
    lot_v: float
    lot_m: float
    final: int
    limiter: str


@attrs.frozen(slots=True)
class PyramidSizing:
    """Pyramid sizing result: A, B, C (domain 5.4)."""

    a: int
    b: int
    c: int
    final: int
    limiter: str


Sizing = BaseSizing | PyramidSizing


@attrs.frozen(slots=False)  # built per signal: see "Slots or not" in pm_core.model
class DecisionPosition:
    """A position a decision opened (lots, entry price) or closed (lots, exit price, P&L)."""

    key: str
    lots: int
    price: float
    pnl: float | None = None


@attrs.frozen(slots=True)
class Trade:
    """One close (whole or partial) as a trade record (domain 7.5, 11.4)."""

    position_id: int
    instrument: str
    label: str
    is_base: bool
    entry_time: dt.datetime
    entry_price: float
    initial_stop: float
    point_value: float
    exit_time: dt.datetime
    exit_price: float
    lots: int
    pnl: float
    exit_reason: str


@attrs.frozen(slots=False)  # built per signal: see "Slots or not" in pm_core.model
class LedgerEntry:
    """An equity ledger row: signed amount and the closed equity after it."""

    kind: LedgerKind
    amount: float
    equity_after: float
    position_id: int | None = None
    note: str | None = None


@attrs.frozen(slots=True)
class EquityUpdate:
    """New closed equity and high-water mark."""

    closed_equity: float
    equity_high: float


@attrs.frozen(slots=False)  # built per signal: see "Slots or not" in pm_core.model
class Settlement:
    """What apply_fills concluded: final outcome, codes it added, positions as filled."""

    outcome: Outcome
    codes: tuple[Code, ...] = ()
    messages: tuple[str, ...] = ()
    positions: tuple[DecisionPosition, ...] = ()
    total_pnl: float | None = None


@attrs.frozen(slots=False)  # built per signal: see "Slots or not" in pm_core.model
class ChangeSet:
    """State changes of one decision or settlement (architecture 3).

    ``create`` holds new positions with placeholder ids; ``update`` holds full new records of
    existing positions carrying the version they were read at (closed ones included).
    ``pyramiding`` and ``blocks`` map an instrument to its new value, None = cleared.
    """

    create: tuple[Position, ...] = ()
    update: tuple[Position, ...] = ()
    close: tuple[Trade, ...] = ()
    pyramiding: Mapping[str, PyramidingState | None] = EMPTY_MAP
    marks: Mapping[str, Mark] = EMPTY_MAP
    portfolio: EquityUpdate | None = None
    ledger: tuple[LedgerEntry, ...] = ()
    statistics: Mapping[str, float] = EMPTY_MAP
    blocks: Mapping[str, Block | None] = EMPTY_MAP
    settlement: Settlement | None = None


EMPTY_CHANGES = ChangeSet()


@attrs.frozen(slots=False)  # dict-backed for a cheap ``replace`` (see Position)
class OrderIntent:
    """One outbox row per leg (architecture 3, 4.1); quantity in broker units."""

    client_order_id: str
    origin: IntentOrigin
    position_id: int
    leg: Leg
    seq: int
    attempt: int
    symbol: str
    exchange: str
    action: Action
    product: str
    pricetype: Literal["MARKET", "LIMIT"]
    quantity: int
    lots: int
    ref_price: float
    group_id: str
    limit_price: Decimal | None = None
    instrument: str = ""

    def replace(self, **changes: Any) -> OrderIntent:
        """A copy with ``changes`` applied (a fast attrs.evolve; unknown names raise)."""
        if not changes.keys() <= _INTENT_FIELDS:
            raise TypeError(
                f"unknown OrderIntent fields: {sorted(changes.keys() - _INTENT_FIELDS)}"
            )
        new = object.__new__(OrderIntent)
        state = new.__dict__
        state.update(self.__dict__)
        state.update(changes)
        return new


_INTENT_FIELDS = frozenset(f.name for f in attrs.fields(OrderIntent))


@attrs.frozen(slots=False)  # built per signal: see "Slots or not" in pm_core.model
class Fill:
    """The final result of one intent: quantity filled (broker units) and average price."""

    client_order_id: str
    filled_quantity: int
    average_price: Decimal | None
    state: Literal["filled", "partially_filled", "cancelled", "rejected", "failed", "not_found"]
    detail: str = ""
    # Why nothing (or too little) filled, as a reason code with its message placeholders.
    code: str = "order_failed"
    params: Mapping[str, Any] = EMPTY_MAP


@attrs.frozen(slots=False)  # built per signal: see "Slots or not" in pm_core.model
class Decision:
    """The result of decide: outcome, codes, sizing, events, state changes and intents."""

    outcome: Outcome
    codes: tuple[Code, ...] = ()
    messages: tuple[str, ...] = ()
    sizing: Sizing | None = None
    positions: tuple[DecisionPosition, ...] = ()
    total_pnl: float | None = None
    events: tuple[Code, ...] = ()
    changes: ChangeSet = EMPTY_CHANGES
    intents: tuple[OrderIntent, ...] = ()
    duplicate_of: RecordedSignal | None = None

    def record(self) -> dict[str, Any]:
        """The decision record (architecture 4.3), keys in spec order."""
        return decision_record(self)


def sizing_record(sizing: Sizing | None) -> dict[str, Any] | None:
    """Sizing as the decision record shows it (base lot_r/lot_v/lot_m, pyramid a/b/c)."""
    if sizing is None:
        return None
    if isinstance(sizing, BaseSizing):
        return {
            "lot_r": sizing.lot_r,
            "lot_v": sizing.lot_v,
            "lot_m": sizing.lot_m,
            "final": sizing.final,
            "limiter": sizing.limiter,
        }
    return {
        "a": sizing.a,
        "b": sizing.b,
        "c": sizing.c,
        "final": sizing.final,
        "limiter": sizing.limiter,
    }


def position_record(p: DecisionPosition) -> dict[str, Any]:
    """One decision-record position: opened ones have no ``pnl``."""
    out: dict[str, Any] = {"key": p.key, "lots": p.lots, "price": p.price}
    if p.pnl is not None:
        out["pnl"] = p.pnl
    return out


def decision_record(d: Decision) -> dict[str, Any]:
    """{outcome, codes, messages, sizing, positions, total_pnl?, events} (domain 7.2)."""
    out: dict[str, Any] = {
        "outcome": d.outcome,
        "codes": [{"code": c.code, "params": dict(c.params)} for c in d.codes],
        "messages": list(d.messages),
        "sizing": sizing_record(d.sizing),
        "positions": [position_record(p) for p in d.positions],
    }
    if d.total_pnl is not None:
        out["total_pnl"] = d.total_pnl
    out["events"] = [{"code": e.code, "params": dict(e.params)} for e in d.events]
    return out
