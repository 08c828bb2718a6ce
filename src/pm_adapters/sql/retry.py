"""Engines, transient-error classification and the transaction retry loop (service.md 5, 6).

Transient = SQLSTATE 40001 (serialization), 40P01 (deadlock), 55P03 (lock not available),
a connection lost before COMMIT was sent, SQLite BUSY/LOCKED, and ``StaleVersionError``.
Repositories translate them into PmError leaves so the core never sees SQLAlchemy:
conflicts become ``StaleVersionError``, connection loss ``DatabaseUnavailable`` (or
``CommitUnknown`` when it happened during COMMIT, which is never retried blindly).
"""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol, TypeVar, cast

import attrs
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from pm_adapters.sql.redact import redact_url
from pm_adapters.sql.rows import json_dumps, json_loads
from pm_core.errors import (
    CommitUnknown,
    DatabaseUnavailable,
    PmError,
    StaleVersionError,
)
from pm_core.ports import TxKind, UnitOfWorkFactory
from pm_core.service.tx import RetryPolicy as RetryPolicy  # re-exported for callers
from pm_core.service.tx import in_transaction

T = TypeVar("T")

CONFLICT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
# Class 08 (connection exception) and the admin/crash shutdown codes: the session is gone;
# 57014 (statement_timeout hit): the database is too slow to answer, treated as unavailable.
CONNECTION_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "57014"})
Kind = Literal["conflict", "connection"]


@attrs.frozen
class DbSettings:
    """Database settings of service.md 13 (defaults as specified)."""

    pool_size: int = 10
    max_overflow: int = 10
    pool_recycle_s: float = 1800.0
    ping_idle_s: float = 5.0
    connect_timeout_s: float = 5.0
    statement_timeout_ms: int = 5000
    lock_timeout_ms: int = 2000
    idle_tx_timeout_s: float = 30.0
    sqlite_busy_timeout_ms: int = 5000
    connect_backoff_s: tuple[float, ...] = (1.0, 2.0, 4.0)
    tx_attempts: int = 4
    tx_backoff_base_ms: float = 25.0
    tx_backoff_cap_ms: float = 500.0
    tx_budget_request_ms: float = 2000.0
    tx_budget_background_ms: float = 30000.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DbSettings:
        """Settings from PM_* variables (unset ones keep their defaults)."""

        def pair(name: str, default: tuple[float, float]) -> tuple[float, float]:
            raw = env.get(name)
            if not raw:
                return default
            a, b = (float(x) for x in raw.split(","))
            return a, b

        d = cls()
        backoff = env.get("PM_DB_CONNECT_BACKOFF")
        retries = int(env.get("PM_DB_CONNECT_RETRIES", len(d.connect_backoff_s)))
        delays = (
            tuple(float(x) for x in backoff.split(",") if x.strip())
            if backoff
            else d.connect_backoff_s
        )
        delays = tuple(delays[min(i, len(delays) - 1)] for i in range(retries)) if delays else ()
        base, cap = pair("PM_TX_BACKOFF_MS", (d.tx_backoff_base_ms, d.tx_backoff_cap_ms))
        request, background = pair(
            "PM_TX_BUDGET_MS", (d.tx_budget_request_ms, d.tx_budget_background_ms)
        )
        return cls(
            pool_size=int(env.get("PM_DB_POOL_SIZE", d.pool_size)),
            max_overflow=int(env.get("PM_DB_MAX_OVERFLOW", d.max_overflow)),
            pool_recycle_s=float(env.get("PM_DB_POOL_RECYCLE_S", d.pool_recycle_s)),
            ping_idle_s=float(env.get("PM_DB_PING_IDLE_S", d.ping_idle_s)),
            connect_timeout_s=float(env.get("PM_DB_CONNECT_TIMEOUT_S", d.connect_timeout_s)),
            statement_timeout_ms=int(env.get("PM_PG_STATEMENT_TIMEOUT_MS", d.statement_timeout_ms)),
            lock_timeout_ms=int(env.get("PM_PG_LOCK_TIMEOUT_MS", d.lock_timeout_ms)),
            idle_tx_timeout_s=float(env.get("PM_PG_IDLE_TX_TIMEOUT_S", d.idle_tx_timeout_s)),
            sqlite_busy_timeout_ms=int(
                env.get("PM_SQLITE_BUSY_TIMEOUT_MS", d.sqlite_busy_timeout_ms)
            ),
            connect_backoff_s=delays,
            tx_attempts=int(env.get("PM_TX_ATTEMPTS", d.tx_attempts)),
            tx_backoff_base_ms=base,
            tx_backoff_cap_ms=cap,
            tx_budget_request_ms=request,
            tx_budget_background_ms=background,
        )


def create_engine(url: str, settings: DbSettings | None = None) -> Engine:
    """An Engine with the service.md 5 pool (PostgreSQL) or WAL + FULL sync (SQLite)."""
    s = settings or DbSettings()
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(
            parsed,
            json_serializer=json_dumps,
            json_deserializer=json_loads,
            connect_args={"timeout": s.sqlite_busy_timeout_ms / 1000, "check_same_thread": False},
        )
        _sqlite_events(engine, s)
        return engine
    options = (
        f"-c statement_timeout={s.statement_timeout_ms}"
        f" -c lock_timeout={s.lock_timeout_ms}"
        f" -c idle_in_transaction_session_timeout={round(s.idle_tx_timeout_s * 1000)}"
        " -c timezone=UTC"
        " -c default_transaction_isolation=read\\ committed"
    )
    engine = sa.create_engine(
        parsed,
        json_serializer=json_dumps,
        json_deserializer=json_loads,
        pool_size=s.pool_size,
        max_overflow=s.max_overflow,
        pool_recycle=s.pool_recycle_s,
        connect_args={"connect_timeout": max(1, round(s.connect_timeout_s)), "options": options},
    )
    _ping_when_idle(engine, s.ping_idle_s)
    return engine


def _ping_when_idle(engine: Engine, idle_s: float) -> None:
    """Ping a pooled connection before use only if it sat idle longer than ``idle_s``.

    A ping on every checkout costs a round trip per transaction. A connection that was in use
    moments ago is almost surely alive, and if it died anyway the statement fails with a
    connection error, SQLAlchemy invalidates the pool and the transaction retry loop starts
    over on a fresh connection (``in_transaction`` retries DatabaseUnavailable).
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["pm_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("pm_idle_since")
        if since is None or time.monotonic() - since <= idle_s:
            return  # new (just connected) or recently used
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool discards this connection and checks out (or opens) another one.
            raise sa.exc.DisconnectionError(f"pooled connection failed its ping: {exc}") from exc


def _sqlite_events(engine: Engine, s: DbSettings) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # We issue BEGIN ourselves (IMMEDIATE for writers), so the driver must not.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={int(s.sqlite_busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get("pm_sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


# --------------------------------------------------------------------------- classification


def sqlstate(exc: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE of a driver error, if any."""
    orig = getattr(exc, "orig", exc)
    state = getattr(orig, "sqlstate", None)
    return state if isinstance(state, str) else None


def classify(exc: BaseException) -> Kind | None:
    """``conflict`` (retry from a fresh read), ``connection`` (session lost) or None."""
    if isinstance(exc, StaleVersionError):
        return "conflict"
    if isinstance(exc, DatabaseUnavailable):
        return "connection"
    state = sqlstate(exc)
    if state in CONFLICT_SQLSTATES:
        return "conflict"
    if state is not None and (state.startswith("08") or state in CONNECTION_SQLSTATES):
        return "connection"
    orig = getattr(exc, "orig", exc)
    if isinstance(orig, sqlite3.OperationalError):
        text = str(orig).lower()
        if "locked" in text or "busy" in text:
            return "conflict"
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return "connection"
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError) and state is None:
        # psycopg raises OperationalError without a SQLSTATE when the socket dies.
        return "connection"
    return None


def translate(exc: BaseException, url: str, *, during_commit: bool = False) -> BaseException:
    """The PmError leaf for a transient driver error, or the error itself."""
    kind = classify(exc)
    if kind == "conflict" and not isinstance(exc, PmError):
        return StaleVersionError(
            f"transaction conflict, retry from a fresh read: {_first_line(exc)}"
        )
    if kind == "connection" and not isinstance(exc, PmError):
        message = f"database connection lost at {redact_url(url)}: {_first_line(exc)}"
        if during_commit:
            return CommitUnknown(message)
        return DatabaseUnavailable(message)
    return exc


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else orig.__class__.__name__


# --------------------------------------------------------------------------- retry loop


class _Begins(Protocol):
    def begin(self, kind: Any = "signal", *, read_only: bool = False) -> Any: ...


def policy_from(s: DbSettings, *, background: bool = False) -> RetryPolicy:
    """The request-path (or background) retry policy of these settings."""
    budget = s.tx_budget_background_ms if background else s.tx_budget_request_ms
    return RetryPolicy(
        s.tx_attempts, s.tx_backoff_base_ms / 1000, s.tx_backoff_cap_ms / 1000, budget / 1000
    )


@attrs.frozen
class _Timing:
    """A Clock made of plain functions (tests and benchmarks pass their own)."""

    sleep_fn: Callable[[float], None]
    monotonic_fn: Callable[[], float]

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def monotonic(self) -> float:
        return self.monotonic_fn()

    def sleep(self, seconds: float) -> None:
        self.sleep_fn(seconds)


def run_transaction(
    factory: _Begins,
    work: Callable[[Any], T],
    *,
    kind: TxKind = "signal",
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    on_retry: Callable[[BaseException], None] | None = None,
    rng: Callable[[], float] = random.random,
) -> T:
    """Run ``work(uow)`` and commit, retrying transient failures from a fresh unit of work.

    The service's retry loop (``pm_core.service.tx.in_transaction``) with plain sleep and
    monotonic functions; ``work`` must not commit and must be idempotent when re-run.
    """
    return in_transaction(
        cast(UnitOfWorkFactory, factory),
        work,
        _Timing(sleep, monotonic),
        policy or RetryPolicy(),
        kind=kind,
        on_retry=on_retry,
        rng=rng,
    )
