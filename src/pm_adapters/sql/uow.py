"""The SQL UnitOfWork (PostgreSQL 15+ via psycopg 3, SQLite) over SQLAlchemy Core.

Isolation (service.md 6): ``signal`` units run READ COMMITTED (SQLite ``BEGIN IMMEDIATE``),
``rollover``/``repair`` SERIALIZABLE, read-only units REPEATABLE READ READ ONLY (SQLite a
deferred read). ``portfolio.lock()`` takes ``FOR UPDATE`` on the single portfolio row; every
UPDATE of a versioned row carries ``WHERE version = :read`` and bumps it. Driver errors leave
as PmError leaves (``StaleVersionError``, ``DatabaseUnavailable``, ``CommitUnknown``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Engine

from pm_adapters.memory.uow import (
    LIVE,
    STATISTIC_NAMES,
    TERMINAL_SIGNAL,
    check_intent_data,
    check_statistics,
    finish_state,
)
from pm_adapters.sql import driver
from pm_adapters.sql import functions as _functions  # noqa: F401  (create_all makes the functions)
from pm_adapters.sql import rows as rowconv
from pm_adapters.sql.batch import WriteBatch
from pm_adapters.sql.driver import RowMemo
from pm_adapters.sql.redact import redact_url
from pm_adapters.sql.retry import translate
from pm_adapters.sql.tables import (
    equity_ledger,
    instrument_blocks,
    leader_fence,
    order_intents,
    portfolio_positions,
    portfolio_state,
    position_trades,
    pyramiding_state,
    signal_log,
    trading_statistics,
)
from pm_adapters.sql.types import Json, Money, UtcDateTime
from pm_core.errors import (
    ClaimLost,
    DatabaseUnavailable,
    DuplicateKey,
    FencedError,
    NotInitialised,
    StaleVersionError,
)
from pm_core.model import (
    Block,
    ChangeSet,
    Decision,
    Mark,
    OrderIntent,
    PortfolioSnapshot,
    Position,
    PyramidingState,
    RecordedSignal,
    RecordedSignals,
    Signal,
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
_LIVE = tuple(sorted(LIVE))
_NON_TERMINAL_INTENTS = (
    "pending",
    "sending",
    "accepted",
    "partially_filled",
    "unknown",
    "ambiguous",
)
_NOT_INIT = "portfolio_state row missing: run `pm init [--capital <amount>]`"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


# --------------------------------------------------------------------------- statements
# Built once: the hot path (T1) only binds parameters to cached, compiled statements.


def _insert(dialect: str) -> Callable[[sa.Table], Any]:
    return pg_dialect.insert if dialect == "postgresql" else sqlite_dialect.insert


@functools.cache
def _claim_insert(dialect: str) -> Any:
    return (
        _insert(dialect)(signal_log)
        .on_conflict_do_nothing(index_elements=["fingerprint"])
        .returning(signal_log.c.id)
    )


@functools.cache
def _statistics_upsert(dialect: str) -> Any:
    insert = _insert(dialect)(trading_statistics)
    return insert.on_conflict_do_update(
        index_elements=["name"],
        set_={
            "value": trading_statistics.c.value + insert.excluded.value,
            "updated_at": insert.excluded.updated_at,
        },
    )


@functools.cache
def _pyramiding_upsert(dialect: str, columns: frozenset[str]) -> Any:
    insert = _insert(dialect)(pyramiding_state)
    set_: dict[str, Any] = {name: insert.excluded[name] for name in sorted(columns)}
    set_["version"] = pyramiding_state.c.version + 1
    set_["updated_at"] = insert.excluded.updated_at
    return insert.on_conflict_do_update(index_elements=["instrument"], set_=set_)


_DUPLICATE_BUMP = (
    signal_log.update()
    .where(signal_log.c.fingerprint == sa.bindparam("fp"))
    .values(
        duplicate_count=signal_log.c.duplicate_count + 1,
        last_duplicate_at=sa.bindparam("at", type_=UtcDateTime),
    )
    .returning(
        signal_log.c.id,
        signal_log.c.status,
        signal_log.c.outcome,
        signal_log.c.http_status,
        signal_log.c.completed_at,
        signal_log.c.response,
    )
)
# SET columns come from the parameter names; sid/seen_epoch bind the fence.
_OWNED_UPDATE = signal_log.update().where(
    signal_log.c.id == sa.bindparam("sid"),
    signal_log.c.claim_epoch == sa.bindparam("seen_epoch"),
)
# SET columns come from the parameter names; pid/expected bind the optimistic version check.
_POSITION_UPDATE = (
    portfolio_positions.update()
    .where(
        portfolio_positions.c.id == sa.bindparam("pid"),
        portfolio_positions.c.version == sa.bindparam("expected"),
    )
    .values(version=portfolio_positions.c.version + 1)
)
_POSITION_INSERT = portfolio_positions.insert().returning(portfolio_positions.c.id)
_POSITION_INSERT_OPENED_BY = _POSITION_INSERT.values(
    opened_by_signal_id=sa.select(signal_log.c.id)
    .where(signal_log.c.fingerprint == sa.bindparam("opened_fp"))
    .scalar_subquery()
)
# inline: no implicit RETURNING of the new id (the batch adds its own RETURNING)
_TRADE_INSERT = position_trades.insert().inline()
_LEDGER_INSERT = equity_ledger.insert().inline()
# The same rows with their id given (drawn ahead), for the write batch (no RETURNING).
_POSITION_ROW = portfolio_positions.insert().inline()
_POSITION_ROW_OPENED_BY = _POSITION_ROW.values(
    opened_by_signal_id=sa.select(signal_log.c.id)
    .where(signal_log.c.fingerprint == sa.bindparam("opened_fp"))
    .scalar_subquery()
)
_PORTFOLIO_BUMP = (
    portfolio_state.update()
    .where(portfolio_state.c.id == 1, portfolio_state.c.version == sa.bindparam("expected"))
    .values(version=portfolio_state.c.version + 1)
)


class SqlUnitOfWorkFactory:
    """Begins SQL units of work on one Engine (the caller owns the engine's lifetime)."""

    def __init__(self, engine: Engine, *, now: Callable[[], dt.datetime] = _utcnow) -> None:
        self.engine = engine
        self.now = now
        self.dialect = engine.dialect.name
        self.url = redact_url(engine.url)  # for messages only: never holds the password
        # Live positions as last read, keyed by id with their row version. Every change to a
        # position row bumps its version (optimistic locking), so a row whose (id, version)
        # is known need not be fetched and converted again: the snapshot is still a fresh
        # read, only the conversion of unchanged rows is skipped.
        self.positions_cache = PositionCache()
        # Snapshot rows repeat from one read to the next (RowMemo): the converted
        # rows, and the values built from them.
        self.snapshot_rows = RowMemo()
        self.snapshot_values = RowMemo()
        # PostgreSQL: ids drawn ahead from the tables' sequences, so rows inserted under the
        # portfolio lock can join the unit's write batch (their ids are known before they
        # are sent). Sequences never hand out a value twice; unused ones are only a gap.
        self._ids: dict[str, list[int]] = {}
        self._ids_lock = threading.Lock()

    def next_id(self, uow: SqlUnitOfWork, table: str, block: int = 64) -> int:
        """A fresh id of ``table`` (PostgreSQL), drawing ``block`` at a time."""
        with self._ids_lock:
            free = self._ids.setdefault(table, [])
            if free:
                return free.pop()
        # nextval touches none of the unit's queued writes: they need not go first.
        cursor = uow.raw(
            "SELECT nextval(pg_get_serial_sequence(%(t)s, 'id')) FROM generate_series(1, %(n)s)",
            {"t": table, "n": block},
        )
        fresh = [int(r[0]) for r in cursor.fetchall()]
        fresh.reverse()  # pop() hands them out in ascending order
        first = fresh.pop()
        with self._ids_lock:
            self._ids.setdefault(table, []).extend(fresh)
        return first

    def begin(self, kind: TxKind = "signal", *, read_only: bool = False) -> SqlUnitOfWork:
        """A new unit of work of this kind (the connection is taken on first use)."""
        return SqlUnitOfWork(self, kind, read_only)

    def initialise(self, capital: float) -> bool:
        """Create the portfolio row, fence row and zeroed counters; True if the row was new."""
        with self.begin() as uow:
            conn = uow.conn
            exists = conn.execute(
                sa.select(portfolio_state.c.id).where(portfolio_state.c.id == 1)
            ).first()
            if exists is not None:
                return False
            conn.execute(
                portfolio_state.insert().values(
                    id=1,
                    initial_capital=capital,
                    closed_equity=capital,
                    equity_high=capital,
                    version=1,
                    updated_at=self.now(),
                )
            )
            uow.upsert(leader_fence, {"id": 1, "epoch": 0}, ["id"], {})
            for name in sorted(STATISTIC_NAMES):
                uow.upsert(trading_statistics, {"name": name, "value": 0.0}, ["name"], {})
            uow.commit()
            return True

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


class SqlUnitOfWork:
    """One database transaction: rolls back unless ``commit()`` is called."""

    def __init__(self, factory: SqlUnitOfWorkFactory, kind: TxKind, read_only: bool) -> None:
        self.factory = factory
        self.kind = kind
        self.read_only = read_only
        self.id_map: dict[int, int] = {}
        self.wrote_positions = False  # see PositionCache: uncommitted rows are never cached
        self.written_positions: dict[int, Position] = {}  # cached once the commit succeeds
        # The portfolio version this unit holds the row lock on (None: no lock), and the
        # checked writes made under it that wait for the next statement or the commit.
        self.locked_version: int | None = None
        self.locked_positions: dict[int, int] = {}  # live id -> version under that lock
        self.pending = WriteBatch(self)
        # Look-ups known to come back empty, from a probe sent with an earlier statement
        # (see _SignalRepo.near): each answered once, and only until this unit does anything.
        self.known_empty: set[tuple[str, str]] = set()
        self._conn: sa.Connection | None = None
        self._tx: sa.RootTransaction | None = None
        self._begin_sql: str | None = None  # PostgreSQL: the BEGIN not sent yet
        self._reads_alone = False  # plain reads may precede it (READ COMMITTED units)
        self._closed = False
        self.portfolio: PortfolioRepository = _PortfolioRepo(self)
        self.signals: SignalRepository = _SignalRepo(self)
        self.intents: IntentRepository = _IntentRepo(self)
        self.blocks: BlockRepository = _BlockRepo(self)
        self.statistics: StatisticsRepository = _StatisticsRepo(self)
        self.fence: FenceRepository = _FenceRepo(self)

    # -- transaction
    def __enter__(self) -> SqlUnitOfWork:
        self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._closed:
            self.rollback()

    @property
    def is_pg(self) -> bool:
        return self.factory.dialect == "postgresql"

    def _start(self) -> sa.Connection:
        if self._closed:
            raise RuntimeError("this unit of work has ended")
        if self._conn is not None:
            return self._conn
        try:
            conn = self.factory.engine.connect()
        except sa.exc.DBAPIError as exc:
            raise translate(exc, self.factory.url) from exc
        except sa.exc.TimeoutError as exc:
            raise DatabaseUnavailable(f"no database connection free in the pool: {exc}") from exc
        try:
            if self.is_pg:
                # The unit sends its own BEGIN, before its first statement that is not a
                # plain read (see ``raw``). Until then the connection is in autocommit mode
                # and idle; COMMIT and ROLLBACK go out as before.
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                if self.read_only:
                    self._begin_sql = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
                elif self.kind in ("rollover", "repair"):
                    self._begin_sql = "BEGIN ISOLATION LEVEL SERIALIZABLE READ WRITE"
                else:
                    self._begin_sql = "BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE"
                    self._reads_alone = True  # see raw(): snapshots are per statement
            else:
                conn = conn.execution_options(
                    pm_sqlite_begin="DEFERRED" if self.read_only else "IMMEDIATE"
                )
            self._tx = conn.begin()
        except sa.exc.DBAPIError as exc:
            conn.invalidate()
            conn.close()
            raise translate(exc, self.factory.url) from exc
        self._conn = conn
        return conn

    @property
    def conn(self) -> sa.Connection:
        conn = self._start()
        self._begin_alone()
        return conn

    def _begin_alone(self) -> None:
        """Open the PostgreSQL transaction (a BEGIN of its own, as the driver would send),
        unless it is open already."""
        if self._begin_sql is not None:
            begin, self._begin_sql = self._begin_sql, None
            driver.run(self._start(), begin, None, translate=self._translate)

    def _translate(self, exc: BaseException) -> BaseException:
        return translate(exc, self.factory.url)

    def _before_statement(self) -> sa.Connection:
        """Ready to send a statement: probes void, queued writes sent first (in order)."""
        self.known_empty.clear()
        conn = self._start()
        if self.pending.writes:
            self.pending.run()  # reads see this unit's writes; writes keep their order
        return conn

    def x(self, statement: Any, params: Any = None) -> sa.CursorResult[Any]:
        """Execute with driver errors translated to PmError leaves."""
        conn = self._before_statement()
        self._begin_alone()
        try:
            return conn.execute(statement, params)
        except sa.exc.DBAPIError as exc:
            raise translate(exc, self.factory.url) from exc
        except sa.exc.StatementError as exc:
            # A value our column types refused (e.g. a naive datetime): the plain error.
            if isinstance(exc.orig, ValueError | TypeError):
                raise exc.orig from exc
            raise

    def driver(
        self, sql: str, params: Mapping[str, Any] | None = None, *, plain_read: bool = False
    ) -> Any:
        """Run driver SQL on this unit's connection (PostgreSQL); the psycopg cursor."""
        self._before_statement()
        return self.raw(sql, params, plain_read=plain_read)

    def raw(
        self, sql: str, params: Mapping[str, Any] | None = None, *, plain_read: bool = False
    ) -> Any:
        """``driver`` without sending queued writes first (for statements that touch none).

        ``plain_read``: the statement only reads, without locking. In a READ COMMITTED unit
        that has not opened its transaction yet it runs on its own, as it would inside one
        (each statement reads what was committed before it starts); the BEGIN waits for the
        first statement that writes or locks, and a unit that never does sends neither BEGIN
        nor COMMIT.
        """
        conn = self._start()
        if not (plain_read and self._reads_alone):
            self._begin_alone()
        return driver.run(conn, sql, params, translate=self._translate)

    def fetch(
        self,
        statement: Any,
        params: Mapping[str, Any] | None = None,
        memo: RowMemo | None = None,
    ) -> list[Any]:
        """All rows of a statement built once at import (the driver path on PostgreSQL);
        ``memo`` serves repeated rows converted (``RowMemo``)."""
        if not self.is_pg:
            return list(self.x(statement, params))
        dialect = self.factory.engine.dialect
        compiled = driver.compiled(statement, dialect, frozenset(params or ()))
        cursor = self.driver(
            compiled.sql,
            compiled.bind(params) if params else None,
            plain_read=id(statement) in _PLAIN_READS,
        )
        return compiled.rows(dialect, cursor, memo)

    def known_to_be_empty(self, key: tuple[str, str]) -> bool:
        """True once if a probe showed this look-up empty and nothing happened since."""
        if key in self.known_empty:
            self.known_empty.discard(key)
            return True
        return False

    def write(self, statement: Any, params: Mapping[str, Any]) -> int:
        """Row count of a write built once at import (the driver path on PostgreSQL)."""
        if not self.is_pg:
            return int(self.x(statement, params).rowcount)
        compiled = driver.compiled(statement, self.factory.engine.dialect, frozenset(params))
        return int(self.driver(compiled.sql, compiled.bind(params)).rowcount)

    def upsert(
        self,
        table: sa.Table,
        values: Mapping[str, Any],
        keys: Sequence[str],
        update: Mapping[str, Any],
    ) -> None:
        """INSERT ... ON CONFLICT (keys) DO UPDATE SET update (DO NOTHING if empty)."""
        insert = (pg_dialect.insert if self.is_pg else sqlite_dialect.insert)(table).values(
            **values
        )
        if update:
            statement = insert.on_conflict_do_update(index_elements=list(keys), set_=dict(update))
        else:
            statement = insert.on_conflict_do_nothing(index_elements=list(keys))
        self.x(statement)

    def now(self) -> dt.datetime:
        return self.factory.now()

    def commit(self) -> None:
        """Make every change of this unit durable."""
        if self._closed:
            raise RuntimeError("this unit of work has ended")
        if self.pending.writes:
            try:
                self.pending.run()  # a failed check raises here; the caller rolls back
            except sa.exc.IntegrityError as exc:
                if "client_order_id" in str(exc.orig):
                    raise DuplicateKey(f"client_order_id already stored: {exc.orig}") from exc
                raise
        try:
            if self._tx is not None:
                self._tx.commit()
        except sa.exc.DBAPIError as exc:
            self._end()
            raise translate(exc, self.factory.url, during_commit=True) from exc
        if self.written_positions:
            # Committed: the rows are what this unit wrote, so the next snapshot of this
            # instance need not fetch them again (another writer's change bumps the version).
            self.factory.positions_cache.remember(
                [rowconv.position_as_stored(p) for p in self.written_positions.values()]
            )
        self._end()

    def rollback(self) -> None:
        """Discard every change of this unit."""
        self.pending = WriteBatch(self)
        try:
            if self._tx is not None and self._tx.is_active:
                self._tx.rollback()
        except sa.exc.DBAPIError:
            pass  # a dead connection has rolled back already
        finally:
            self._end()

    def _end(self) -> None:
        self._closed = True
        if self._conn is not None:
            with contextlib.suppress(sa.exc.DBAPIError):
                self._conn.close()
            self._conn = None
        self._tx = None


# --------------------------------------------------------------------------- portfolio


_P = portfolio_positions.c
_POSITION_COLUMNS = [portfolio_positions.c[name] for name in rowconv.POSITION_FIELDS]


def _real(id_map: Mapping[int, int], pid: int | None) -> int | None:
    if pid is None or pid >= 0:
        return pid
    return id_map.get(pid, pid)


_STATE_Q = sa.select(
    portfolio_state.c.version,
    portfolio_state.c.initial_capital,
    portfolio_state.c.closed_equity,
    portfolio_state.c.equity_high,
).where(portfolio_state.c.id == 1)
_LOCK_Q = _STATE_Q.with_for_update()
_PER_INSTRUMENT_COLUMNS = (
    pyramiding_state.c.instrument.label("p_instrument"),
    pyramiding_state.c.base_position_id,
    pyramiding_state.c.last_pyramid_price,
    pyramiding_state.c.mark_price,
    pyramiding_state.c.mark_atr,
    pyramiding_state.c.mark_ts,
    instrument_blocks.c.instrument.label("b_instrument"),
    instrument_blocks.c.reason,
    instrument_blocks.c.since,
    instrument_blocks.c.detail,
)


def _nulls(columns: Sequence[Any]) -> list[Any]:
    return [sa.cast(sa.null(), c.type).label(c.name) for c in columns]


_ID_AND_VERSION = (portfolio_positions.c.id, portfolio_positions.c.version)


class PositionCache:
    """Converted live positions by id, valid while their row version is unchanged."""

    def __init__(self) -> None:
        self._rows: dict[int, Position] = {}
        self._lock = threading.Lock()

    def known(self, live: Mapping[int, int]) -> tuple[list[Position], list[int]]:
        """Cached positions whose version matches, and the ids that must be fetched."""
        hits: list[Position] = []
        missing: list[int] = []
        with self._lock:
            for pid, version in live.items():
                cached = self._rows.get(pid)
                if cached is not None and cached.version == version:
                    hits.append(cached)
                else:
                    missing.append(pid)
        return hits, missing

    def get(self, position_id: int, version: int) -> Position | None:
        """The cached record of this row version, if any."""
        with self._lock:
            cached = self._rows.get(position_id)
        return cached if cached is not None and cached.version == version else None

    def remember(self, positions: Sequence[Position]) -> None:
        """Store freshly converted positions."""
        with self._lock:
            for p in positions:
                self._rows[p.id] = p

    def keep(self, live: Mapping[int, int]) -> None:
        """Forget positions that are no longer live."""
        with self._lock:
            for pid in [pid for pid in self._rows if pid not in live]:
                del self._rows[pid]


# Live positions, and per instrument the pyramiding state, mark and block (a full join:
# both are keyed by instrument), in one round trip: a UNION ALL told apart by ``kind``.
_POSITIONS_BY_ID_Q = sa.select(*_POSITION_COLUMNS).where(
    _P.id.in_(sa.bindparam("ids", expanding=True))
)
# PostgreSQL: the ids as one array parameter, so the statement is built once and runs on the
# driver path (an expanding IN is rendered anew for every list length).
_PG_POSITIONS_BY_ID_Q = sa.select(*_POSITION_COLUMNS).where(
    _P.id == sa.any_(sa.bindparam("ids", type_=pg_dialect.ARRAY(sa.BigInteger)))
)
_SNAPSHOT_Q = sa.union_all(
    sa.select(
        sa.literal("p").label("kind"),
        *_ID_AND_VERSION,  # the cache decides which rows to fetch whole
        *_nulls(_PER_INSTRUMENT_COLUMNS),
    ).where(_P.status.in_(_LIVE)),
    sa.select(
        sa.literal("i").label("kind"),
        *_nulls(_ID_AND_VERSION),
        *_PER_INSTRUMENT_COLUMNS,
    ).select_from(
        pyramiding_state.join(
            instrument_blocks,
            pyramiding_state.c.instrument == instrument_blocks.c.instrument,
            full=True,
        )
    ),
)


def _instrument_values(
    r: Any,
) -> tuple[PyramidingState | None, Mark | None, Block | None]:
    """An ``i`` row of the snapshot as values (shared while the row is unchanged: frozen)."""
    pyramid = (
        PyramidingState(r.base_position_id, r.last_pyramid_price)
        if r.base_position_id is not None or r.last_pyramid_price is not None
        else None
    )
    mark = Mark(r.mark_price, r.mark_atr, r.mark_ts) if r.mark_price is not None else None
    block = Block(r.reason, r.since, r.detail or {}) if r.reason is not None else None
    return pyramid, mark, block


def _pg_snapshot(take_lock: bool) -> Any:
    """``pm_portfolio_snapshot()`` (pm_adapters.sql.functions) with its rows' column types."""
    return sa.text(
        f"SELECT * FROM pm_portfolio_snapshot({'true' if take_lock else 'false'})"
    ).columns(
        sa.column("kind", sa.String),
        sa.column("version", sa.BigInteger),
        sa.column("initial_capital", Money),
        sa.column("closed_equity", Money),
        sa.column("equity_high", Money),
        sa.column("ids", pg_dialect.ARRAY(sa.BigInteger)),
        sa.column("versions", pg_dialect.ARRAY(sa.BigInteger)),
        sa.column("p_instrument", sa.String),
        sa.column("base_position_id", sa.BigInteger),
        sa.column("last_pyramid_price", Money),
        sa.column("mark_price", Money),
        sa.column("mark_atr", Money),
        sa.column("mark_ts", UtcDateTime),
        sa.column("b_instrument", sa.String),
        sa.column("reason", sa.String),
        sa.column("since", UtcDateTime),
        sa.column("detail", Json),
    )


_PG_LOCK_Q = _pg_snapshot(True)
_PG_READ_Q = _pg_snapshot(False)


class _PortfolioRepo:
    def __init__(self, uow: SqlUnitOfWork) -> None:
        self.uow = uow
        self._diff_ok = False

    def lock(self) -> PortfolioSnapshot:
        return self._snapshot(lock=True)

    def read(self) -> PortfolioSnapshot:
        return self._snapshot(lock=False)

    def _snapshot(self, *, lock: bool) -> PortfolioSnapshot:
        uow = self.uow
        locking = lock and not uow.read_only
        if uow.is_pg:
            # The state row (locked or not) and the rest in one round trip (functions.py).
            memo = uow.factory.snapshot_rows
            rows = uow.fetch(_PG_LOCK_Q if locking else _PG_READ_Q, None, memo)
            if not rows or rows[0].kind != "s":
                raise NotInitialised(_NOT_INIT)
            row, rest = rows[0], rows[1:]
        else:
            rows = uow.fetch(_LOCK_Q if locking else _STATE_Q)
            if not rows:
                raise NotInitialised(_NOT_INIT)
            row = rows[0]
            rest = uow.fetch(_SNAPSHOT_Q)
        if locking:
            uow.locked_version = row.version
        found: list[Position] = []
        pyramiding: dict[str, PyramidingState] = {}
        marks: dict[str, Mark] = {}
        blocks: dict[str, Block] = {}
        live_versions: dict[int, int] = {}
        instrument_values = uow.factory.snapshot_values
        for r in rest:
            if r.kind == "p":
                if uow.is_pg:
                    live_versions.update(zip(r.ids or (), r.versions or (), strict=True))
                else:
                    live_versions[r.id] = r.version
                continue
            values = instrument_values.get(r)
            if values is None:
                values = _instrument_values(r)
                instrument_values.put(r, values)
            pyramid, mark, block = values
            if pyramid is not None:
                pyramiding[r.p_instrument] = pyramid
            if mark is not None:
                marks[r.p_instrument] = mark
            if block is not None:
                blocks[r.b_instrument] = block
        cache = uow.factory.positions_cache
        if uow.wrote_positions:
            # Rows this unit changed are not committed: never serve or remember them.
            found, missing = [], list(live_versions)
        else:
            found, missing = cache.known(live_versions)
        if missing:
            rows_by_id = (
                uow.fetch(_PG_POSITIONS_BY_ID_Q, {"ids": missing})
                if uow.is_pg
                else uow.x(_POSITIONS_BY_ID_Q, {"ids": missing})
            )
            fetched = [rowconv.position_from_row(r._mapping) for r in rows_by_id]
            found.extend(fetched)
            if not uow.wrote_positions:
                cache.remember(fetched)
        if not uow.wrote_positions:
            cache.keep(live_versions)
        if uow.locked_version == row.version:
            uow.locked_positions = dict(live_versions)
        positions = tuple(sorted(found, key=lambda p: p.id))  # opening order
        return PortfolioSnapshot(
            version=row.version,
            initial_capital=row.initial_capital,
            closed_equity=row.closed_equity,
            equity_high=row.equity_high,
            positions=positions,
            pyramiding=pyramiding,
            marks=marks,
            blocks=blocks,
            recorded=RecordedSignals(),
            next_position_id=max((p.id for p in positions), default=0) + 1,
        )

    def save(self, changes: ChangeSet, expected_version: int) -> Mapping[int, int]:
        uow = self.uow
        now = uow.now()
        values: dict[str, Any] = {"expected": expected_version, "updated_at": now}
        if changes.portfolio is not None:
            values["closed_equity"] = changes.portfolio.closed_equity
            values["equity_high"] = changes.portfolio.equity_high

        def bumped(count: int) -> None:
            if count == 0:
                found = uow.x(sa.select(portfolio_state.c.version)).scalar()
                if found is None:
                    raise NotInitialised(_NOT_INIT)
                raise StaleVersionError(
                    f"portfolio version {found} is not the expected {expected_version}"
                )

        # The writes whose results are only checked go out together (one round trip on
        # PostgreSQL): at the end of this call, or, under this unit's portfolio lock at the
        # version read, with its next statement or commit. Inserts whose ids later rows
        # need run first.
        deferred = uow.is_pg and uow.locked_version == expected_version
        if deferred:
            # Under the lock only this unit moves versions: check the caller's here, at once.
            held = uow.locked_positions
            for p in changes.update:
                if p.id not in held:
                    deferred = False  # not read under this lock: the database checks now
                elif held[p.id] != p.version:
                    raise StaleVersionError(
                        f"position {p.id} version {held[p.id]} is not the expected {p.version}"
                    )
        batch = uow.pending if deferred else WriteBatch(uow)
        batch.add(_PORTFOLIO_BUMP, values, bumped, row="portfolio")
        if deferred:
            uow.locked_version = expected_version + 1
            for p in changes.update:
                uow.locked_positions[p.id] = p.version + 1
        id_map = uow.id_map
        # Diffing against cached rows is only sound before this unit changed any position.
        self._diff_ok = not uow.wrote_positions
        uow.wrote_positions = uow.wrote_positions or bool(changes.update or changes.create)
        for p in sorted(changes.update, key=lambda p: p.id):  # lock order: by id
            self._update_position(p, now, batch)
        if deferred:
            # Ids first (drawn ahead), so every anchor is known and the rows join the batch.
            for p in changes.create:
                id_map[p.id] = uow.factory.next_id(uow, "portfolio_positions")
                uow.locked_positions[id_map[p.id]] = 1
            for p in changes.create:
                self._queue_position(p, id_map[p.id], _real(id_map, p.anchor_base_id), now)
        else:
            self._insert_positions(changes.create, now)
        written = uow.written_positions
        for p in changes.update:
            written[p.id] = p.replace(
                version=p.version + 1, anchor_base_id=_real(id_map, p.anchor_base_id)
            )
        for p in changes.create:
            real = id_map[p.id]
            written[real] = p.replace(
                id=real, version=1, anchor_base_id=_real(id_map, p.anchor_base_id)
            )
        for inst in sorted(set(changes.pyramiding) | set(changes.marks)):
            self._pyramiding(inst, changes, now, batch)
        # New rows: each its own write in the batch (a key no other write shares).
        for t in changes.close:
            trade = {
                **rowconv.converter.unstructure(t),
                "position_id": _real(id_map, t.position_id),
            }
            batch.add(_TRADE_INSERT, trade, row=("new", len(batch.writes)))
        for e in changes.ledger:
            if e.amount == 0:  # CHECK amount <> 0: a zero entry records nothing
                continue
            entry = {
                "kind": e.kind,
                "amount": e.amount,
                "equity_after": e.equity_after,
                "position_id": _real(id_map, e.position_id),
                "note": e.note,
                "created_at": now,
            }
            batch.add(_LEDGER_INSERT, entry, row=("new", len(batch.writes)))
        for inst in sorted(changes.blocks):
            block = changes.blocks[inst]
            if block is None:
                uow.blocks.clear(inst)
            else:
                uow.blocks.set(inst, block)
        if changes.statistics:
            _add_statistics(batch, changes.statistics, now)
        if not deferred:
            batch.run()
        return {p.id: id_map[p.id] for p in changes.create}

    def _position_values(self, p: Position, anchor: int | None) -> dict[str, Any]:
        values = rowconv.position_values(p)
        values.pop("id")
        values.pop("version")
        values["anchor_base_id"] = anchor
        return values

    def _insert_position(self, p: Position, anchor: int | None, now: dt.datetime) -> int:
        values = self._position_values(p, anchor)
        values["version"] = 1
        values["created_at"] = now
        values["updated_at"] = now
        statement = _POSITION_INSERT
        if p.opened_by_fingerprint is not None:
            statement = _POSITION_INSERT_OPENED_BY
            values["opened_fp"] = p.opened_by_fingerprint
        return int(self.uow.fetch(statement, values)[0][0])

    def _insert_positions(self, create: Sequence[Position], now: dt.datetime) -> None:
        """Insert new positions one by one (ids from the database); anchors on later ones."""
        id_map = self.uow.id_map
        forward: list[tuple[int, int]] = []
        for p in create:
            anchor = _real(id_map, p.anchor_base_id)
            if anchor is not None and anchor < 0:
                forward.append((p.id, anchor))
                anchor = None
            id_map[p.id] = self._insert_position(p, anchor, now)
        for placeholder, anchor in forward:
            self.uow.x(
                portfolio_positions.update()
                .where(_P.id == id_map[placeholder])
                .values(anchor_base_id=_real(id_map, anchor))
            )

    def _queue_position(
        self, p: Position, position_id: int, anchor: int | None, now: dt.datetime
    ) -> None:
        values = self._position_values(p, anchor)
        values.update(id=position_id, version=1, created_at=now, updated_at=now)
        statement = _POSITION_ROW
        if p.opened_by_fingerprint is not None:
            statement = _POSITION_ROW_OPENED_BY
            values["opened_fp"] = p.opened_by_fingerprint
        self.uow.pending.add(statement, values, row=("position", position_id))

    def _update_position(self, p: Position, now: dt.datetime, batch: WriteBatch) -> None:
        anchor = _real(self.uow.id_map, p.anchor_base_id)
        before = self.uow.factory.positions_cache.get(p.id, p.version) if self._diff_ok else None
        if before is not None and before.anchor_base_id == anchor:
            # Marking changes a few fields of every position it touches: write only those.
            changed = {
                name: getattr(p, name)
                for name in rowconv.POSITION_FIELDS
                if name not in ("id", "version") and getattr(p, name) != getattr(before, name)
            }
            if "pending_exit" in changed and p.pending_exit is not None:
                changed["pending_exit"] = rowconv.jsonable(
                    rowconv.converter.unstructure(p.pending_exit)
                )
            values = changed
        else:
            values = self._position_values(p, anchor)
        values["updated_at"] = now
        values["pid"] = p.id
        values["expected"] = p.version

        def updated(count: int) -> None:
            if count == 0:
                found = self.uow.x(sa.select(_P.version).where(_P.id == p.id)).scalar()
                raise StaleVersionError(
                    f"position {p.id} version {found} is not the expected {p.version}"
                )

        batch.add(_POSITION_UPDATE, values, updated, row=("position", p.id))

    def _pyramiding(
        self, inst: str, changes: ChangeSet, now: dt.datetime, batch: WriteBatch
    ) -> None:
        values: dict[str, Any] = {}
        if inst in changes.pyramiding:
            ps = changes.pyramiding[inst]
            values["base_position_id"] = (
                None if ps is None else _real(self.uow.id_map, ps.base_position_id)
            )
            values["last_pyramid_price"] = None if ps is None else ps.last_pyramid_price
        mark = changes.marks.get(inst)
        if mark is not None:
            values.update(mark_price=mark.price, mark_atr=mark.atr, mark_ts=mark.ts)
        statement = _pyramiding_upsert(self.uow.factory.dialect, frozenset(values))
        batch.add(
            statement,
            {"instrument": inst, **values, "version": 1, "updated_at": now},
            row=("pyramiding", inst),
        )


# --------------------------------------------------------------------------- signals

_S = signal_log.c
_SIGNAL_COLUMNS = (
    _S.id,
    _S.fingerprint,
    _S.payload,
    _S.received_at,
    _S.status,
    _S.owner_instance_id,
    _S.claim_epoch,
    _S.outcome,
    _S.http_status,
    _S.attention_required,
    _S.response,
    _S.completed_at,
)


# A constant, not a bind parameter: a prepared statement's generic plan can then use the
# partial index on in-flight signals (status IN ('queued', 'processing')).
_QUEUED = _S.status == sa.literal_column("'queued'")
_NEAR_Q = (
    sa.select(_S.id, _S.fingerprint, _S.signal_ts, _S.status)
    .where(
        _S.instrument == sa.bindparam("inst"),
        _S.signal_type == sa.bindparam("type"),
        _S.position_label == sa.bindparam("label"),
        _S.signal_ts >= sa.bindparam("lo", type_=UtcDateTime),
        _S.signal_ts <= sa.bindparam("hi", type_=UtcDateTime),
        _S.status != "duplicate",
    )
    .order_by(_S.id)
)
_SIGNAL_BY_ID_Q = sa.select(*_SIGNAL_COLUMNS).where(_S.id == sa.bindparam("sid"))
_SIGNAL_BY_FP_Q = sa.select(*_SIGNAL_COLUMNS).where(_S.fingerprint == sa.bindparam("fp"))
_OLDEST_QUEUED_Q = (
    sa.select(*_SIGNAL_COLUMNS)
    .where(_S.instrument == sa.bindparam("inst"), _QUEUED)
    .order_by(_S.received_at, _S.id)
    .limit(1)
)


class _SignalRepo:
    def __init__(self, uow: SqlUnitOfWork) -> None:
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
        claimed = uow.fetch(
            _claim_insert(uow.factory.dialect),
            {
                "fingerprint": fingerprint,
                "instrument": signal.instrument,
                "signal_type": signal.type,
                "position_label": signal.position,
                "signal_ts": signal.timestamp,
                "received_at": received_at,
                "payload": rowconv.signal_payload(signal),
                "status": "processing",
                "owner_instance_id": owner,
                "claim_epoch": claim_epoch,
            },
        )
        if claimed:
            return Claimed(id=int(claimed[0][0]), epoch=claim_epoch)
        row = uow.x(_DUPLICATE_BUMP, {"fp": fingerprint, "at": uow.now()}).first()
        if row is None:  # the conflicting row vanished (retention): the caller retries
            raise StaleVersionError(f"signal {fingerprint[:16]} conflicted but is gone")
        return Existing(
            id=row.id,
            status=row.status,
            outcome=row.outcome,
            http_status=row.http_status,
            completed_at=row.completed_at,
            response=row.response,
        )

    def _owned_update(self, signal_id: int, epoch: int, values: Mapping[str, Any]) -> None:
        def owned(count: int) -> None:
            if count == 0:
                raise ClaimLost(f"signal {signal_id}: claim epoch {epoch} is no longer current")

        uow = self.uow
        params = {**values, "sid": signal_id, "seen_epoch": epoch}
        if uow.is_pg and uow.locked_version is not None:
            # Takeovers bump the epoch under the portfolio lock: while this unit holds it,
            # the check can wait for the commit.
            uow.pending.add(_OWNED_UPDATE, params, owned, row=("signal", signal_id))
        else:
            owned(uow.write(_OWNED_UPDATE, params))

    def set_state(self, signal_id: int, state: SignalState, epoch: int) -> None:
        if state not in TERMINAL_SIGNAL | {"queued", "processing"}:
            raise ValueError(f"unknown signal state {state!r}")
        values: dict[str, Any] = {"status": state}
        if state in TERMINAL_SIGNAL:
            values["completed_at"] = self.uow.now()
        self._owned_update(signal_id, epoch, values)

    def finish(
        self,
        signal_id: int,
        decision: Decision,
        epoch: int,
        http_status: int = 200,
        response: Mapping[str, Any] | None = None,
    ) -> None:
        state = finish_state(decision)
        record = decision.record()
        self._owned_update(
            signal_id,
            epoch,
            {
                "status": state,
                "outcome": record,
                "reason_codes": [c.code for c in decision.codes],
                "http_status": http_status,
                "response": None if response is None else rowconv.jsonable(response),
                "completed_at": self.uow.now(),
            },
        )

    def mark_duplicate(self, signal_id: int, of_id: int, layer: str, epoch: int) -> None:
        self._owned_update(
            signal_id,
            epoch,
            {
                "status": "duplicate",
                "duplicate_layer": layer,
                "duplicate_of_id": of_id,
                "completed_at": self.uow.now(),
            },
        )

    def near(
        self, instrument: str, type_: str, label: str, instant: dt.datetime, window_s: float
    ) -> Sequence[RecordedSignal]:
        window = dt.timedelta(microseconds=round(window_s * 1_000_000))
        at = instant.astimezone(UTC)
        uow = self.uow
        params = {
            "inst": instrument,
            "type": type_,
            "label": label,
            "lo": at - window,
            "hi": at + window,
        }
        if uow.is_pg and uow.locked_version is not None:
            # Under the portfolio lock T1 asks next for the instrument's barrier (open intents,
            # oldest queued signal). Usually there is none: this statement also counts both,
            # so an empty answer costs no further round trip. Counted after the lock was
            # granted, as the look-ups themselves would be, and used only if this unit does
            # nothing else in between.
            found = uow.fetch(_NEAR_AND_BARRIER_Q, params)
            rows = [r for r in found if r.kind == "n"]
            counts = {r.kind: r.id for r in found if r.kind != "n"}
            if counts.get("o") == 0:
                uow.known_empty.add(("open_for", instrument))
            if counts.get("q") == 0:
                uow.known_empty.add(("oldest_queued", instrument))
        else:
            rows = uow.fetch(_NEAR_Q, params)
        return [
            RecordedSignal(
                fingerprint=r.fingerprint,
                instrument=instrument,
                type=type_,
                label=label,
                instant_us=instant_us(r.signal_ts),
                outcome=r.status,
                signal_id=r.id,
                timestamp=r.signal_ts,
            )
            for r in rows
        ]

    def _one(self, statement: Any, params: Mapping[str, Any]) -> StoredSignal | None:
        rows = self.uow.fetch(statement, params)
        return rowconv.stored_signal_from_row(rows[0]._mapping) if rows else None

    def get(self, signal_id: int) -> StoredSignal | None:
        return self._one(_SIGNAL_BY_ID_Q, {"sid": signal_id})

    def by_fingerprint(self, fingerprint: str) -> StoredSignal | None:
        return self._one(_SIGNAL_BY_FP_Q, {"fp": fingerprint})

    def oldest_queued(self, instrument: str) -> StoredSignal | None:
        if self.uow.known_to_be_empty(("oldest_queued", instrument)):
            return None
        return self._one(_OLDEST_QUEUED_Q, {"inst": instrument})

    def in_flight(self) -> Sequence[StoredSignal]:
        rows = self.uow.x(
            sa.select(*_SIGNAL_COLUMNS)
            .where(_S.status.in_(("queued", "processing")))
            .order_by(_S.received_at, _S.id)
        )
        return [rowconv.stored_signal_from_row(r._mapping) for r in rows]

    def take_over(self, signal_id: int, seen_epoch: int, owner: str) -> int | None:
        epoch = self.uow.x(
            signal_log.update()
            .where(_S.id == signal_id, _S.claim_epoch == seen_epoch)
            .values(owner_instance_id=owner, claim_epoch=_S.claim_epoch + 1)
            .returning(_S.claim_epoch)
        ).scalar()
        return None if epoch is None else int(epoch)


# --------------------------------------------------------------------------- intents

_I = order_intents.c


def _one_of(column: Any, values: Sequence[str]) -> Any:
    """``column IN ('a', 'b')`` with the constants inline: compiled once, no expanding bind."""
    return column.in_([sa.literal_column(f"'{v}'") for v in values])


_INTENT_INSERT = order_intents.insert().returning(_I.id)
_INTENT_ROW = order_intents.insert().inline()
_INTENT_CLAIM = (
    order_intents.update()
    .where(_I.id == sa.bindparam("iid"), _I.state == "pending")
    .values(state="sending", attempts=_I.attempts + 1, version=_I.version + 1)
    .returning(*order_intents.c)
)
_INTENT_CLAIM_FENCED = _INTENT_CLAIM.where(
    sa.exists(
        sa.select(signal_log.c.id)
        .where(
            signal_log.c.id == sa.bindparam("sid"),
            signal_log.c.claim_epoch == sa.bindparam("epoch"),
        )
        .with_for_update(read=True)
    )
)
# SET columns come from the parameter names.
_INTENT_TRANSITION = (
    order_intents.update()
    .where(_I.id == sa.bindparam("iid"), _I.state == sa.bindparam("from_state"))
    .values(version=_I.version + 1)
)
_SIGNAL_EPOCH = sa.select(_S.claim_epoch).where(_S.id == sa.bindparam("sid"))
# PostgreSQL: a share lock, so a takeover cannot commit between this check and the claim.
_SIGNAL_EPOCH_SHARED = _SIGNAL_EPOCH.with_for_update(read=True)
_INTENT_BY_ID_Q = sa.select(order_intents).where(_I.id == sa.bindparam("iid"))
_INTENTS_FOR_SIGNAL_Q = (
    sa.select(order_intents).where(_I.signal_id == sa.bindparam("sid")).order_by(_I.seq, _I.id)
)
_INTENTS_OPEN_FOR_Q = (
    sa.select(order_intents)
    .where(_I.instrument == sa.bindparam("inst"), _one_of(_I.state, _NON_TERMINAL_INTENTS))
    .order_by(_I.id)
)
_INTENTS_UNRESOLVED_Q = (
    sa.select(order_intents).where(_one_of(_I.state, _NON_TERMINAL_INTENTS)).order_by(_I.id)
)

# Statements that only read, without locking: in a READ COMMITTED unit they may run before
# its transaction opens (SqlUnitOfWork.raw). Nothing that writes or locks belongs here.
_PLAIN_READS = frozenset(
    id(q)
    for q in (
        _SIGNAL_BY_ID_Q,
        _SIGNAL_BY_FP_Q,
        _OLDEST_QUEUED_Q,
        _INTENT_BY_ID_Q,
        _INTENTS_FOR_SIGNAL_Q,
        _INTENTS_OPEN_FOR_Q,
        _INTENTS_UNRESOLVED_Q,
    )
)


def _count_as_id(kind: str, where: Any, table: sa.Table) -> Any:
    """A near-look-up-shaped row: ``kind`` and a count where the id goes."""
    return (
        sa.select(
            sa.literal(kind).label("kind"),
            sa.func.count().label("id"),
            sa.cast(sa.null(), _S.fingerprint.type).label("fingerprint"),
            sa.cast(sa.null(), _S.signal_ts.type).label("signal_ts"),
            sa.cast(sa.null(), _S.status.type).label("status"),
        )
        .select_from(table)
        .where(where)
    )


# PostgreSQL, under the portfolio lock: the near look-up plus the instrument's barrier counts.
_NEAR_AND_BARRIER_Q: Any = sa.union_all(
    _NEAR_Q.with_only_columns(sa.literal("n").label("kind"), *_NEAR_Q.selected_columns).order_by(
        None
    ),
    _count_as_id(
        "o",
        sa.and_(_I.instrument == sa.bindparam("inst"), _one_of(_I.state, _NON_TERMINAL_INTENTS)),
        order_intents,
    ),
    _count_as_id("q", sa.and_(_S.instrument == sa.bindparam("inst"), _QUEUED), signal_log),
).order_by(sa.literal_column("kind"), sa.literal_column("id"))


class _IntentRepo:
    def __init__(self, uow: SqlUnitOfWork) -> None:
        self.uow = uow

    def add(self, group: Sequence[OrderIntent], signal_id: int | None) -> Sequence[int]:
        uow = self.uow
        ids: list[int] = []
        now = uow.now()
        for intent in group:
            values = rowconv.intent_values(intent)
            values["position_id"] = _real(uow.id_map, intent.position_id)
            if not intent.instrument:
                values["instrument"] = sa.func.coalesce(
                    sa.select(_P.instrument)
                    .where(_P.id == values["position_id"])
                    .scalar_subquery(),
                    "",
                )
            values.update(signal_id=signal_id, state="pending", created_at=now, updated_at=now)
            if intent.instrument and uow.is_pg and uow.locked_version is not None:
                # Under the portfolio lock: the row joins the write batch, its id drawn ahead
                # (a duplicate client_order_id then surfaces at commit, as DuplicateKey).
                values["id"] = uow.factory.next_id(uow, "order_intents")
                uow.pending.add(_INTENT_ROW, values, row=("intent", values["id"]))
                ids.append(values["id"])
                continue
            try:
                if intent.instrument:
                    new_id = uow.fetch(_INTENT_INSERT, values)[0][0]
                else:  # rare (leader-origin unwinds): the SQL subquery names it
                    new_id = uow.x(
                        order_intents.insert().values(**values).returning(_I.id)
                    ).scalar_one()
            except sa.exc.IntegrityError as exc:
                if "client_order_id" in str(exc.orig):
                    raise DuplicateKey(
                        f"client_order_id {intent.client_order_id} already stored"
                    ) from exc
                raise
            ids.append(int(new_id))
        return ids

    def claim(self, intent_id: int, owner: str, fence: Fence) -> StoredIntent | None:
        uow = self.uow
        now = uow.now()
        values: dict[str, Any] = {
            "iid": intent_id,
            "sent_at": now,
            "owner_instance_id": owner,
            "updated_at": now,
        }
        if isinstance(fence, SignalFence) and uow.is_pg:
            # One statement: the claim happens only while the epoch is ours, with the signal
            # row share-locked (a takeover cannot commit in between). Nothing claimed: find out
            # whether the epoch moved (ClaimLost) or the intent is no longer pending (None).
            fenced = {**values, "sid": fence.signal_id, "epoch": fence.claim_epoch}
            rows = uow.fetch(_INTENT_CLAIM_FENCED, fenced)
            if rows:
                return rowconv.stored_intent_from_row(rows[0]._mapping)
        if isinstance(fence, SignalFence):
            q = _SIGNAL_EPOCH_SHARED if uow.is_pg else _SIGNAL_EPOCH
            rows = uow.fetch(q, {"sid": fence.signal_id})
            epoch = rows[0][0] if rows else None
            if epoch != fence.claim_epoch:
                raise ClaimLost(f"signal {fence.signal_id}: claim epoch {fence.claim_epoch} lost")
        elif isinstance(fence, LeaderFence):
            uow.fence.check(fence.epoch)
            values["leader_epoch"] = fence.epoch
        rows = uow.fetch(_INTENT_CLAIM, values)
        return rowconv.stored_intent_from_row(rows[0]._mapping) if rows else None

    def transition(
        self,
        intent_id: int,
        from_state: IntentState,
        to_state: IntentState,
        data: Mapping[str, Any],
    ) -> bool:
        check_intent_data(data)
        uow = self.uow
        now = uow.now()
        values: dict[str, Any] = {
            **data,
            "state": to_state,
            "updated_at": now,
            "iid": intent_id,
            "from_state": from_state,
        }
        if to_state in TERMINAL_INTENT_STATES and "resolved_at" not in data:
            values["resolved_at"] = now
        try:
            done = uow.write(_INTENT_TRANSITION, values)
        except sa.exc.IntegrityError as exc:
            raise DuplicateKey(
                f"broker order id {data.get('broker_order_id')} is already bound"
            ) from exc
        return done > 0

    def get(self, intent_id: int) -> StoredIntent | None:
        found = self._many(_INTENT_BY_ID_Q, {"iid": intent_id})
        return found[0] if found else None

    def _many(self, statement: Any, params: Mapping[str, Any] | None) -> list[StoredIntent]:
        return [
            rowconv.stored_intent_from_row(r._mapping) for r in self.uow.fetch(statement, params)
        ]

    def for_signal(self, signal_id: int) -> Sequence[StoredIntent]:
        return self._many(_INTENTS_FOR_SIGNAL_Q, {"sid": signal_id})

    def open_for(self, instrument: str) -> Sequence[StoredIntent]:
        if self.uow.known_to_be_empty(("open_for", instrument)):
            return []
        return self._many(_INTENTS_OPEN_FOR_Q, {"inst": instrument})

    def unresolved(self) -> Sequence[StoredIntent]:
        return self._many(_INTENTS_UNRESOLVED_Q, None)


# --------------------------------------------------------------------------- the rest


class _BlockRepo:
    def __init__(self, uow: SqlUnitOfWork) -> None:
        self.uow = uow

    def get(self, instrument: str) -> Block | None:
        row = self.uow.x(
            sa.select(instrument_blocks).where(instrument_blocks.c.instrument == instrument)
        ).first()
        return None if row is None else Block(row.reason, row.since, row.detail or {})

    def set(self, instrument: str, block: Block) -> None:
        values = {
            "reason": block.reason,
            "since": block.since,
            "detail": rowconv.jsonable(dict(block.detail)),
        }
        self.uow.upsert(
            instrument_blocks,
            {"instrument": instrument, **values, "version": 1},
            ["instrument"],
            {**values, "version": instrument_blocks.c.version + 1},
        )

    def clear(self, instrument: str) -> None:
        self.uow.x(instrument_blocks.delete().where(instrument_blocks.c.instrument == instrument))


class _StatisticsRepo:
    def __init__(self, uow: SqlUnitOfWork) -> None:
        self.uow = uow

    def add(self, deltas: Mapping[str, float]) -> None:
        uow = self.uow
        deferred = uow.is_pg and uow.locked_version is not None
        batch = uow.pending if deferred else WriteBatch(uow)
        _add_statistics(batch, deltas, uow.now())
        if not deferred:
            batch.run()

    def read(self) -> Mapping[str, float]:
        rows = self.uow.x(sa.select(trading_statistics.c.name, trading_statistics.c.value))
        return {r.name: float(r.value) for r in rows}


def _add_statistics(batch: WriteBatch, deltas: Mapping[str, float], now: dt.datetime) -> None:
    check_statistics(deltas)
    statement = _statistics_upsert(batch.uow.factory.dialect)
    for name in sorted(deltas):  # a fixed name order keeps concurrent writers from deadlocking
        batch.add(
            statement,
            {"name": name, "value": float(deltas[name]), "updated_at": now},
            row=("statistic", name),
        )


class _FenceRepo:
    def __init__(self, uow: SqlUnitOfWork) -> None:
        self.uow = uow

    def check(self, epoch: int) -> None:
        q = sa.select(leader_fence.c.epoch, leader_fence.c.holder).where(leader_fence.c.id == 1)
        if self.uow.is_pg:
            q = q.with_for_update(read=True)
        row = self.uow.x(q).first()
        current = None if row is None or row.holder is None else row.epoch
        if current != epoch:
            raise FencedError(f"leader epoch {epoch} is not the current {current}")


def _conforms(
    factory: SqlUnitOfWorkFactory, uow: SqlUnitOfWork
) -> tuple[UnitOfWorkFactory, UnitOfWork]:
    """Static proof (mypy) that these classes implement the ports."""
    return factory, uow
