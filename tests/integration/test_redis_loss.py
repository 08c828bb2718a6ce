"""Redis killed and restarted under a stream of lock operations and renewals (service.md 4).

Two in-process instances, each a Coordinator over a private redis-server and one PostgreSQL
fence, each running the leader scheduler with a fenced-write job and a lock stream.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import time
import uuid
from collections.abc import Callable

import attrs
import pytest

from pm_adapters.clock import SystemClock
from pm_adapters.redis.breaker import Mode
from pm_adapters.redis.client import as_text, make_client
from pm_adapters.redis.composite import Coordinator
from pm_adapters.sql.fence import SqlFence
from pm_adapters.sql.registry import SqlInstanceRegistry
from pm_core.errors import FencedError
from pm_core.ports import InstanceInfo, Lease
from pm_core.service.jobs import IntervalJob, LeaderScheduler, LeaderTimings
from tests.kit.coordination import TEST_SETTINGS, sql_engine
from tests.kit.redis_server import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@attrs.define
class Instance:
    name: str
    coordinator: Coordinator
    scheduler: LeaderScheduler
    modes: list[tuple[float, Mode]] = attrs.Factory(list)
    degraded: list[tuple[float, bool]] = attrs.Factory(list)
    lock_errors: list[BaseException] = attrs.Factory(list)


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_redis_loss_switches_to_database_only_and_back_without_two_leaders(
    pg_url: str, redis_server_factory: Callable[[], RedisServer]
) -> None:
    server = redis_server_factory()
    engine = sql_engine(pg_url)
    fence = SqlFence(engine)
    registry = SqlInstanceRegistry(engine, stale_s=TEST_SETTINGS.instance_stale_s)
    clock = SystemClock()
    settings = attrs.evolve(TEST_SETTINGS, prefix=f"r{uuid.uuid4().hex[:6]}:")
    timings = LeaderTimings(
        settings.leader_lease_ms, settings.leader_renew_ms, settings.election_tick_ms
    )
    writes: list[tuple[float, int, str]] = []  # committed fenced writes, in commit order
    writes_lock = threading.Lock()
    leadership: list[tuple[float, str, Lease | None]] = []
    stop = threading.Event()
    instances: list[Instance] = []
    threads: list[threading.Thread] = []

    def make(name: str) -> Instance:
        client = make_client(server.url, settings.redis_timeout_ms)
        coordinator = Coordinator(client, fence, registry, name, clock, settings)
        coordinator.registry.register(InstanceInfo(name, name, "host", None, 1, "test"))

        def job(epoch: int) -> None:
            try:
                with fence.fenced(epoch), writes_lock:
                    writes.append((time.monotonic(), epoch, name))
            except FencedError:
                pass

        scheduler = LeaderScheduler(
            coordinator.leader,
            clock,
            retention=lambda epoch: None,
            retention_at=dt.time(2, 30),
            tz=dt.UTC,
            timings=timings,
            on_leadership=lambda lease, why: leadership.append((time.monotonic(), name, lease)),
        )
        scheduler.add(IntervalJob("fenced_write", 0.02, job))
        instance = Instance(name, coordinator, scheduler)
        coordinator.on_mode_change(lambda old, new: instance.modes.append((time.monotonic(), new)))
        return instance

    def lock_stream(instance: Instance) -> None:
        lock = instance.coordinator.lock
        while not stop.is_set():
            try:
                handle = lock.acquire(secrets.token_hex(32), 2_000)
                if handle is not None:
                    instance.degraded.append((time.monotonic(), handle.degraded))
                    lock.extend(handle, 2_000)
                    lock.release(handle)
                instance.coordinator.registry.heartbeat(instance.name, "active")
            except Exception as exc:  # the stream must never see an error
                instance.lock_errors.append(exc)
            time.sleep(0.005)

    try:
        for name in ("inst-a", "inst-b"):
            instance = make(name)
            instances.append(instance)
            instance.scheduler.start()
            thread = threading.Thread(target=lock_stream, args=(instance,), daemon=True)
            threads.append(thread)
            thread.start()
        assert wait_until(lambda: any(i.scheduler.lease for i in instances), 5)
        leader = next(i for i in instances if i.scheduler.lease)
        first_lease = leader.scheduler.lease
        assert first_lease is not None
        assert all(i.coordinator.mode == "normal" for i in instances)
        time.sleep(0.3)

        killed_at = time.monotonic()
        server.kill()
        assert wait_until(lambda: all(i.modes for i in instances), 3)
        for instance in instances:
            switched_at, mode = instance.modes[0]
            assert mode == "database-only"
            # The benchmark target is 1 s; a loaded CI machine gets slack here.
            assert switched_at - killed_at < 2.0, "database-only at once"
        assert wait_until(
            lambda: all(any(d for t, d in i.degraded if t > killed_at + 1) for i in instances), 3
        ), "L2 skipped: degraded handles while Redis is down"
        time.sleep(1.0)  # renewals and elections by the fence alone, probes failing

        restarted_at = time.monotonic()
        server.start()  # empty, same port
        assert wait_until(
            lambda: all(i.modes and i.modes[-1][1] == "normal" for i in instances), 5
        ), "normal again after the probes"
        for instance in instances:
            assert instance.modes[-1][0] > restarted_at
        assert wait_until(
            lambda: any(
                not d for t, d in instances[0].degraded if t > instances[0].modes[-1][0] + 0.1
            ),
            3,
        ), "L2 resumed"
        probe = make_client(server.url, 1000)
        holder = leader.scheduler.lease
        assert wait_until(
            lambda: (
                (as_text(probe.get(f"{settings.prefix}leader")) or "")
                == (holder.holder if holder else "")
            ),
            3,
        ), "the fence holder re-created the leader key"
        probe.close()
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
        for instance in instances:
            instance.scheduler.stop()

    for instance in instances:
        assert instance.lock_errors == []
    # Never two leaders: committed fenced writes never go back to an older epoch.
    epochs = [epoch for _, epoch, _ in writes]
    assert epochs == sorted(epochs), "a deposed leader wrote after a newer one"
    assert len(writes) > 50
    # The leader kept its fence through the outage (service.md 15 row 11).
    assert leader.scheduler.lease is None  # stopped at the end
    acquired = [(name, lease.epoch) for _, name, lease in leadership if lease is not None]
    assert acquired == [(leader.name, first_lease.epoch)], f"leadership changed: {leadership}"
    engine.dispose()
