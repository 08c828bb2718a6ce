"""Persistence benchmark: signal transactions per second and the recovery snapshot load.

A "signal transaction" has the T1 shape: claim insert, portfolio lock (snapshot read), save of
a small ChangeSet (mark + counter), finish, commit. SQLite: a file with WAL and
synchronous=FULL. PostgreSQL: a throwaway server from the installed binaries with default
settings (fsync on), 1 and 4 threads. Recovery: 1,000,000 signal_log rows and 10,000 live
positions over synthetic instruments, bulk-loaded with COPY, then the service.md 8 step 6
snapshot is timed (live positions + portfolio, in-flight signals, unresolved intents).

Usage: python benchmarks/persistence.py [--signals 1000000] [--positions 10000] [--tx 2000]
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

import psycopg  # noqa: E402
from tests.kit.postgres import running_server  # noqa: E402

from pm_adapters.sql.retry import RetryPolicy, create_engine, run_transaction  # noqa: E402
from pm_adapters.sql.tables import metadata  # noqa: E402
from pm_adapters.sql.uow import SqlUnitOfWork, SqlUnitOfWorkFactory  # noqa: E402
from pm_core.model import ChangeSet, Decision, Mark, Signal  # noqa: E402
from pm_core.ports import Claimed  # noqa: E402

UTC = dt.UTC
T0 = dt.datetime(2025, 11, 28, 3, 45, tzinfo=UTC)
POLICY = RetryPolicy(attempts=20, base_s=0.001, cap_s=0.02, budget_s=60)


def _signal(n: int) -> Signal:
    return Signal(
        "EXIT",
        ("BANK_NIFTY", "GOLD_MINI")[n % 2],
        "Long_1",
        1000.0 + n % 97,
        900.0,
        1,
        12.5,
        0.7,
        950.0,
        T0 + dt.timedelta(seconds=n),
    )


def signal_tx(factory: SqlUnitOfWorkFactory, n: int, owner: str) -> None:
    """One T1-shaped transaction (retried on conflicts like the service does)."""
    sig = _signal(n)
    fp = f"{owner}{n:060d}"[-64:].rjust(64, "0")

    def work(uow: SqlUnitOfWork) -> None:
        claimed = uow.signals.claim(sig, fp, T0, owner)
        assert isinstance(claimed, Claimed)
        snap = uow.portfolio.lock()
        uow.portfolio.save(
            ChangeSet(
                marks={sig.instrument: Mark(sig.price, sig.atr, sig.timestamp)},
                statistics={"exits_rejected": 1},
            ),
            snap.version,
        )
        uow.signals.finish(claimed.id, Decision(outcome="rejected"), claimed.epoch)

    run_transaction(factory, work, policy=POLICY)


def throughput(factory: SqlUnitOfWorkFactory, total: int, threads: int, tag: str) -> float:
    """Signal transactions per second over ``threads`` threads."""
    per = total // threads
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(per):
                signal_tx(factory, k * per + i, f"{tag}{k}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    for i in range(min(50, per)):  # warm the pool and statement caches
        signal_tx(factory, 10_000_000 + i, f"w{tag}")
    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    started = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return per * threads / elapsed


def commit_latency_ms(url: str, n: int = 300) -> float:
    """Mean latency of a one-row INSERT + COMMIT: the durable-commit floor of this disk."""
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.execute("CREATE TABLE commit_probe (id serial PRIMARY KEY, v int)")
        conn.commit()
        started = time.perf_counter()
        for _ in range(n):
            conn.execute("INSERT INTO commit_probe (v) VALUES (1)")
            conn.commit()
        return (time.perf_counter() - started) / n * 1000


def fresh_factory(url: str) -> SqlUnitOfWorkFactory:
    engine = create_engine(url)
    metadata.create_all(engine)
    factory = SqlUnitOfWorkFactory(engine)
    factory.initialise(100_000_000.0)
    return factory


# --------------------------------------------------------------------------- recovery


def _copy(conn: psycopg.Connection[Any], table: str, columns: list[str], rows: Any) -> None:
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as cp:
        for row in rows:
            cp.write_row(row)


def load_recovery_data(dsn: str, n_signals: int, n_positions: int) -> None:
    """Bulk-load signal_log, live positions (6 per synthetic instrument) and intents."""
    libpq = dsn.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(libpq) as conn:
        in_flight = max(1, n_signals // 10_000)  # 0.01 % still queued or processing

        def signals() -> Any:
            for i in range(1, n_signals + 1):
                ts = T0 + dt.timedelta(seconds=i)
                inst = f"SYN_{i % 2000:04d}"
                status = ("queued" if i % 2 else "processing") if i <= in_flight else "executed"
                payload = json.dumps(
                    {
                        "type": "BASE_ENTRY",
                        "instrument": inst,
                        "position": "Long_1",
                        "price": 1000.5,
                        "stop": 900.25,
                        "lots": 1,
                        "atr": 12.5,
                        "er": 0.7,
                        "supertrend": 950.0,
                        "timestamp": ts.isoformat(),
                        "roc": None,
                        "reason": None,
                    }
                )
                outcome = None if i <= in_flight else '{"outcome":"executed","codes":[]}'
                yield (
                    i,
                    f"{i:064x}",
                    inst,
                    "BASE_ENTRY",
                    "Long_1",
                    ts,
                    ts,
                    payload,
                    status,
                    outcome,
                    "inst-a",
                    1,
                )

        _copy(
            conn,
            "signal_log",
            [
                "id",
                "fingerprint",
                "instrument",
                "signal_type",
                "position_label",
                "signal_ts",
                "received_at",
                "payload",
                "status",
                "outcome",
                "owner_instance_id",
                "claim_epoch",
            ],
            signals(),
        )

        def positions() -> Any:
            for i in range(1, n_positions + 1):
                inst, layer = f"SYN_{(i - 1) // 6:04d}", (i - 1) % 6 + 1
                yield (
                    i,
                    inst,
                    f"Long_{layer}",
                    "open",
                    layer == 1,
                    2,
                    20,
                    10,
                    10,
                    T0,
                    1000.5,
                    900.25,
                    900.25,
                    1000.5,
                    12.5,
                    1000.5,
                    T0,
                    T0,
                )

        _copy(
            conn,
            "portfolio_positions",
            [
                "id",
                "instrument",
                "label",
                "status",
                "is_base_position",
                "lots",
                "quantity",
                "lot_size",
                "point_value",
                "entry_timestamp",
                "entry_price",
                "initial_stop",
                "current_stop",
                "highest_close",
                "atr",
                "basis",
                "created_at",
                "updated_at",
            ],
            positions(),
        )

        def intents() -> Any:
            for i in range(1, n_positions + 1):
                state = "accepted" if i % 100 == 0 else "filled"
                yield (
                    i,
                    f"pm-{i:016x}-1-FUT-1",
                    "signal",
                    n_signals - i,
                    i,
                    f"SYN_{(i - 1) // 6:04d}",
                    str(n_signals - i),
                    "FUT",
                    1,
                    1,
                    "SYNFUT",
                    "MCX",
                    "BUY",
                    "NRML",
                    "MARKET",
                    20,
                    2,
                    1000.5,
                    state,
                    T0,
                    T0,
                )

        _copy(
            conn,
            "order_intents",
            [
                "id",
                "client_order_id",
                "origin",
                "signal_id",
                "position_id",
                "instrument",
                "group_id",
                "leg",
                "seq",
                "attempt",
                "symbol",
                "exchange",
                "action",
                "product",
                "pricetype",
                "quantity",
                "lots",
                "ref_price",
                "state",
                "created_at",
                "updated_at",
            ],
            intents(),
        )
        for table in ("signal_log", "portfolio_positions", "order_intents"):
            sequence = f"pg_get_serial_sequence('{table}', 'id')"
            conn.execute(f"SELECT setval({sequence}, (SELECT max(id) FROM {table}))")
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")


def recovery_snapshot(factory: SqlUnitOfWorkFactory) -> dict[str, int]:
    """service.md 8 step 6 in one REPEATABLE READ read-only unit."""
    with factory.begin(read_only=True) as uow:
        snap = uow.portfolio.read()
        in_flight = uow.signals.in_flight()
        unresolved = uow.intents.unresolved()
    return {
        "positions": len(snap.positions),
        "in_flight": len(in_flight),
        "unresolved": len(unresolved),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=1_000_000)
    parser.add_argument("--positions", type=int, default=10_000)
    parser.add_argument("--tx", type=int, default=2000, help="transactions per throughput run")
    args = parser.parse_args(argv)

    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pm-bench-") as tmp:
        factory = fresh_factory(f"sqlite:///{tmp}/bench.sqlite3")
        result["sqlite_signal_tx_per_s"] = round(throughput(factory, args.tx, 1, "s"), 1)
        factory.close()
        print(f"sqlite (WAL, synchronous=FULL): {result['sqlite_signal_tx_per_s']} signal tx/s")

    with running_server() as server:
        probe = commit_latency_ms(server.create_database("probe"))
        result["pg_commit_ms"] = round(probe, 3)
        print(f"postgresql durable commit (INSERT + COMMIT): {probe:.2f} ms")
        factory = fresh_factory(server.create_database("bench"))
        for threads in (1, 4):
            rate = throughput(factory, args.tx, threads, f"p{threads}_")
            result[f"pg_signal_tx_per_s_{threads}_thread{'s' if threads > 1 else ''}"] = round(
                rate, 1
            )
            print(f"postgresql (fsync on), {threads} thread(s): {rate:.1f} signal tx/s")
        factory.close()

        url = server.create_database("recovery")
        factory = fresh_factory(url)
        started = time.perf_counter()
        load_recovery_data(url, args.signals, args.positions)
        print(
            f"loaded {args.signals} signal_log rows, {args.positions} positions "
            f"in {time.perf_counter() - started:.1f} s"
        )
        recovery_snapshot(factory)  # first touch after the load: warm the catalog cache
        factory.close()
        factory = SqlUnitOfWorkFactory(create_engine(url))
        started = time.perf_counter()
        counts = recovery_snapshot(factory)
        result["recovery_load_s"] = round(time.perf_counter() - started, 3)
        factory.close()
        print(f"recovery snapshot {counts} in {result['recovery_load_s']} s (new connection)")
    result.update(
        load_average_1m=round(os.getloadavg()[0], 2),  # other work on the box skews the figures
        cpus=os.cpu_count(),
        signals=args.signals,
        positions=args.positions,
        tx_per_run=args.tx,
        targets={"pg_signal_tx_per_s": 1000, "recovery_load_s": 2.0},
    )
    return result


if __name__ == "__main__":
    print(json.dumps(main()))
