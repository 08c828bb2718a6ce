"""A thread-safe in-memory UnitOfWork with the SQL adapter's semantics.

Committed state is never mutated: a write unit takes the store's writer lock (like SQLite's
``BEGIN IMMEDIATE``), copies a table on its first write, and publishes its copies on commit;
leaving without ``commit()`` drops them. Read-only units read the state committed when they
began. Versions are checked on every update and fingerprints are unique, as in SQL.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import attrs

from pm_adapters.sql.rows import jsonable
from pm_core import ports
from pm_core.errors import (
    ClaimLost,
    DuplicateKey,
    FencedError,
    NotInitialised,
    StaleVersionError,
    UnknownStatistic,
)
from pm_core.model import (
    Block,
    ChangeSet,
    Decision,
    LedgerEntry,
    Mark,
    OrderIntent,
    PortfolioSnapshot,
    Position,
    PyramidingState,
    RecordedSignal,
    RecordedSignals,
    Signal,
    Trade,
    instant_us,
)
from pm_core.ports import (
    TERMINAL_INTENT_STATES,
    BlockRepository,
    Claimed,
    ClaimResult,
    Existing,
    Fence,
    FenceRepository,
    IntentRepository,
    IntentState,
    LeaderFence,
    PortfolioRepository,
    SignalFence,
    SignalRepository,
    SignalState,
    StatisticsRepository,
    StoredIntent,
    StoredSignal,
    TxKind,
    UnitOfWork,
    UnitOfWorkFactory,
)

UTC = dt.UTC
LIVE = frozenset({"pending_open", "open", "partial", "closing"})
STATISTIC_NAMES = frozenset(ports.STATISTIC_NAMES)
SIGNAL_STATES = frozenset(ports.SIGNAL_STATES)
TERMINAL_SIGNAL = SIGNAL_STATES - {"queued", "processing"}
INTENT_DATA_KEYS = frozenset(
    {
        "broker_order_id",
        "broker_mode",
        "filled_quantity",
        "average_price",
        "attempts",
        "owner_instance_id",
        "leader_epoch",
        "sent_at",
        "acked_at",
        "resolved_at",
        "last_error",
    }
)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


def check_statistics(deltas: Mapping[str, float]) -> None:
    """Refuse counters that service.md 11 does not list."""
    unknown = sorted(set(deltas) - STATISTIC_NAMES)
    if unknown:
        raise UnknownStatistic(f"unknown statistics counter(s): {', '.join(unknown)}")


def check_intent_data(data: Mapping[str, Any]) -> None:
    """Refuse intent fields a transition may not set."""
    unknown = sorted(set(data) - INTENT_DATA_KEYS)
    if unknown:
        raise ValueError(f"intent transition cannot set: {', '.join(unknown)}")


def finish_state(decision: Decision) -> SignalState:
    """The signal_log status a finished decision leaves."""
    if decision.outcome not in TERMINAL_SIGNAL:
        raise ValueError(f"finish needs a terminal outcome, got {decision.outcome!r}")
    state: SignalState = decision.outcome  # type: ignore[assignment]
    return state


# --------------------------------------------------------------------------- rows


@attrs.frozen
class _Portfolio:
    version: int
    initial_capital: float
    closed_equity: float
    equity_high: float


@attrs.frozen
class _Pyramiding:
    base_position_id: int | None = None
    last_pyramid_price: float | None = None
    mark: Mark | None = None
    version: int = 1


@attrs.frozen
class _SignalRow:
    id: int
    fingerprint: str
    signal: Signal
    received_at: dt.datetime
    status: SignalState
    owner_instance_id: str | None
    claim_epoch: int
    outcome: Mapping[str, Any] | None = None
    http_status: int | None = None
    attention_required: bool = False
    duplicate_count: int = 0
    last_duplicate_at: dt.datetime | None = None
    duplicate_layer: str | None = None
    duplicate_of_id: int | None = None
    completed_at: dt.datetime | None = None
    response: Mapping[str, Any] | None = None

    def stored(self) -> StoredSignal:
        return StoredSignal(
            id=self.id,
            fingerprint=self.fingerprint,
            signal=self.signal,
            received_at=self.received_at,
            status=self.status,
            owner_instance_id=self.owner_instance_id,
            claim_epoch=self.claim_epoch,
            outcome=self.outcome,
            http_status=self.http_status,
            attention_required=self.attention_required,
            response=self.response,
            completed_at=self.completed_at,
        )


@attrs.frozen
class _BlockRow:
    block: Block
    version: int = 1


class _State:
    """One committed generation of every table; containers are replaced, never mutated."""

    TABLES = (
        "positions",
        "pyramiding",
        "signals",
        "fingerprints",
        "intents",
        "client_ids",
        "broker_ids",
        "blocks",
        "statistics",
        "ledger",
        "trades",
    )

    def __init__(self) -> None:
        self.portfolio: _Portfolio | None = None
        self.fence_epoch: int | None = None  # None: no live leader holds the fence
        self.positions: dict[int, Position] = {}
        self.pyramiding: dict[str, _Pyramiding] = {}
        self.signals: dict[int, _SignalRow] = {}
        self.fingerprints: dict[str, int] = {}
        self.intents: dict[int, StoredIntent] = {}
        self.client_ids: dict[str, int] = {}
        self.broker_ids: dict[str, int] = {}
        self.blocks: dict[str, _BlockRow] = {}
        self.statistics: dict[str, float] = {}
        self.ledger: list[LedgerEntry] = []
        self.trades: list[Trade] = []

    def clone(self) -> _State:
        new = object.__new__(_State)
        new.__dict__.update(self.__dict__)
        return new


class MemoryStore:
    """The committed state every unit of work of one factory shares."""

    def __init__(self) -> None:
        self.state = _State()
        self.writer = threading.Lock()
        self.ids = itertools.count(1)
        self._ids_lock = threading.Lock()

    def next_id(self) -> int:
        with self._ids_lock:
            return next(self.ids)

    @property
    def fence_epoch(self) -> int | None:
        """The leader fence epoch ``fence.check`` compares against."""
        return self.state.fence_epoch

    def set_fence_epoch(self, epoch: int) -> None:
        """Publish a new leader fence epoch (memory LeaderElection writes it)."""
        with self.writer:
            state = self.state.clone()
            state.fence_epoch = epoch
            self.state = state


class MemoryUnitOfWorkFactory:
    """Begins in-memory units of work over one shared MemoryStore."""

    def __init__(
        self,
        store: MemoryStore | None = None,
        *,
        now: Callable[[], dt.datetime] = _utcnow,
        busy_timeout_s: float = 5.0,
        fence_epoch: Callable[[], int | None] | None = None,
    ) -> None:
        self.store = store if store is not None else MemoryStore()
        # Where fence.check reads the leader epoch (None = no live holder); by default the
        # store's own value, or e.g. the memory LeaderElection's state.
        self.fence_epoch = fence_epoch or (lambda: self.store.fence_epoch)
        self.now = now
        self.busy_timeout_s = busy_timeout_s

    def begin(self, kind: TxKind = "signal", *, read_only: bool = False) -> MemoryUnitOfWork:
        """A new unit of work; write units serialize on the store like BEGIN IMMEDIATE."""
        return MemoryUnitOfWork(self, kind, read_only)

    def initialise(self, capital: float) -> bool:
        """Create the portfolio row (and zeroed counters) unless it exists; True if created."""
        with self.begin() as uow:
            if uow.state.portfolio is not None:
                return False
            uow.w("portfolio")
            uow.state.portfolio = _Portfolio(1, capital, capital, capital)
            uow.w("statistics").update({name: 0.0 for name in STATISTIC_NAMES})
            uow.commit()
            return True

    def close(self) -> None:
        """Nothing to release."""


class MemoryUnitOfWork:
    """One in-memory transaction: rolls back unless ``commit()`` is called."""

    def __init__(self, factory: MemoryUnitOfWorkFactory, kind: TxKind, read_only: bool) -> None:
        self.factory = factory
        self.kind = kind
        self.read_only = read_only
        self._store = factory.store
        self._state: _State | None = None
        self._copied: set[str] = set()
        self._holds_lock = False
        self._closed = False
        self.id_map: dict[int, int] = {}
        self.portfolio: PortfolioRepository = _PortfolioRepo(self)
        self.signals: SignalRepository = _SignalRepo(self)
        self.intents: IntentRepository = _IntentRepo(self)
        self.blocks: BlockRepository = _BlockRepo(self)
        self.statistics: StatisticsRepository = _StatisticsRepo(self)
        self.fence: FenceRepository = _FenceRepo(self)

    # -- transaction
    def __enter__(self) -> MemoryUnitOfWork:
        self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._closed:
            self.rollback()

    def _start(self) -> None:
        if self._closed:
            raise RuntimeError("this unit of work has ended")
        if self._state is not None:
            return
        if not self.read_only:
            if not self._store.writer.acquire(timeout=self.factory.busy_timeout_s):
                raise StaleVersionError("memory store busy: another write unit holds it")
            self._holds_lock = True
            self._state = self._store.state.clone()
        else:
            self._state = self._store.state

    @property
    def state(self) -> _State:
        self._start()
        assert self._state is not None
        return self._state

    def w(self, table: str) -> Any:
        """The table as this unit may write it (copied on first write)."""
        if self.read_only:
            raise RuntimeError("read-only unit of work cannot write")
        state = self.state
        if table != "portfolio" and table not in self._copied:
            self._copied.add(table)
            setattr(state, table, getattr(state, table).copy())
        return getattr(state, table)

    def now(self) -> dt.datetime:
        return self.factory.now()

    def commit(self) -> None:
        """Publish every change of this unit."""
        if self._closed:
            raise RuntimeError("this unit of work has ended")
        if self._state is not None and not self.read_only:
            self._store.state = self._state
        self._end()

    def rollback(self) -> None:
        """Drop every change of this unit."""
        self._end()

    def _end(self) -> None:
        self._closed = True
        self._state = None
        if self._holds_lock:
            self._holds_lock = False
            self._store.writer.release()


# --------------------------------------------------------------------------- repositories


def _real(id_map: Mapping[int, int], pid: int | None) -> int | None:
    if pid is None or pid >= 0:
        return pid
    return id_map.get(pid, pid)


class _PortfolioRepo:
    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self.uow = uow

    def lock(self) -> PortfolioSnapshot:
        return self.read()

    def read(self) -> PortfolioSnapshot:
        state = self.uow.state
        row = state.portfolio
        if row is None:
            raise NotInitialised("portfolio_state row missing: run `pm init [--capital <amount>]`")
        live = tuple(state.positions[k] for k in sorted(state.positions) if k in _live(state))
        pyramiding = {
            inst: PyramidingState(r.base_position_id, r.last_pyramid_price)
            for inst, r in state.pyramiding.items()
            if r.base_position_id is not None or r.last_pyramid_price is not None
        }
        marks = {inst: r.mark for inst, r in state.pyramiding.items() if r.mark is not None}
        blocks = {inst: r.block for inst, r in state.blocks.items()}
        return PortfolioSnapshot(
            version=row.version,
            initial_capital=row.initial_capital,
            closed_equity=row.closed_equity,
            equity_high=row.equity_high,
            positions=live,
            pyramiding=pyramiding,
            marks=marks,
            blocks=blocks,
            recorded=RecordedSignals(),
            next_position_id=max(state.positions, default=0) + 1,
        )

    def save(self, changes: ChangeSet, expected_version: int) -> Mapping[int, int]:
        uow = self.uow
        state = uow.state
        row = state.portfolio
        if row is None:
            raise NotInitialised("portfolio_state row missing: run `pm init [--capital <amount>]`")
        if row.version != expected_version:
            raise StaleVersionError(
                f"portfolio version {row.version} is not the expected {expected_version}"
            )
        for p in changes.update:
            current = state.positions.get(p.id)
            if current is None or current.version != p.version:
                found = None if current is None else current.version
                raise StaleVersionError(
                    f"position {p.id} version {found} is not the expected {p.version}"
                )
        positions: dict[int, Position] = uow.w("positions")
        id_map = uow.id_map
        new_ids = [self.uow._store.next_id() for _ in changes.create]
        for p, new_id in zip(changes.create, new_ids, strict=True):
            id_map[p.id] = new_id
        for p, new_id in zip(changes.create, new_ids, strict=True):
            positions[new_id] = attrs.evolve(
                p, id=new_id, anchor_base_id=_real(id_map, p.anchor_base_id), version=1
            )
        for p in changes.update:
            positions[p.id] = attrs.evolve(
                p, anchor_base_id=_real(id_map, p.anchor_base_id), version=p.version + 1
            )
        if changes.close:
            trades: list[Trade] = uow.w("trades")
            for t in changes.close:
                trades.append(attrs.evolve(t, position_id=id_map.get(t.position_id, t.position_id)))
        if changes.pyramiding or changes.marks:
            pyr: dict[str, _Pyramiding] = uow.w("pyramiding")
            for inst, ps in changes.pyramiding.items():
                old = pyr.get(inst, _Pyramiding(version=0))
                if ps is None:
                    pyr[inst] = attrs.evolve(
                        old, base_position_id=None, last_pyramid_price=None, version=old.version + 1
                    )
                else:
                    pyr[inst] = attrs.evolve(
                        old,
                        base_position_id=_real(id_map, ps.base_position_id),
                        last_pyramid_price=ps.last_pyramid_price,
                        version=old.version + 1,
                    )
            for inst, mark in changes.marks.items():
                old = pyr.get(inst, _Pyramiding(version=0))
                pyr[inst] = attrs.evolve(old, mark=mark, version=old.version + 1)
        if changes.ledger:
            ledger: list[LedgerEntry] = uow.w("ledger")
            for entry in changes.ledger:
                if entry.amount != 0:  # equity_ledger refuses zero amounts (CHECK amount <> 0)
                    ledger.append(attrs.evolve(entry, position_id=_real(id_map, entry.position_id)))
        if changes.statistics:
            self.uow.statistics.add(changes.statistics)
        for inst, block in changes.blocks.items():
            if block is None:
                self.uow.blocks.clear(inst)
            else:
                self.uow.blocks.set(inst, block)
        closed, high = row.closed_equity, row.equity_high
        if changes.portfolio is not None:
            closed, high = changes.portfolio.closed_equity, changes.portfolio.equity_high
        uow.w("portfolio")
        state.portfolio = attrs.evolve(
            row, version=row.version + 1, closed_equity=closed, equity_high=high
        )
        return {p.id: id_map[p.id] for p in changes.create}


def _live(state: _State) -> set[int]:
    return {k for k, p in state.positions.items() if p.status in LIVE}


class _SignalRepo:
    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self.uow = uow

    def claim(
        self,
        signal: Signal,
        fingerprint: str,
        received_at: dt.datetime,
        owner: str,
        claim_epoch: int = 1,
    ) -> ClaimResult:
        uow = self.uow
        existing = uow.state.fingerprints.get(fingerprint)
        if existing is not None:
            signals: dict[int, _SignalRow] = uow.w("signals")
            row = signals[existing]
            row = attrs.evolve(
                row, duplicate_count=row.duplicate_count + 1, last_duplicate_at=uow.now()
            )
            signals[existing] = row
            return Existing(
                id=row.id,
                status=row.status,
                outcome=row.outcome,
                http_status=row.http_status,
                completed_at=row.completed_at,
                response=row.response,
            )
        new_id = uow._store.next_id()
        uow.w("signals")[new_id] = _SignalRow(
            id=new_id,
            fingerprint=fingerprint,
            signal=signal,
            received_at=received_at,
            status="processing",
            owner_instance_id=owner,
            claim_epoch=claim_epoch,
        )
        uow.w("fingerprints")[fingerprint] = new_id
        return Claimed(id=new_id, epoch=claim_epoch)

    def _owned(self, signal_id: int, epoch: int) -> _SignalRow:
        row = self.uow.state.signals.get(signal_id)
        if row is None or row.claim_epoch != epoch:
            raise ClaimLost(f"signal {signal_id}: claim epoch {epoch} is no longer current")
        return row

    def set_state(self, signal_id: int, state: SignalState, epoch: int) -> None:
        if state not in SIGNAL_STATES:
            raise ValueError(f"unknown signal state {state!r}")
        row = self._owned(signal_id, epoch)
        completed = self.uow.now() if state in TERMINAL_SIGNAL else row.completed_at
        self.uow.w("signals")[signal_id] = attrs.evolve(row, status=state, completed_at=completed)

    def finish(
        self,
        signal_id: int,
        decision: Decision,
        epoch: int,
        http_status: int = 200,
        response: Mapping[str, Any] | None = None,
    ) -> None:
        state = finish_state(decision)
        row = self._owned(signal_id, epoch)
        self.uow.w("signals")[signal_id] = attrs.evolve(
            row,
            status=state,
            outcome=jsonable(decision.record()),
            http_status=http_status,
            completed_at=self.uow.now(),
            response=None if response is None else jsonable(response),
        )

    def mark_duplicate(self, signal_id: int, of_id: int, layer: str, epoch: int) -> None:
        row = self._owned(signal_id, epoch)
        self.uow.w("signals")[signal_id] = attrs.evolve(
            row,
            status="duplicate",
            duplicate_layer=layer,
            duplicate_of_id=of_id,
            completed_at=self.uow.now(),
        )

    def near(
        self, instrument: str, type_: str, label: str, instant: dt.datetime, window_s: float
    ) -> Sequence[RecordedSignal]:
        at = instant_us(instant)
        window = round(window_s * 1_000_000)
        out = []
        for row in sorted(self.uow.state.signals.values(), key=lambda r: r.id):
            s = row.signal
            if row.status == "duplicate" or (s.instrument, s.type, s.position) != (
                instrument,
                type_,
                label,
            ):
                continue
            ts = instant_us(s.timestamp)
            if abs(ts - at) <= window:
                out.append(_recorded(row))
        return out

    def get(self, signal_id: int) -> StoredSignal | None:
        row = self.uow.state.signals.get(signal_id)
        return None if row is None else row.stored()

    def by_fingerprint(self, fingerprint: str) -> StoredSignal | None:
        sid = self.uow.state.fingerprints.get(fingerprint)
        return None if sid is None else self.get(sid)

    def oldest_queued(self, instrument: str) -> StoredSignal | None:
        rows = [
            r
            for r in self.uow.state.signals.values()
            if r.status == "queued" and r.signal.instrument == instrument
        ]
        if not rows:
            return None
        return min(rows, key=lambda r: (r.received_at, r.id)).stored()

    def in_flight(self) -> Sequence[StoredSignal]:
        rows = [r for r in self.uow.state.signals.values() if r.status in ("queued", "processing")]
        return [r.stored() for r in sorted(rows, key=lambda r: (r.received_at, r.id))]

    def take_over(self, signal_id: int, seen_epoch: int, owner: str) -> int | None:
        row = self.uow.state.signals.get(signal_id)
        if row is None or row.claim_epoch != seen_epoch:
            return None
        self.uow.w("signals")[signal_id] = attrs.evolve(
            row, owner_instance_id=owner, claim_epoch=seen_epoch + 1
        )
        return seen_epoch + 1


def _recorded(row: _SignalRow) -> RecordedSignal:
    s = row.signal
    return RecordedSignal(
        fingerprint=row.fingerprint,
        instrument=s.instrument,
        type=s.type,
        label=s.position,
        instant_us=instant_us(s.timestamp),
        outcome=row.status,
        signal_id=row.id,
        timestamp=s.timestamp.astimezone(UTC),
    )


class _IntentRepo:
    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self.uow = uow

    def add(self, group: Sequence[OrderIntent], signal_id: int | None) -> Sequence[int]:
        uow = self.uow
        state = uow.state
        if signal_id is not None and signal_id not in state.signals:
            raise ValueError(f"signal {signal_id} does not exist")
        seen: set[str] = set()
        for intent in group:
            if intent.client_order_id in state.client_ids or intent.client_order_id in seen:
                raise DuplicateKey(f"client_order_id {intent.client_order_id} already stored")
            seen.add(intent.client_order_id)
        ids = []
        intents: dict[int, StoredIntent] = uow.w("intents")
        client_ids: dict[str, int] = uow.w("client_ids")
        for intent in group:
            pid = _real(uow.id_map, intent.position_id)
            assert pid is not None
            instrument = intent.instrument
            if not instrument and pid in state.positions:
                instrument = state.positions[pid].instrument
            new_id = uow._store.next_id()
            intents[new_id] = StoredIntent(
                id=new_id,
                intent=attrs.evolve(intent, position_id=pid, instrument=instrument),
                state="pending",
                signal_id=signal_id,
            )
            client_ids[intent.client_order_id] = new_id
            ids.append(new_id)
        return ids

    def claim(self, intent_id: int, owner: str, fence: Fence) -> StoredIntent | None:
        uow = self.uow
        leader_epoch: int | None = None
        if isinstance(fence, SignalFence):
            row = uow.state.signals.get(fence.signal_id)
            if row is None or row.claim_epoch != fence.claim_epoch:
                raise ClaimLost(f"signal {fence.signal_id}: claim epoch {fence.claim_epoch} lost")
        elif isinstance(fence, LeaderFence):
            uow.fence.check(fence.epoch)
            leader_epoch = fence.epoch
        current = uow.state.intents.get(intent_id)
        if current is None or current.state != "pending":
            return None
        claimed = attrs.evolve(
            current,
            state="sending",
            attempts=current.attempts + 1,
            sent_at=uow.now(),
            owner_instance_id=owner,
            leader_epoch=leader_epoch if leader_epoch is not None else current.leader_epoch,
            version=current.version + 1,
        )
        uow.w("intents")[intent_id] = claimed
        return claimed

    def transition(
        self,
        intent_id: int,
        from_state: IntentState,
        to_state: IntentState,
        data: Mapping[str, Any],
    ) -> bool:
        check_intent_data(data)
        uow = self.uow
        current = uow.state.intents.get(intent_id)
        if current is None or current.state != from_state:
            return False
        fields = {k: v for k, v in data.items() if k in attrs.fields_dict(StoredIntent)}
        if "average_price" in fields and fields["average_price"] is not None:
            fields["average_price"] = Decimal(fields["average_price"])
        order_id = fields.get("broker_order_id")
        if order_id is not None:
            other = uow.state.broker_ids.get(order_id)
            if other is not None and other != intent_id:
                raise DuplicateKey(f"broker order id {order_id} already bound to intent {other}")
            uow.w("broker_ids")[order_id] = intent_id
        uow.w("intents")[intent_id] = attrs.evolve(
            current, state=to_state, version=current.version + 1, **fields
        )
        return True

    def get(self, intent_id: int) -> StoredIntent | None:
        return self.uow.state.intents.get(intent_id)

    def for_signal(self, signal_id: int) -> Sequence[StoredIntent]:
        rows = [i for i in self.uow.state.intents.values() if i.signal_id == signal_id]
        return sorted(rows, key=lambda i: (i.intent.seq, i.id))

    def open_for(self, instrument: str) -> Sequence[StoredIntent]:
        return [i for i in self.unresolved() if i.intent.instrument == instrument]

    def unresolved(self) -> Sequence[StoredIntent]:
        rows = self.uow.state.intents
        return [rows[k] for k in sorted(rows) if rows[k].state not in TERMINAL_INTENT_STATES]


class _BlockRepo:
    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self.uow = uow

    def get(self, instrument: str) -> Block | None:
        row = self.uow.state.blocks.get(instrument)
        return None if row is None else row.block

    def set(self, instrument: str, block: Block) -> None:
        old = self.uow.state.blocks.get(instrument)
        version = 1 if old is None else old.version + 1
        self.uow.w("blocks")[instrument] = _BlockRow(block, version)

    def clear(self, instrument: str) -> None:
        if instrument in self.uow.state.blocks:
            del self.uow.w("blocks")[instrument]


class _StatisticsRepo:
    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self.uow = uow

    def add(self, deltas: Mapping[str, float]) -> None:
        check_statistics(deltas)
        stats: dict[str, float] = self.uow.w("statistics")
        for name, delta in deltas.items():
            stats[name] = stats.get(name, 0.0) + float(delta)

    def read(self) -> Mapping[str, float]:
        return dict(self.uow.state.statistics)


class _FenceRepo:
    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self.uow = uow

    def check(self, epoch: int) -> None:
        current = self.uow.factory.fence_epoch()
        if current != epoch:
            raise FencedError(f"leader epoch {epoch} is not the current {current}")


def ledger_entries(factory: MemoryUnitOfWorkFactory) -> tuple[LedgerEntry, ...]:
    """Every committed equity ledger entry (tests, reports)."""
    return tuple(factory.store.state.ledger)


def trade_records(factory: MemoryUnitOfWorkFactory) -> tuple[Trade, ...]:
    """Every committed trade record."""
    return tuple(factory.store.state.trades)


def _conforms(
    factory: MemoryUnitOfWorkFactory, uow: MemoryUnitOfWork
) -> tuple[UnitOfWorkFactory, UnitOfWork]:
    """Static proof (mypy) that these classes implement the ports."""
    return factory, uow
