"""Ports: the Protocols adapters implement (architecture.md section 6).

Infrastructure failures raise PmError leaves (StaleVersionError, FencedError, ClaimLost);
broker failures are values (SubmitResult, ReadResult). Fencing tokens are explicit arguments.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Generic, Literal, Protocol, TypeVar, get_args

import attrs

from pm_core.model import (
    Block,
    ChangeSet,
    Decision,
    Funds,
    OrderIntent,
    PortfolioSnapshot,
    Quote,
    RecordedSignal,
    Signal,
)

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

TxKind = Literal["signal", "rollover", "repair"]
SignalState = Literal[
    "queued",
    "processing",
    "executed",
    "partially_executed",
    "blocked",
    "rejected",
    "failed",
    "duplicate",
]
TERMINAL_SIGNAL_STATES = frozenset(
    {"executed", "partially_executed", "blocked", "rejected", "failed", "duplicate"}
)
IntentState = Literal[
    "pending",
    "sending",
    "accepted",
    "partially_filled",
    "filled",
    "unknown",
    "ambiguous",
    "cancelled",
    "rejected",
    "failed",
    "not_found",
    "abandoned",
]
TERMINAL_INTENT_STATES = frozenset(
    {"filled", "cancelled", "rejected", "failed", "not_found", "abandoned"}
)
SIGNAL_STATES: tuple[str, ...] = get_args(SignalState)
INTENT_STATES: tuple[str, ...] = get_args(IntentState)
# service.md 11: the trading_statistics counters; any other name is refused.
STATISTIC_NAMES: tuple[str, ...] = (
    "signals_received",
    "entries_executed",
    "entries_blocked",
    "entries_rejected",
    "pyramids_executed",
    "pyramids_blocked",
    "pyramids_rejected",
    "exits_executed",
    "exits_rejected",
    "stop_hit_exits",
    "orders_placed",
    "orders_failed",
    "rollovers_executed",
    "rollovers_failed",
    "rollover_cost_total",
    "duplicates_l1",
    "duplicates_l2",
    "duplicates_l3",
    "duplicates_near",
    "signals_invalid",
)


# --------------------------------------------------------------------------- clock


class Clock(Protocol):
    """Time as pm sees it; the pure core never reads it, callers pass ``now``."""

    def now(self) -> dt.datetime:
        """Aware UTC now."""
        ...

    def monotonic(self) -> float:
        """Seconds on a monotonic clock (deadlines, polls)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait; every background wait goes through here."""
        ...


# --------------------------------------------------------------------------- fencing values


@attrs.frozen
class SignalFence:
    """Fencing token of a signal owner: writes require this claim epoch."""

    signal_id: int
    claim_epoch: int


@attrs.frozen
class LeaderFence:
    """Fencing token of a leader: writes require this leader epoch."""

    epoch: int


Fence = SignalFence | LeaderFence


# --------------------------------------------------------------------------- unit of work


@attrs.frozen
class Claimed:
    """The signal row was inserted: this caller owns it at ``epoch``."""

    id: int
    epoch: int


@attrs.frozen
class Existing:
    """The fingerprint was already stored (L3 duplicate); its duplicate_count was bumped."""

    id: int
    status: SignalState
    outcome: Mapping[str, Any] | None
    http_status: int | None = None
    completed_at: dt.datetime | None = None
    response: Mapping[str, Any] | None = None


ClaimResult = Claimed | Existing


@attrs.frozen
class StoredSignal:
    """A signal_log row as the service needs it."""

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
    response: Mapping[str, Any] | None = None
    completed_at: dt.datetime | None = None


@attrs.frozen
class StoredIntent:
    """An order_intents row: the intent plus its execution state."""

    id: int
    intent: OrderIntent
    state: IntentState
    signal_id: int | None
    broker_order_id: str | None = None
    filled_quantity: int = 0
    average_price: Decimal | None = None
    attempts: int = 0
    owner_instance_id: str | None = None
    leader_epoch: int | None = None
    sent_at: dt.datetime | None = None
    last_error: str | None = None
    broker_mode: str | None = None
    version: int = 1


class PortfolioRepository(Protocol):
    """The portfolio aggregate: locked reads and version-checked saves."""

    def lock(self) -> PortfolioSnapshot:
        """Row-lock the portfolio and read the snapshot (live positions, marks, blocks)."""
        ...

    def save(self, changes: ChangeSet, expected_version: int) -> Mapping[int, int]:
        """Write a ChangeSet; returns placeholder id -> real id. StaleVersionError on conflict."""
        ...

    def read(self) -> PortfolioSnapshot:
        """Read without locking (read-only views, recovery snapshot)."""
        ...


class SignalRepository(Protocol):
    """signal_log: claims, states, decisions, near-duplicate lookups."""

    def claim(
        self,
        signal: Signal,
        fingerprint: str,
        received_at: dt.datetime,
        owner: str,
        claim_epoch: int = 1,
    ) -> ClaimResult:
        """Insert the row (processing) or bump the original's duplicate_count (L3)."""
        ...

    def set_state(self, signal_id: int, state: SignalState, epoch: int) -> None:
        """Change a claimed signal's state; ClaimLost unless ``epoch`` is current."""
        ...

    def finish(
        self,
        signal_id: int,
        decision: Decision,
        epoch: int,
        http_status: int = 200,
        response: Mapping[str, Any] | None = None,
    ) -> None:
        """Store the terminal decision record and the response body replays return.

        ClaimLost unless ``epoch`` is current.
        """
        ...

    def mark_duplicate(self, signal_id: int, of_id: int, layer: str, epoch: int) -> None:
        """Record a near duplicate: status duplicate, layer, duplicate_of_id."""
        ...

    def near(
        self, instrument: str, type_: str, label: str, instant: dt.datetime, window_s: float
    ) -> Sequence[RecordedSignal]:
        """Recorded (or in-flight) signals of the key within the window, either direction."""
        ...

    def get(self, signal_id: int) -> StoredSignal | None:
        """One row by id."""
        ...

    def by_fingerprint(self, fingerprint: str) -> StoredSignal | None:
        """One row by fingerprint."""
        ...

    def oldest_queued(self, instrument: str) -> StoredSignal | None:
        """The instrument's oldest queued signal (received_at order)."""
        ...

    def in_flight(self) -> Sequence[StoredSignal]:
        """Every queued or processing signal."""
        ...

    def take_over(self, signal_id: int, seen_epoch: int, owner: str) -> int | None:
        """Become the owner if the epoch is still ``seen_epoch``; returns the new epoch."""
        ...


class IntentRepository(Protocol):
    """order_intents, the outbox."""

    def add(self, group: Sequence[OrderIntent], signal_id: int | None) -> Sequence[int]:
        """Insert pending intents; returns their ids."""
        ...

    def claim(self, intent_id: int, owner: str, fence: Fence) -> StoredIntent | None:
        """pending -> sending under the fence; None if someone else claimed it first."""
        ...

    def transition(
        self,
        intent_id: int,
        from_state: IntentState,
        to_state: IntentState,
        data: Mapping[str, Any],
    ) -> bool:
        """Conditional state change; False when the intent was not in ``from_state``."""
        ...

    def get(self, intent_id: int) -> StoredIntent | None:
        """One intent by id."""
        ...

    def for_signal(self, signal_id: int) -> Sequence[StoredIntent]:
        """The intents of one signal in seq order."""
        ...

    def open_for(self, instrument: str) -> Sequence[StoredIntent]:
        """Non-terminal intents of an instrument (the barrier)."""
        ...

    def unresolved(self) -> Sequence[StoredIntent]:
        """Every non-terminal intent."""
        ...


class BlockRepository(Protocol):
    """instrument_blocks."""

    def get(self, instrument: str) -> Block | None:
        """The instrument's block, if any."""
        ...

    def set(self, instrument: str, block: Block) -> None:
        """Block new entries on the instrument."""
        ...

    def clear(self, instrument: str) -> None:
        """Lift the block."""
        ...


class StatisticsRepository(Protocol):
    """trading_statistics counters."""

    def add(self, deltas: Mapping[str, float]) -> None:
        """value = value + delta for each counter."""
        ...

    def read(self) -> Mapping[str, float]:
        """Every counter."""
        ...


class FenceRepository(Protocol):
    """leader_fence as leader jobs see it."""

    def check(self, epoch: int) -> None:
        """FencedError unless ``epoch`` is the current leader epoch."""
        ...


class UnitOfWork(Protocol):
    """A transaction: rolls back unless ``commit()`` is called."""

    portfolio: PortfolioRepository
    signals: SignalRepository
    intents: IntentRepository
    blocks: BlockRepository
    statistics: StatisticsRepository
    fence: FenceRepository

    def __enter__(self) -> UnitOfWork: ...

    def __exit__(self, *exc: object) -> None: ...

    def commit(self) -> None:
        """Make every change of this unit durable."""
        ...

    def rollback(self) -> None:
        """Discard every change of this unit."""
        ...


class UnitOfWorkFactory(Protocol):
    """Begins units of work of a kind (service.md 6)."""

    def begin(self, kind: TxKind = "signal", *, read_only: bool = False) -> UnitOfWork:
        """A new unit of work; ``signal`` READ COMMITTED, ``rollover``/``repair`` SERIALIZABLE."""
        ...


# --------------------------------------------------------------------------- coordination


@attrs.frozen
class LockHandle:
    """A held signal lock; ``degraded`` when the store was down and L2 was skipped."""

    fingerprint: str
    token: str
    owner: str
    fencing_token: int | None = None
    degraded: bool = False


class SignalLock(Protocol):
    """L2: a short lock per fingerprint. It only saves work; it never decides."""

    def acquire(self, fingerprint: str, ttl_ms: int) -> LockHandle | None:
        """The lock, a degraded handle if the store is down, or None if held elsewhere."""
        ...

    def release(self, handle: LockHandle) -> None:
        """Compare-and-delete: only our own lock is removed."""
        ...

    def extend(self, handle: LockHandle, ttl_ms: int) -> bool:
        """Push the expiry out; False if the lock is no longer ours."""
        ...

    def release_orphans(self, is_live: Callable[[str], bool]) -> int:
        """Remove locks whose owner is not live; returns how many."""
        ...


@attrs.frozen
class Lease:
    """Leadership: the fence epoch every leader write must carry."""

    epoch: int
    holder: str


class LeaderElection(Protocol):
    """Leader election for background jobs only (service.md 3)."""

    def try_acquire(self) -> Lease | None:
        """Become leader if nobody holds a live lease."""
        ...

    def renew(self, lease: Lease) -> bool:
        """Extend the lease; False = lost (stop jobs)."""
        ...

    def resign(self, lease: Lease) -> None:
        """Give leadership up now."""
        ...


@attrs.frozen
class InstanceInfo:
    """What an instance registers at start."""

    instance_id: str
    instance_name: str
    hostname: str
    port: int | None
    pid: int
    version: str


class InstanceRegistry(Protocol):
    """Instances and their heartbeats (service.md 3)."""

    def register(self, info: InstanceInfo) -> str:
        """Record the instance (status starting); returns its id."""
        ...

    def heartbeat(self, instance_id: str, status: str = "active") -> None:
        """I am alive, in this status."""
        ...

    def is_live(self, instance_id: str) -> bool:
        """Heartbeat fresh and status not stopped/crashed."""
        ...

    def mark_crashed(self, instance_id: str) -> None:
        """The leader declares a stale instance dead."""
        ...


class RateBudget(Protocol):
    """Cluster-wide broker rate budget (openalgo.md 7)."""

    def take(self, kind: Literal["order", "read"]) -> None:
        """Wait for a token; RateBudgetExceeded past PM_RATE_MAX_WAIT_MS."""
        ...


# --------------------------------------------------------------------------- broker


@attrs.frozen
class Accepted:
    """The broker accepted the order."""

    order_id: str
    mode: str | None = None


@attrs.frozen
class Definitive:
    """The order certainly did not happen; ``resend_allowed`` for 429/not sent."""

    reason_code: str
    message: str
    resend_allowed: bool = False


@attrs.frozen
class Unknown:
    """The order may or may not exist: resolve from the books, never re-send."""

    reason_code: str
    message: str


SubmitResult = Accepted | Definitive | Unknown


@attrs.frozen
class Ok(Generic[T_co]):
    """A successful broker read."""

    value: T_co


@attrs.frozen
class ReadError:
    """A failed broker read; ``kind`` e.g. auth, timeout, http_500, not_found, parse."""

    kind: str
    message: str


ReadResult = Ok[T] | ReadError


@attrs.frozen
class OrderRequest:
    """What place/modify send (openalgo.md 2); quantity in broker units, prices decimals."""

    symbol: str
    exchange: str
    action: Literal["BUY", "SELL"]
    product: str
    pricetype: Literal["MARKET", "LIMIT"]
    quantity: int
    price: Decimal = Decimal(0)
    tag: str = ""  # client_order_id; sent as strategy "<strategy>:<tag>"


@attrs.frozen
class OrderStatus:
    """orderstatus / orderbook row; status normalised (OPEN, COMPLETE, REJECTED, ...)."""

    order_id: str
    symbol: str
    exchange: str
    action: str
    quantity: int
    price: Decimal
    pricetype: str
    product: str
    status: str
    average_price: Decimal | None = None
    timestamp: dt.datetime | None = None


@attrs.frozen
class TradeRow:
    """tradebook row."""

    order_id: str
    symbol: str
    exchange: str
    action: str
    quantity: int
    average_price: Decimal
    product: str
    timestamp: dt.datetime | None = None
    trade_id: str | None = None


@attrs.frozen
class BrokerPosition:
    """positionbook row: signed quantity in the sent unit."""

    symbol: str
    exchange: str
    product: str
    quantity: int
    average_price: Decimal | None = None


class Broker(Protocol):
    """The broker (openalgo.md 3)."""

    def place(self, order: OrderRequest) -> SubmitResult:
        """Send an order."""
        ...

    def modify(self, order_id: str, order: OrderRequest) -> SubmitResult:
        """Change an open order (ladder)."""
        ...

    def cancel(self, order_id: str, tag: str = "") -> SubmitResult:
        """Cancel an order; retry-safe."""
        ...

    def order_status(self, order_id: str, tag: str = "") -> ReadResult[OrderStatus]:
        """One order's status."""
        ...

    def order_book(self) -> ReadResult[Sequence[OrderStatus]]:
        """Today's orders."""
        ...

    def trade_book(self) -> ReadResult[Sequence[TradeRow]]:
        """Today's trades."""
        ...

    def positions(self) -> ReadResult[Sequence[BrokerPosition]]:
        """Net positions (reconciliation)."""
        ...

    def funds(self) -> ReadResult[Funds]:
        """Account funds (broker equity)."""
        ...

    def quote(self, symbol: str, exchange: str) -> ReadResult[Quote]:
        """Last price, bid and ask."""
        ...

    def ping(self) -> ReadResult[str]:
        """Connectivity and authentication check."""
        ...

    def mode(self) -> ReadResult[str]:
        """``analyze`` or ``live``."""
        ...


# --------------------------------------------------------------------------- bundle


@attrs.frozen
class Ports:
    """Everything the service drives, chosen by pm_adapters.bootstrap."""

    clock: Clock
    uow: UnitOfWorkFactory
    lock: SignalLock
    leader: LeaderElection
    registry: InstanceRegistry
    broker: Broker
    rate: RateBudget
