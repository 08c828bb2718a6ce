"""Real PostgreSQL races, with threads and with processes (service.md 2.3, 6)."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
import sqlalchemy as sa

from pm_adapters.sql.retry import RetryPolicy, create_engine, run_transaction
from pm_adapters.sql.tables import metadata, portfolio_positions, signal_log
from pm_adapters.sql.uow import SqlUnitOfWork, SqlUnitOfWorkFactory
from pm_core.errors import StaleVersionError
from pm_core.model import ChangeSet, Position, Signal
from pm_core.ports import Claimed, Existing
from tests.kit.postgres import PgServer

pytestmark = pytest.mark.integration

T0 = dt.datetime(2025, 11, 28, 10, 30, tzinfo=dt.UTC)
CAPITAL = 1_000_000.0
CAP_PERCENT = 15.0
POLICY = RetryPolicy(attempts=10, base_s=0.005, cap_s=0.05, budget_s=10.0)
MODES = ["threads", "processes"]


@pytest.fixture()
def db(pg_server: PgServer) -> Iterator[str]:
    url = pg_server.create_database("race")
    engine = create_engine(url)
    metadata.create_all(engine)
    SqlUnitOfWorkFactory(engine).initialise(CAPITAL)
    engine.dispose()
    yield url


def position(label: str, risk: float) -> Position:
    """A 1-lot GOLD_MINI position whose risk (entry - stop) x pv is ``risk``."""
    return Position(
        id=-1,
        instrument="GOLD_MINI",
        label=label,
        status="pending_open",
        is_base_position=label == "Long_1",
        lots=1,
        quantity=1,
        lot_size=1,
        point_value=1.0,
        entry_timestamp=T0,
        entry_price=100_000.0,
        initial_stop=100_000.0 - risk,
        current_stop=100_000.0 - risk,
        highest_close=100_000.0,
        atr=100.0,
        basis=100_000.0,
    )


def run_parallel(
    mode: str, target: Callable[..., None], args_list: list[tuple[Any, ...]]
) -> list[Any]:
    """Run ``target(queue, barrier, *args)`` in parallel workers; collect what they put."""
    n = len(args_list)
    if mode == "threads":
        import queue as q

        out: Any = q.Queue()
        barrier: Any = threading.Barrier(n)
        workers: list[Any] = [
            threading.Thread(target=target, args=(out, barrier, *a)) for a in args_list
        ]
    else:
        ctx = multiprocessing.get_context("fork")
        out = ctx.Queue()
        barrier = ctx.Barrier(n)
        workers = [ctx.Process(target=target, args=(out, barrier, *a)) for a in args_list]
    for w in workers:
        w.start()
    results = [out.get(timeout=60) for _ in range(n)]
    for w in workers:
        w.join(timeout=60)
    return results


# --------------------------------------------------------------------------- same version


def _same_version_worker(out: Any, barrier: Any, url: str, label: str) -> None:
    engine = create_engine(url)
    factory = SqlUnitOfWorkFactory(engine)
    try:
        with factory.begin(read_only=True) as uow:
            seen = uow.portfolio.read().version
        barrier.wait(timeout=30)
        stale: list[str] = []
        try:
            with factory.begin() as uow:
                uow.portfolio.save(ChangeSet(create=(position(label, 10.0),)), seen)
                time.sleep(0.2)  # hold the row so the other writer queues on it
                uow.commit()
            out.put(("won", seen, len(stale)))
            return
        except StaleVersionError as exc:
            stale.append(str(exc))

        def retry(uow: SqlUnitOfWork) -> int:
            snap = uow.portfolio.read()  # a fresh read under a new transaction
            uow.portfolio.save(ChangeSet(create=(position(label, 10.0),)), snap.version)
            return snap.version

        fresh = run_transaction(factory, retry, policy=POLICY)
        out.put(("retried", fresh, len(stale)))
    except Exception as exc:  # pragma: no cover - reported to the parent
        out.put(("error", repr(exc), 0))
    finally:
        engine.dispose()


@pytest.mark.parametrize("mode", MODES)
def test_same_version_one_commit_wins_other_retries_fresh(db: str, mode: str) -> None:
    results = run_parallel(mode, _same_version_worker, [(db, "Long_1"), (db, "Long_2")])
    kinds = sorted(r[0] for r in results)
    assert kinds == ["retried", "won"], results
    won = next(r for r in results if r[0] == "won")
    retried = next(r for r in results if r[0] == "retried")
    assert won[1] == 1 and retried[2] == 1  # the loser hit exactly one StaleVersionError
    assert retried[1] == 2  # and re-read the winner's version
    engine = create_engine(db)
    with SqlUnitOfWorkFactory(engine).begin(read_only=True) as uow:
        snap = uow.portfolio.read()
    engine.dispose()
    assert snap.version == 3 and sorted(p.label for p in snap.positions) == ["Long_1", "Long_2"]


# --------------------------------------------------------------------------- risk cap


def _cap_worker(out: Any, barrier: Any, url: str, label: str, risk: float) -> None:
    engine = create_engine(url)
    factory = SqlUnitOfWorkFactory(engine)
    try:
        barrier.wait(timeout=30)

        def reserve(uow: SqlUnitOfWork) -> bool:
            snap = uow.portfolio.lock()
            total = sum(
                max(0.0, p.entry_price - p.current_stop) * p.lots * p.point_value
                for p in snap.positions
            )
            if (total + risk) / snap.closed_equity * 100 > CAP_PERCENT:
                return False
            time.sleep(0.1)  # widen the window a check-then-act race would need
            uow.portfolio.save(ChangeSet(create=(position(label, risk),)), snap.version)
            return True

        out.put(run_transaction(factory, reserve, policy=POLICY))
    except Exception as exc:  # pragma: no cover
        out.put(repr(exc))
    finally:
        engine.dispose()


@pytest.mark.parametrize("mode", MODES)
def test_two_signals_breaching_the_cap_at_most_one_passes(db: str, mode: str) -> None:
    risk = CAPITAL * 0.10  # each alone fits under 15 %, both together do not
    args = [(db, f"Long_{n}", risk) for n in (1, 2, 3)]
    results = run_parallel(mode, _cap_worker, args)
    assert sorted(results, key=str) == [False, False, True], results
    engine = create_engine(db)
    with engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(portfolio_positions)).scalar()
    engine.dispose()
    assert count == 1


# --------------------------------------------------------------------------- fingerprint


def _claim_worker(out: Any, barrier: Any, url: str, owner: str) -> None:
    engine = create_engine(url)
    factory = SqlUnitOfWorkFactory(engine)
    sig = Signal("BASE_ENTRY", "GOLD_MINI", "Long_1", 100.0, 90.0, 1, 2.0, 0.5, 95.0, T0)
    try:
        barrier.wait(timeout=30)
        with factory.begin() as uow:
            result = uow.signals.claim(sig, "f" * 64, T0, owner)
            time.sleep(0.2)  # keep the insert uncommitted while the other arrives
            uow.commit()
        out.put(attrs.asdict(result) | {"kind": type(result).__name__})
    except Exception as exc:  # pragma: no cover
        out.put({"kind": "error", "error": repr(exc)})
    finally:
        engine.dispose()


@pytest.mark.parametrize("mode", MODES)
def test_same_fingerprint_from_two_connections_claims_once(db: str, mode: str) -> None:
    results = run_parallel(mode, _claim_worker, [(db, "inst-a"), (db, "inst-b")])
    kinds = sorted(r["kind"] for r in results)
    assert kinds == [Claimed.__name__, Existing.__name__], results
    claimed = next(r for r in results if r["kind"] == "Claimed")
    existing = next(r for r in results if r["kind"] == "Existing")
    assert existing["id"] == claimed["id"] and existing["status"] == "processing"
    engine = create_engine(db)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(signal_log.c.id, signal_log.c.duplicate_count)).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [(claimed["id"], 1)]


# --------------------------------------------------------------------------- isolation


@pytest.mark.parametrize(
    ("kind", "read_only", "level"),
    [
        ("signal", False, "read committed"),
        ("rollover", False, "serializable"),
        ("repair", False, "serializable"),
        ("signal", True, "repeatable read"),
    ],
)
def test_postgres_isolation_by_kind(db: str, kind: Any, read_only: bool, level: str) -> None:
    engine = create_engine(db)
    factory = SqlUnitOfWorkFactory(engine)
    try:
        with factory.begin(kind, read_only=read_only) as uow:
            found = uow.conn.execute(sa.text("SHOW transaction_isolation")).scalar()
            ro = uow.conn.execute(sa.text("SHOW transaction_read_only")).scalar()
        assert found == level and ro == ("on" if read_only else "off")
        # The pooled connection goes back at the default level.
        with engine.connect() as conn:
            assert conn.execute(sa.text("SHOW transaction_isolation")).scalar() == "read committed"
    finally:
        engine.dispose()


def test_serializable_conflict_is_retried_from_a_fresh_read(db: str) -> None:
    """Two rollover units read then write the same row: 40001 becomes a clean retry."""
    engine = create_engine(db)
    factory = SqlUnitOfWorkFactory(engine)
    barrier = threading.Barrier(2)
    tries: list[int] = []

    def step(uow: SqlUnitOfWork) -> None:
        tries.append(1)
        snap = uow.portfolio.read()  # no lock: only SERIALIZABLE protects this read
        if len(tries) <= 2:
            barrier.wait(timeout=10)
        uow.portfolio.save(ChangeSet(create=(position(f"Long_{len(tries)}", 1.0),)), snap.version)

    threads = [
        threading.Thread(
            target=run_transaction,
            args=(factory, step),
            kwargs={"kind": "rollover", "policy": POLICY},
        )
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    with factory.begin(read_only=True) as uow:
        snap = uow.portfolio.read()
    engine.dispose()
    assert snap.version == 3 and len(snap.positions) == 2
    assert len(tries) == 3  # exactly one retry


def test_sqlite_writers_begin_immediate(tmp_path: Any) -> None:
    from pm_adapters.sql.retry import DbSettings

    url = f"sqlite:///{tmp_path / 'w.sqlite3'}"
    engine = create_engine(url, DbSettings(sqlite_busy_timeout_ms=100))
    metadata.create_all(engine)
    factory = SqlUnitOfWorkFactory(engine)
    factory.initialise(CAPITAL)
    try:
        with factory.begin() as first:
            first.portfolio.lock()
            # A second writer cannot even begin: the busy error is a retryable conflict.
            with pytest.raises(StaleVersionError), factory.begin() as second:
                second.portfolio.lock()
            # Readers are not blocked (WAL).
            with factory.begin(read_only=True) as reader:
                assert reader.portfolio.read().version == 1
    finally:
        engine.dispose()
