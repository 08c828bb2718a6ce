"""Coordination backends for the contract suites: one shape, four stores.

``memory``        MemoryCoordination on a ManualClock (waits advance the clock);
``redis``         the composite coordinator over a throwaway redis-server and the SQL fence
                  on a throwaway PostgreSQL database (one Coordinator per instance);
``postgresql``    database-only mode: fence lease, SQL registry, in-process signal lock;
``sqlite``        the same database-only adapters on a SQLite file.
Real backends use short leases and thresholds so the suites stay fast.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa

from pm_adapters.clock import ManualClock, SystemClock
from pm_adapters.memory.coordination import MemoryCoordination
from pm_adapters.redis.client import make_client
from pm_adapters.redis.composite import (
    CoordinationSettings,
    Coordinator,
    InProcessSignalLock,
)
from pm_adapters.sql.fence import SqlFence
from pm_adapters.sql.lease import SqlLeaderElection
from pm_adapters.sql.registry import SqlInstanceRegistry
from pm_adapters.sql.retry import create_engine
from pm_adapters.sql.tables import metadata
from pm_core.ports import InstanceRegistry, LeaderElection, SignalLock

BACKENDS = ["memory", "redis", "postgresql", "sqlite"]

LEASE_MS = 1000  # short, with room for a loaded 2-core CI machine
STALE_S = 1.0
TEST_SETTINGS = CoordinationSettings(
    redis_timeout_ms=1000,  # generous: a loaded CI machine must not look like an outage
    leader_lease_ms=LEASE_MS,
    leader_renew_ms=300,
    election_tick_ms=50,
    heartbeat_ms=200,
    db_heartbeat_s=0.2,
    instance_stale_s=STALE_S,
    redis_cooldown_s=0.5,
    redis_probe_ms=100,
)


class Backend:
    """Per-instance views of one shared coordination store."""

    def __init__(
        self,
        name: str,
        *,
        lock: Callable[[str], SignalLock],
        election: Callable[[str], LeaderElection],
        registry: Callable[[], InstanceRegistry],
        check: Callable[[int], None],
        wait: Callable[[float], None],
    ) -> None:
        self.name = name
        self.lease_ms = LEASE_MS
        self.stale_s = STALE_S
        self._lock = lock
        self._election = election
        self._registry = registry
        self.check = check
        self.wait = wait

    def lock(self, instance_id: str) -> SignalLock:
        return self._lock(instance_id)

    def election(self, instance_id: str) -> LeaderElection:
        return self._election(instance_id)

    def registry(self) -> InstanceRegistry:
        return self._registry()


def sql_engine(url: str) -> sa.Engine:
    """An engine on ``url`` with every table created."""
    engine = create_engine(url)
    metadata.create_all(engine)
    return engine


@contextmanager
def open_backend(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Build the named backend; servers are requested only when that backend needs them."""
    if name == "memory":
        manual = ManualClock()
        store = MemoryCoordination(manual)
        yield Backend(
            name,
            lock=store.signal_lock,
            election=lambda iid: store.leader(iid, lease_ms=LEASE_MS),
            registry=lambda: store.registry(stale_s=STALE_S),
            check=store.check,
            wait=manual.advance,
        )
        return
    if name == "sqlite":
        url = f"sqlite:///{tmp_path / 'coordination.sqlite3'}"
    else:
        url = request.getfixturevalue("pg_url")
    engine = sql_engine(url)
    fence = SqlFence(engine)
    sql_registry = SqlInstanceRegistry(engine, stale_s=STALE_S)
    clock = SystemClock()
    try:
        if name in ("postgresql", "sqlite"):
            local = MemoryCoordination(clock)
            yield Backend(
                name,
                lock=lambda iid: InProcessSignalLock(local, iid),
                election=lambda iid: SqlLeaderElection(fence, iid, lease_ms=LEASE_MS),
                registry=lambda: sql_registry,
                check=fence.check,
                wait=time.sleep,
            )
            return
        server: Any = request.getfixturevalue("redis_server")
        client = make_client(server.url, TEST_SETTINGS.redis_timeout_ms)
        settings = attrs.evolve(TEST_SETTINGS, prefix=f"t{uuid.uuid4().hex[:8]}:")
        coordinators: dict[str, Coordinator] = {}

        def coordinator(iid: str) -> Coordinator:
            if iid not in coordinators:
                coordinators[iid] = Coordinator(client, fence, sql_registry, iid, clock, settings)
            return coordinators[iid]

        yield Backend(
            name,
            lock=lambda iid: coordinator(iid).lock,
            election=lambda iid: coordinator(iid).leader,
            registry=lambda: coordinator("registry-view").registry,
            check=fence.check,
            wait=time.sleep,
        )
        client.close()
    finally:
        engine.dispose()
