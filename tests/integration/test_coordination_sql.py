"""Database side of coordination on PostgreSQL and SQLite: history reasons, registry sweep,
retention in fenced batches with its archive, and the Redis lock cleanup with SCAN."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa

from pm_adapters.clock import SystemClock
from pm_adapters.redis.client import as_text, make_client
from pm_adapters.redis.composite import Coordinator, build_coordination
from pm_adapters.redis.lock import RedisSignalLock
from pm_adapters.redis.ratebudget import RedisRateBudget
from pm_adapters.sql.fence import SqlFence
from pm_adapters.sql.lease import SqlLeaderElection
from pm_adapters.sql.registry import SqlInstanceRegistry, new_instance_id
from pm_adapters.sql.retention import RetentionPolicy, run_retention
from pm_adapters.sql.tables import (
    equity_ledger,
    instance_metadata,
    leadership_history,
    order_intents,
    portfolio_positions,
    signal_log,
)
from pm_core.errors import FencedError, RateBudgetExceeded
from pm_core.ports import InstanceInfo, Lease
from pm_core.service.jobs import LeaderScheduler, LeaderTimings, crash_stale_instances
from tests.kit.coordination import TEST_SETTINGS, sql_engine
from tests.kit.redis_server import RedisServer

pytestmark = pytest.mark.integration
UTC = dt.UTC


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'pm.sqlite3'}"
    else:
        url = request.getfixturevalue("pg_url")
    created = sql_engine(url)
    yield created
    created.dispose()


def history(engine: sa.Engine) -> list[tuple[str, int, str | None]]:
    h = leadership_history.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(h.instance_id, h.epoch, h.release_reason).order_by(h.epoch)
        ).all()
    return [(r.instance_id, int(r.epoch), r.release_reason) for r in rows]


def test_every_leadership_change_is_in_the_history(engine: sa.Engine) -> None:
    fence = SqlFence(engine)
    a = SqlLeaderElection(fence, "inst-a", lease_ms=200)
    b = SqlLeaderElection(fence, "inst-b", lease_ms=200)
    first = a.try_acquire()
    assert first is not None
    a.resign(first)
    second = b.try_acquire()
    assert second is not None
    time.sleep(0.3)
    third = a.try_acquire()  # b's lease lapsed
    assert third is not None
    assert b.renew(second) is False  # b learns it was fenced; its row is already closed
    registry = SqlInstanceRegistry(engine, stale_s=0.2)
    registry.register(InstanceInfo("inst-a", "a", "h", None, 1, "t"))
    registry.mark_crashed("inst-a")
    assert history(engine) == [
        ("inst-a", first.epoch, "resigned"),
        ("inst-b", second.epoch, "lease_lost"),
        ("inst-a", third.epoch, "crashed_detected"),
    ]
    h = leadership_history.c
    with engine.connect() as conn:
        durations = conn.execute(sa.select(h.duration_ms, h.released_at, h.acquired_at)).all()
    for duration_ms, released_at, acquired_at in durations:
        assert released_at >= acquired_at and duration_ms >= 0
    assert first.epoch < second.epoch < third.epoch


def test_fenced_transaction_rolls_back_for_a_deposed_leader(engine: sa.Engine) -> None:
    fence = SqlFence(engine)
    old = fence.acquire("inst-a", 100)
    assert old is not None
    time.sleep(0.2)
    new = fence.acquire("inst-b", 5_000)
    assert new is not None and new > old
    with pytest.raises(FencedError), fence.fenced(old) as conn:
        conn.execute(sa.text("UPDATE leader_fence SET holder = 'inst-a' WHERE id = 1"))
    assert fence.state().holder == "inst-b"
    with fence.fenced(new) as conn:
        conn.execute(
            sa.insert(instance_metadata).values(
                instance_id="written-by-leader",
                last_heartbeat=dt.datetime.now(UTC),
                started_at=dt.datetime.now(UTC),
                status="active",
            )
        )
    assert fence.state().epoch == new


def test_stale_instances_are_marked_crashed_once(engine: sa.Engine) -> None:
    registry = SqlInstanceRegistry(engine, stale_s=0.3)
    for name in ("alive", "gone", "stopped"):
        registry.register(InstanceInfo(name, name, "h", None, 1, "t"))
    registry.heartbeat("stopped", "stopped")
    time.sleep(0.4)
    registry.heartbeat("alive")
    assert crash_stale_instances(registry) == ["gone"]
    assert crash_stale_instances(registry) == []
    statuses = {row.instance_id: row.status for row in registry.instances()}
    assert statuses == {"alive": "active", "gone": "crashed", "stopped": "stopped"}
    assert registry.live_instances() == ["alive"]


# ---------------------------------------------------------------------- retention


def add_signal(
    conn: sa.Connection, instrument: str, received_at: dt.datetime, status: str = "executed"
) -> int:
    signal_id = conn.execute(
        sa.insert(signal_log)
        .values(
            fingerprint=uuid.uuid4().hex * 2,
            instrument=instrument,
            signal_type="BASE_ENTRY",
            position_label="Long_1",
            signal_ts=received_at,
            received_at=received_at,
            status=status,
            payload={"note": "x"},
        )
        .returning(signal_log.c.id)
    ).scalar_one()
    conn.execute(
        sa.insert(order_intents).values(
            client_order_id=uuid.uuid4().hex[:20],
            origin="signal",
            signal_id=signal_id,
            instrument=instrument,
            group_id="g",
            leg="FUT",
            seq=1,
            attempt=1,
            symbol="SYM",
            exchange="MCX",
            action="BUY",
            product="NRML",
            pricetype="MARKET",
            quantity=1,
            lots=1,
            ref_price=100.0,
            state="filled",
        )
    )
    return int(signal_id)


def add_position(
    conn: sa.Connection, instrument: str, entry: dt.datetime, status: str, opened_by: int | None
) -> None:
    conn.execute(
        sa.insert(portfolio_positions).values(
            instrument=instrument,
            label=f"Long_{uuid.uuid4().hex[:4]}",
            status=status,
            lots=1,
            quantity=1,
            lot_size=1,
            point_value=10.0,
            entry_timestamp=entry,
            entry_price=100.0,
            initial_stop=90.0,
            current_stop=90.0,
            highest_close=100.0,
            atr=5.0,
            basis=0.0,
            opened_by_signal_id=opened_by,
        )
    )


def ids(engine: sa.Engine) -> set[int]:
    with engine.connect() as conn:
        return {int(i) for i in conn.execute(sa.select(signal_log.c.id)).scalars()}


def test_retention_deletes_old_terminal_signals_in_fenced_batches(
    engine: sa.Engine, tmp_path: Path
) -> None:
    now = dt.datetime.now(UTC)
    old = now - dt.timedelta(days=10)
    older = now - dt.timedelta(days=20)
    with engine.begin() as conn:
        gone = [add_signal(conn, "GOLD_MINI", old) for _ in range(5)]
        recent = add_signal(conn, "GOLD_MINI", now - dt.timedelta(days=2))
        in_flight = add_signal(conn, "GOLD_MINI", old, status="processing")
        linked = add_signal(conn, "BANK_NIFTY", older)
        add_position(conn, "BANK_NIFTY", older, "open", linked)
        # Newer than the oldest live BANK_NIFTY entry: kept for that position's history.
        after_entry = add_signal(conn, "BANK_NIFTY", old)
        closed_link = add_signal(conn, "SILVER", old)
        add_position(conn, "SILVER", older, "closed", closed_link)
        conn.execute(
            sa.insert(equity_ledger).values(
                kind="trading_pnl", amount=5.0, equity_after=105.0, signal_id=gone[0]
            )
        )
        conn.execute(
            sa.insert(leadership_history).values(
                instance_id="ancient",
                epoch=10_000,
                acquired_at=now - dt.timedelta(days=100),
                released_at=now - dt.timedelta(days=99),
                duration_ms=1,
                release_reason="resigned",
            )
        )
        conn.execute(
            sa.insert(instance_metadata).values(
                instance_id="long-dead",
                started_at=now - dt.timedelta(days=9),
                last_heartbeat=now - dt.timedelta(days=8),
                stopped_at=now - dt.timedelta(days=8),
                status="crashed",
            )
        )
    fence = SqlFence(engine)
    epoch = fence.acquire("leader", 60_000)
    assert epoch is not None
    archive = tmp_path / "archive"
    report = run_retention(engine, epoch, RetentionPolicy(batch=2, archive_dir=archive))
    assert report.signals == 6 and report.intents == 6
    assert report.history == 1 and report.instances == 1
    assert report.batches >= 5
    assert ids(engine) == {recent, in_flight, linked, after_entry}
    with engine.connect() as conn:
        ledger = conn.execute(sa.select(sa.func.count()).select_from(equity_ledger)).scalar()
        assert ledger == 1, "equity_ledger is never deleted"
        remaining_intents = conn.execute(
            sa.select(sa.func.count()).select_from(order_intents)
        ).scalar()
        assert remaining_intents == 4
    lines: list[dict[str, Any]] = []
    for path in sorted(archive.glob("*.jsonl.gz")):
        with gzip.open(path, "rt") as handle:
            lines += [json.loads(line) for line in handle]
    archived = {line["row"]["id"] for line in lines if line["table"] == "signal_log"}
    assert archived == set(gone) | {closed_link}
    assert sum(1 for line in lines if line["table"] == "order_intents") == 6
    assert any(line["table"] == "leadership_history" for line in lines)
    # A deposed leader deletes nothing.
    with engine.begin() as conn:
        add_signal(conn, "GOLD_MINI", old)
    fence.release("leader", epoch)
    with pytest.raises(FencedError):
        run_retention(engine, epoch, RetentionPolicy())
    assert len(ids(engine)) == 5


# ---------------------------------------------------------------------- Redis specifics


def test_release_orphans_scans_many_keys(redis_server: RedisServer) -> None:
    client = make_client(redis_server.url)
    prefix = f"o{uuid.uuid4().hex[:6]}:"
    dead = RedisSignalLock(client, "dead-1", prefix=prefix, scan_count=50)
    alive = RedisSignalLock(client, "alive-1", prefix=prefix, scan_count=50)
    for i in range(300):
        assert dead.acquire(f"d{i:063d}", 60_000) is not None
    for i in range(20):
        assert alive.acquire(f"a{i:063d}", 60_000) is not None
    calls: list[str] = []

    def is_live(owner: str) -> bool:
        calls.append(owner)
        return owner == "alive-1"

    assert alive.release_orphans(is_live) == 300
    assert sorted(set(calls)) == ["alive-1", "dead-1"] and len(calls) == 2, "cached verdicts"
    assert len(list(client.scan_iter(match=f"{prefix}signal_lock:*"))) == 20
    value = as_text(client.get(f"{prefix}signal_lock:a{0:063d}"))
    assert value is not None and value.startswith("alive-1|")
    assert len(value.split("|")[1]) == 32, "128-bit token"
    client.close()


def test_redis_rate_budget_is_shared_per_second(redis_server: RedisServer) -> None:
    prefix = f"rb{uuid.uuid4().hex[:6]}:"
    clients = [make_client(redis_server.url) for _ in range(2)]
    budgets = [
        RedisRateBudget(c, SystemClock(), prefix=prefix, order_rate=5, max_wait_ms=0)
        for c in clients
    ]
    # Start right after a second boundary so the burst stays within one counter.
    while (time.time() % 1) > 0.2:
        time.sleep(0.01)
    granted = 0
    for i in range(10):
        try:
            budgets[i % 2].take("order")
            granted += 1
        except RateBudgetExceeded:
            pass
    assert granted == 5, "both instances draw from one cluster-wide counter"
    keys = list(clients[0].scan_iter(match=f"{prefix}rl:orders:*"))
    assert keys and all(0 < clients[0].pttl(k) <= 2000 for k in keys)
    waiting = RedisRateBudget(
        clients[0], SystemClock(), prefix=prefix, order_rate=5, max_wait_ms=1500
    )
    waiting.take("order")  # waits for the next second instead of failing
    for c in clients:
        c.close()


def test_composite_lock_is_degraded_while_redis_is_down(
    pg_url: str, redis_server_factory: Any
) -> None:
    server = redis_server_factory()
    engine = sql_engine(pg_url)
    fence = SqlFence(engine)
    registry = SqlInstanceRegistry(engine, stale_s=1.0)
    coordinator = Coordinator(
        make_client(server.url, 1000), fence, registry, "inst-a", SystemClock(), TEST_SETTINGS
    )
    handle = coordinator.lock.acquire("c" * 64, 5_000)
    assert handle is not None and not handle.degraded and handle.fencing_token is not None
    server.kill()
    results = [coordinator.lock.acquire(f"{i:064d}", 5_000) for i in range(4)]
    assert coordinator.mode == "database-only"
    assert all(r is not None and r.degraded for r in results)
    assert coordinator.lock.acquire(f"{0:064d}", 5_000) is None, "in-process lock still excludes"
    coordinator.lock.release(handle)  # a Redis handle while Redis is down: no error
    engine.dispose()


def test_database_only_build_reports_leadership_in_heartbeats(engine: sa.Engine) -> None:
    settings = attrs.evolve(TEST_SETTINGS, db_heartbeat_s=0.0)
    me = new_instance_id("pm-test")
    assert re.fullmatch(r"pm-test-[0-9a-f]{8}", me)
    ports = build_coordination(engine, None, me, SystemClock(), settings)
    assert ports.mode() == "database-only" and ports.coordinator is None
    ports.registry.register(InstanceInfo(me, "pm-test", "h", 8080, 1, "t"))
    lease = ports.leader.try_acquire()
    assert lease is not None
    ports.registry.heartbeat(me, "active")
    rows = {row.instance_id: row for row in SqlInstanceRegistry(engine).instances()}
    assert rows[me].is_leader and rows[me].leader_epoch == lease.epoch
    ports.leader.resign(lease)
    ports.registry.heartbeat(me, "draining")
    rows = {row.instance_id: row for row in SqlInstanceRegistry(engine).instances()}
    assert not rows[me].is_leader and rows[me].status == "draining"
    handle = ports.lock.acquire("d" * 64, 1000)
    assert handle is not None and handle.degraded


def lease_of(scheduler: LeaderScheduler) -> Lease | None:
    return scheduler.lease


def test_leader_released_notice_wakes_a_follower_before_its_tick(
    pg_url: str, redis_server: RedisServer
) -> None:
    engine = sql_engine(pg_url)
    fence = SqlFence(engine)
    registry = SqlInstanceRegistry(engine, stale_s=5)
    settings = attrs.evolve(
        TEST_SETTINGS,
        prefix=f"n{uuid.uuid4().hex[:6]}:",
        leader_lease_ms=6000,
        leader_renew_ms=2000,
        election_tick_ms=2000,
    )
    clock = SystemClock()
    leader = Coordinator(make_client(redis_server.url, 1000), fence, registry, "a", clock, settings)
    follower = Coordinator(
        make_client(redis_server.url, 1000), fence, registry, "b", clock, settings
    )
    lease = leader.leader.try_acquire()
    assert lease is not None
    scheduler = LeaderScheduler(
        follower.leader,
        clock,
        retention=lambda epoch: None,
        retention_at=dt.time(2, 30),
        tz=UTC,
        timings=LeaderTimings(6000, 2000, 2000),
    )
    listener = follower.listen_released(lambda holder: scheduler.wake())
    scheduler.start()
    try:
        time.sleep(0.5)  # the follower's first round found a leader; it now sleeps 2 s
        assert lease_of(scheduler) is None
        resigned_at = time.monotonic()
        leader.leader.resign(lease)
        while lease_of(scheduler) is None and time.monotonic() - resigned_at < 1.9:
            time.sleep(0.005)
        took = time.monotonic() - resigned_at
        new = lease_of(scheduler)
        assert new is not None and new.epoch > lease.epoch
        assert took < 1.0, f"woken by the notice, not the 2 s tick ({took:.3f} s)"
    finally:
        scheduler.stop()
        listener.stop()
        leader.close()
        follower.close()
        engine.dispose()
