"""The composite coordinator (service.md 3, 4): Redis first, the database when Redis fails.

Every Redis call goes through one CircuitBreaker. While it is closed the mode is ``normal``:
L2 locks and the leader key in Redis, heartbeats in Redis plus the database every
PM_DB_HEARTBEAT_S. Once it opens the mode is ``database-only``: the signal lock is an
in-process lock whose handles are ``degraded`` (L3 decides), the election is the fence row
alone and heartbeats go to the database only. Half-open probes (PING, SET/GET/DEL) run from
the callers' own calls, at most one per PM_REDIS_PROBE_MS, so no extra thread is needed.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

import attrs
import redis
import sqlalchemy as sa

from pm_adapters.memory.coordination import MemoryCoordination
from pm_adapters.ratebudget import LocalRateBudget
from pm_adapters.redis.breaker import CircuitBreaker, Mode
from pm_adapters.redis.client import DEFAULT_PREFIX, make_client, redis_call
from pm_adapters.redis.heartbeat import RedisHeartbeats
from pm_adapters.redis.leader import RedisLeaderKey, ReleaseListener
from pm_adapters.redis.lock import RedisSignalLock
from pm_adapters.redis.ratebudget import RedisRateBudget
from pm_adapters.sql.fence import SqlFence
from pm_adapters.sql.lease import SqlLeaderElection
from pm_adapters.sql.registry import SqlInstanceRegistry
from pm_core.errors import CoordinationUnavailable, DatabaseUnavailable
from pm_core.ports import Clock, InstanceInfo, Lease, LockHandle

log = logging.getLogger("pm.coordination")
T = TypeVar("T")


@attrs.frozen
class CoordinationSettings:
    """The PM_* values coordination uses (service.md 13 defaults)."""

    prefix: str = DEFAULT_PREFIX
    redis_timeout_ms: int = 250
    redis_failures: int = 3
    redis_cooldown_s: float = 5.0
    redis_probes: int = 3
    redis_probe_ms: int = 1000
    leader_lease_ms: int = 2700
    leader_renew_ms: int = 900
    election_tick_ms: int = 250
    heartbeat_ms: int = 2000
    db_heartbeat_s: float = 5.0
    instance_stale_s: float = 15.0
    order_rate: float = 8
    read_rate: float = 40
    rate_max_wait_ms: float = 2000

    def __attrs_post_init__(self) -> None:
        if self.leader_lease_ms < 3 * self.leader_renew_ms:
            raise ValueError("PM_LEADER_LEASE_MS must be at least 3 x PM_LEADER_RENEW_MS")


class InProcessSignalLock:
    """The database-only SignalLock: an in-process lock; its handles say ``degraded``."""

    def __init__(self, store: MemoryCoordination, instance_id: str) -> None:
        self._lock = store.signal_lock(instance_id)

    def acquire(self, fingerprint: str, ttl_ms: int) -> LockHandle | None:
        handle = self._lock.acquire(fingerprint, ttl_ms)
        return None if handle is None else attrs.evolve(handle, degraded=True)

    def release(self, handle: LockHandle) -> None:
        self._lock.release(handle)

    def extend(self, handle: LockHandle, ttl_ms: int) -> bool:
        return self._lock.extend(handle, ttl_ms)

    def release_orphans(self, is_live: Callable[[str], bool]) -> int:
        return self._lock.release_orphans(is_live)


class Coordinator:
    """Owns the breaker and the Redis client; hands out the composite ports."""

    def __init__(
        self,
        client: redis.Redis,
        fence: SqlFence,
        sql_registry: SqlInstanceRegistry,
        instance_id: str,
        clock: Clock,
        settings: CoordinationSettings = CoordinationSettings(),
        *,
        local_locks: MemoryCoordination | None = None,
    ) -> None:
        self.client = client
        self.fence = fence
        self.sql_registry = sql_registry
        self.instance_id = instance_id
        self.clock = clock
        self.settings = settings
        self.breaker = CircuitBreaker(
            clock.monotonic,
            failures=settings.redis_failures,
            cooldown_s=settings.redis_cooldown_s,
            probes=settings.redis_probes,
            probe_s=settings.redis_probe_ms / 1000,
        )
        self.breaker.on_mode_change(self._log_mode)
        self.redis_lock = RedisSignalLock(client, instance_id, prefix=settings.prefix)
        self.leader_key = RedisLeaderKey(client, prefix=settings.prefix)
        self.heartbeats = RedisHeartbeats(
            client, prefix=settings.prefix, heartbeat_ms=settings.heartbeat_ms
        )
        store = local_locks or MemoryCoordination(clock)
        self.lock = CompositeSignalLock(self, InProcessSignalLock(store, instance_id))
        self.leader = CompositeLeaderElection(self)
        self.registry = CompositeInstanceRegistry(self)
        self.rate = CompositeRateBudget(self)

    @property
    def mode(self) -> Mode:
        """``normal`` or ``database-only``; probes Redis first if a probe is due."""
        self.maybe_probe()
        return self.breaker.mode

    def on_mode_change(self, listener: Callable[[Mode, Mode], None]) -> None:
        """Call ``listener(old, new)`` on every switch."""
        self.breaker.on_mode_change(listener)

    def listen_released(self, on_released: Callable[[str], None]) -> ReleaseListener:
        """Call ``on_released(holder)`` on each ``leader_released`` notice (e.g. scheduler.wake).

        The listener thread re-subscribes after Redis outages; ``stop()`` it at shutdown.
        """
        return self.leader_key.listen_released(
            on_released, poll_s=self.settings.election_tick_ms / 1000
        )

    def redis(self, operation: Callable[[], T]) -> T:
        """Run one Redis operation through the breaker; CoordinationUnavailable if not allowed."""
        self.maybe_probe()
        if not self.breaker.allow():
            raise CoordinationUnavailable("database-only mode: Redis is not used")
        try:
            result = operation()
        except CoordinationUnavailable:
            self.breaker.record_failure()
            raise
        self.breaker.record_success()
        return result

    def maybe_probe(self) -> None:
        """Run a half-open probe if one is due (PING, SET/GET/DEL)."""
        if not self.breaker.probe_due():
            return
        key = f"{self.settings.prefix}probe:{self.instance_id}"
        value = secrets.token_hex(8)

        def probe() -> bool:
            if not self.client.ping():
                return False
            self.client.set(key, value, px=10_000)
            ok = self.client.get(key) == value.encode()
            self.client.delete(key)
            return ok

        try:
            ok = redis_call(probe)
        except CoordinationUnavailable:
            ok = False
        if ok:
            self.breaker.record_success()
        else:
            self.breaker.record_failure()

    def close(self) -> None:
        """Close the Redis connections (stop any ReleaseListener first)."""
        self.client.close()

    def _log_mode(self, old: Mode, new: Mode) -> None:
        log.warning("coordination mode %s -> %s", old, new)


class CompositeSignalLock:
    """L2 in Redis; a degraded in-process lock while Redis is out."""

    def __init__(self, coordinator: Coordinator, fallback: InProcessSignalLock) -> None:
        self._c = coordinator
        self._fallback = fallback

    def acquire(self, fingerprint: str, ttl_ms: int) -> LockHandle | None:
        try:
            return self._c.redis(lambda: self._c.redis_lock.acquire(fingerprint, ttl_ms))
        except CoordinationUnavailable:
            return self._fallback.acquire(fingerprint, ttl_ms)

    def release(self, handle: LockHandle) -> None:
        if handle.degraded:
            self._fallback.release(handle)
            return
        # Unreleased, the key expires after its TTL; L2 never decides anything.
        with contextlib.suppress(CoordinationUnavailable):
            self._c.redis(lambda: self._c.redis_lock.release(handle))

    def extend(self, handle: LockHandle, ttl_ms: int) -> bool:
        if handle.degraded:
            return self._fallback.extend(handle, ttl_ms)
        try:
            return self._c.redis(lambda: self._c.redis_lock.extend(handle, ttl_ms))
        except CoordinationUnavailable:
            return False

    def release_orphans(self, is_live: Callable[[str], bool]) -> int:
        removed = self._fallback.release_orphans(is_live)
        with contextlib.suppress(CoordinationUnavailable):
            removed += self._c.redis(lambda: self._c.redis_lock.release_orphans(is_live))
        return removed


class CompositeLeaderElection:
    """Redis leader key + fence in normal mode; the fence alone in database-only mode."""

    def __init__(self, coordinator: Coordinator) -> None:
        self._c = coordinator
        s = coordinator.settings
        self._lease_ms = s.leader_lease_ms
        self._tick_ms = s.election_tick_ms
        self._db_only = SqlLeaderElection(
            coordinator.fence, coordinator.instance_id, lease_ms=s.leader_lease_ms
        )
        self._current: Lease | None = None

    def current_lease(self) -> Lease | None:
        """The lease this instance holds as far as it knows (for heartbeats and /ready)."""
        return self._current

    def _set(self, lease: Lease | None) -> Lease | None:
        self._current = lease
        return lease

    def try_acquire(self) -> Lease | None:
        c = self._c
        me = c.instance_id
        if c.mode == "database-only":
            return self._set(self._db_only.try_acquire())
        try:
            holder, ttl_ms = c.redis(c.leader_key.holder_and_ttl)
            if holder is not None and holder != me:
                if not 0 < ttl_ms <= self._tick_ms:
                    return None
                # The key lapses before our next tick: be there when it does, not a tick late.
                c.clock.sleep(ttl_ms / 1000 + 0.002)
                holder, _ = c.redis(c.leader_key.holder_and_ttl)
                if holder is not None and holder != me:
                    return None
            state = c.fence.state()
            if state.live and state.holder != me:
                return None
            if holder is None and not c.redis(lambda: c.leader_key.claim(me, self._lease_ms)):
                return None
        except CoordinationUnavailable:
            # Counted by the breaker; after enough failures the fence alone decides.
            return None
        epoch = c.fence.acquire(me, self._lease_ms, mode="normal")
        if epoch is None:
            with contextlib.suppress(CoordinationUnavailable):
                c.redis(lambda: c.leader_key.release(me))
            return None
        return self._set(Lease(epoch, me))

    def renew(self, lease: Lease) -> bool:
        renewed = self._renew(lease)
        if not renewed and self._current == lease:
            self._current = None
        return renewed

    def _renew(self, lease: Lease) -> bool:
        c = self._c
        if not c.fence.renew(lease.holder, lease.epoch, self._lease_ms):
            with contextlib.suppress(CoordinationUnavailable):
                c.redis(lambda: c.leader_key.release(lease.holder))
            return False
        if c.mode == "database-only":
            return True
        try:
            outcome = c.redis(lambda: c.leader_key.renew(lease.holder, self._lease_ms))
        except CoordinationUnavailable:
            # The fence is renewed, and it is the authority; Redis catches up later.
            return True
        if outcome == "lost":
            with contextlib.suppress(DatabaseUnavailable):
                c.fence.release(lease.holder, lease.epoch, "redis_lost")
            return False
        return True

    def resign(self, lease: Lease) -> None:
        c = self._c
        if self._current == lease:
            self._current = None
        with contextlib.suppress(CoordinationUnavailable):
            c.redis(lambda: c.leader_key.release(lease.holder))
        with contextlib.suppress(DatabaseUnavailable):
            c.fence.release(lease.holder, lease.epoch, "resigned")
        with contextlib.suppress(CoordinationUnavailable):
            c.redis(lambda: c.leader_key.publish_released(lease.holder))


class CompositeInstanceRegistry:
    """Database rows always; Redis heartbeat keys while Redis is up."""

    def __init__(self, coordinator: Coordinator) -> None:
        self._c = coordinator
        self._sql = coordinator.sql_registry
        self._last_db: dict[str, tuple[float, str]] = {}
        self._mutex = threading.Lock()

    def register(self, info: InstanceInfo) -> str:
        instance_id = self._sql.register(info)
        with self._mutex:
            self._last_db[instance_id] = (self._c.clock.monotonic(), "starting")
        with contextlib.suppress(CoordinationUnavailable):
            self._c.redis(lambda: self._c.heartbeats.beat(instance_id, "starting"))
        return instance_id

    def heartbeat(self, instance_id: str, status: str = "active") -> None:
        c = self._c
        with contextlib.suppress(CoordinationUnavailable):
            c.redis(lambda: c.heartbeats.beat(instance_id, status))
        now = c.clock.monotonic()
        with self._mutex:
            last = self._last_db.get(instance_id)
            due = last is None or last[1] != status or now - last[0] >= c.settings.db_heartbeat_s
        if due:
            lease = c.leader.current_lease() if instance_id == c.instance_id else None
            self._sql.heartbeat(
                instance_id,
                status,
                mode=c.breaker.mode,
                is_leader=lease is not None,
                leader_epoch=None if lease is None else lease.epoch,
            )
            with self._mutex:
                self._last_db[instance_id] = (now, status)

    def is_live(self, instance_id: str) -> bool:
        fresh = self._sql.db_fresh(instance_id)
        if fresh is None:
            return False  # unknown, stopped or crashed
        if fresh:
            return True
        try:
            return self._c.redis(lambda: self._c.heartbeats.present(instance_id))
        except CoordinationUnavailable:
            return False

    def mark_crashed(self, instance_id: str) -> None:
        self._sql.mark_crashed(instance_id)
        with contextlib.suppress(CoordinationUnavailable):
            self._c.redis(lambda: self._c.heartbeats.clear(instance_id))

    def stale_instances(self) -> list[str]:
        """Instances with neither a fresh database heartbeat nor a Redis heartbeat key."""
        return [iid for iid in self._sql.stale_instances() if not self.is_live(iid)]

    def live_count(self) -> int:
        """Live instances by the database (the local rate budget's divisor)."""
        return max(1, len(self._sql.live_instances()))


class CompositeRateBudget:
    """Redis counters in normal mode; this instance's share of the budget otherwise."""

    def __init__(self, coordinator: Coordinator) -> None:
        c = coordinator
        s = c.settings
        self._c = c
        self._redis = RedisRateBudget(
            c.client,
            c.clock,
            prefix=s.prefix,
            order_rate=s.order_rate,
            read_rate=s.read_rate,
            max_wait_ms=s.rate_max_wait_ms,
        )
        self._local = LocalRateBudget(
            s.order_rate,
            s.read_rate,
            s.rate_max_wait_ms,
            live_instances=CachedCount(c.registry.live_count, c.clock, ttl_s=s.db_heartbeat_s),
            monotonic=c.clock.monotonic,
            sleep=c.clock.sleep,
        )

    def take(self, kind: Literal["order", "read"]) -> None:
        try:
            self._c.redis(lambda: self._redis.take(kind))
        except CoordinationUnavailable:
            self._local.take(kind)


class CachedCount:
    """A count read at most once per ``ttl_s`` (live instances for the rate share)."""

    def __init__(self, read: Callable[[], int], clock: Clock, *, ttl_s: float) -> None:
        self._read = read
        self._clock = clock
        self._ttl_s = ttl_s
        self._value = 1
        self._at: float | None = None

    def __call__(self) -> int:
        now = self._clock.monotonic()
        if self._at is None or now - self._at >= self._ttl_s:
            with contextlib.suppress(DatabaseUnavailable, CoordinationUnavailable):
                self._value = self._read()
            self._at = now
        return self._value


@attrs.frozen
class CoordinationPorts:
    """What bootstrap needs from coordination, whichever adapters were chosen."""

    lock: CompositeSignalLock | InProcessSignalLock
    leader: CompositeLeaderElection | SqlLeaderElection
    registry: CompositeInstanceRegistry | SqlInstanceRegistry
    rate: CompositeRateBudget | LocalRateBudget
    fence: SqlFence
    mode: Callable[[], Mode]
    coordinator: Coordinator | None = None

    def stale_instances(self) -> Sequence[str]:
        """Instances the leader may mark crashed."""
        return self.registry.stale_instances()

    def close(self) -> None:
        """Release connections (the engine belongs to the caller)."""
        if self.coordinator is not None:
            self.coordinator.close()


def build_coordination(
    engine: sa.Engine,
    redis_url: str | None,
    instance_id: str,
    clock: Clock,
    settings: CoordinationSettings = CoordinationSettings(),
) -> CoordinationPorts:
    """architecture.md 8: Redis composites with PM_REDIS_URL, else database-only adapters."""
    fence = SqlFence(engine)
    sql_registry = SqlInstanceRegistry(engine, stale_s=settings.instance_stale_s)
    if redis_url is None:
        lock = InProcessSignalLock(MemoryCoordination(clock), instance_id)
        leader = SqlLeaderElection(fence, instance_id, lease_ms=settings.leader_lease_ms)
        sql_registry.leadership = leader.current_lease
        rate = LocalRateBudget(
            settings.order_rate,
            settings.read_rate,
            settings.rate_max_wait_ms,
            live_instances=CachedCount(
                lambda: max(1, len(sql_registry.live_instances())),
                clock,
                ttl_s=settings.db_heartbeat_s,
            ),
            monotonic=clock.monotonic,
            sleep=clock.sleep,
        )
        return CoordinationPorts(lock, leader, sql_registry, rate, fence, lambda: "database-only")
    client = make_client(redis_url, settings.redis_timeout_ms)
    coordinator = Coordinator(client, fence, sql_registry, instance_id, clock, settings)
    return CoordinationPorts(
        coordinator.lock,
        coordinator.leader,
        coordinator.registry,
        coordinator.rate,
        fence,
        lambda: coordinator.mode,
        coordinator,
    )
