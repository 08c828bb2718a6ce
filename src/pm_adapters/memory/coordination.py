"""Single-process coordination: signal locks, leader lease and fence, instance registry.

One ``MemoryCoordination`` store stands for the shared Redis + database of a cluster; the
per-instance views (``signal_lock``, ``leader``) share it, so tests can run several
"instances" in one process. Every expiry reads the injected Clock's monotonic time.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
from collections.abc import Callable
from typing import Literal

import attrs

from pm_core.errors import FencedError
from pm_core.ports import Clock, InstanceInfo, Lease, LockHandle

DEAD_STATUSES = frozenset({"stopped", "crashed"})
INSTANCE_STATUSES = frozenset({"starting", "active", "draining", "stopped", "crashed"})
ReleaseReason = Literal["resigned", "lease_lost", "fenced", "redis_lost", "crashed_detected"]


@attrs.define
class InstanceRecord:
    """What the registry keeps per instance (instance_metadata)."""

    info: InstanceInfo
    status: str
    started_at: dt.datetime
    last_heartbeat: float  # monotonic
    stopped_at: dt.datetime | None = None


@attrs.define
class HistoryRow:
    """One leadership_history row."""

    instance_id: str
    epoch: int
    mode: str
    acquired_at: dt.datetime
    released_at: dt.datetime | None = None
    duration_ms: int | None = None
    release_reason: str | None = None


class MemoryCoordination:
    """The shared state of a one-process cluster."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.mutex = threading.RLock()
        self.locks: dict[str, tuple[str, float]] = {}  # fingerprint -> (owner|token, expiry)
        self.lock_fence = 0
        self.epoch = 0
        self.holder: str | None = None
        self.expires_at = 0.0
        self.instances: dict[str, InstanceRecord] = {}
        self.history: list[HistoryRow] = []

    def signal_lock(self, instance_id: str) -> MemorySignalLock:
        """The SignalLock as ``instance_id`` sees it."""
        return MemorySignalLock(self, instance_id)

    def leader(self, instance_id: str, lease_ms: int = 2700) -> MemoryLeaderElection:
        """The LeaderElection of ``instance_id``."""
        return MemoryLeaderElection(self, instance_id, lease_ms)

    def registry(self, stale_s: float = 15.0) -> MemoryInstanceRegistry:
        """The InstanceRegistry."""
        return MemoryInstanceRegistry(self, stale_s)

    def current_epoch(self) -> int | None:
        """The leader epoch while someone holds the lease, else None (the memory UoW's fence)."""
        with self.mutex:
            return self.epoch if self.holder is not None else None

    def check(self, epoch: int) -> None:
        """FencedError unless ``epoch`` is the current leader epoch (FenceRepository)."""
        with self.mutex:
            if self.holder is None or epoch != self.epoch:
                raise FencedError(f"leader epoch {epoch} is not current ({self.epoch})")

    def close_history(self, epoch: int, reason: ReleaseReason) -> None:
        with self.mutex:
            now = self.clock.now()
            for row in self.history:
                if row.epoch == epoch and row.released_at is None:
                    row.released_at = now
                    row.duration_ms = int((now - row.acquired_at).total_seconds() * 1000)
                    row.release_reason = reason


class MemorySignalLock:
    """SignalLock in process memory; never degraded."""

    def __init__(self, store: MemoryCoordination, instance_id: str) -> None:
        self._store = store
        self._instance_id = instance_id

    def acquire(self, fingerprint: str, ttl_ms: int) -> LockHandle | None:
        store = self._store
        with store.mutex:
            now = store.clock.monotonic()
            held = store.locks.get(fingerprint)
            if held is not None and held[1] > now:
                return None
            token = secrets.token_hex(16)
            store.locks[fingerprint] = (f"{self._instance_id}|{token}", now + ttl_ms / 1000)
            store.lock_fence += 1
            return LockHandle(fingerprint, token, self._instance_id, store.lock_fence)

    def _is_mine(self, handle: LockHandle) -> bool:
        held = self._store.locks.get(handle.fingerprint)
        return (
            held is not None
            and held[0] == f"{handle.owner}|{handle.token}"
            and held[1] > self._store.clock.monotonic()
        )

    def release(self, handle: LockHandle) -> None:
        with self._store.mutex:
            if self._is_mine(handle):
                del self._store.locks[handle.fingerprint]

    def extend(self, handle: LockHandle, ttl_ms: int) -> bool:
        with self._store.mutex:
            if not self._is_mine(handle):
                return False
            value = self._store.locks[handle.fingerprint][0]
            self._store.locks[handle.fingerprint] = (
                value,
                self._store.clock.monotonic() + ttl_ms / 1000,
            )
            return True

    def release_orphans(self, is_live: Callable[[str], bool]) -> int:
        store = self._store
        with store.mutex:
            now = store.clock.monotonic()
            candidates = [
                (fp, value) for fp, (value, expiry) in store.locks.items() if expiry > now
            ]
        verdicts: dict[str, bool] = {}
        removed = 0
        for fp, value in candidates:
            owner = value.split("|", 1)[0]
            if owner not in verdicts:
                verdicts[owner] = is_live(owner)
            if verdicts[owner]:
                continue
            with store.mutex:
                if store.locks.get(fp, ("", 0.0))[0] == value:
                    del store.locks[fp]
                    removed += 1
        return removed


class MemoryLeaderElection:
    """The fence rule of service.md 3 on the shared store: one live holder, epochs rise."""

    def __init__(self, store: MemoryCoordination, instance_id: str, lease_ms: int) -> None:
        self._store = store
        self._instance_id = instance_id
        self._lease_s = lease_ms / 1000

    def try_acquire(self) -> Lease | None:
        store = self._store
        with store.mutex:
            now = store.clock.monotonic()
            if store.holder not in (None, self._instance_id) and store.expires_at >= now:
                return None
            for row in store.history:
                if row.released_at is None:
                    store.close_history(row.epoch, "lease_lost")
            store.epoch += 1
            store.holder = self._instance_id
            store.expires_at = now + self._lease_s
            store.history.append(
                HistoryRow(self._instance_id, store.epoch, "memory", store.clock.now())
            )
            return Lease(store.epoch, self._instance_id)

    def renew(self, lease: Lease) -> bool:
        store = self._store
        with store.mutex:
            if store.holder != lease.holder or store.epoch != lease.epoch:
                store.close_history(lease.epoch, "fenced")
                return False
            store.expires_at = store.clock.monotonic() + self._lease_s
            return True

    def resign(self, lease: Lease) -> None:
        store = self._store
        with store.mutex:
            if store.holder == lease.holder and store.epoch == lease.epoch:
                store.holder = None
                store.expires_at = store.clock.monotonic()
                store.close_history(lease.epoch, "resigned")


class MemoryInstanceRegistry:
    """InstanceRegistry on the shared store; liveness by heartbeat age and status."""

    def __init__(self, store: MemoryCoordination, stale_s: float) -> None:
        self._store = store
        self._stale_s = stale_s

    def register(self, info: InstanceInfo) -> str:
        store = self._store
        with store.mutex:
            store.instances[info.instance_id] = InstanceRecord(
                info, "starting", store.clock.now(), store.clock.monotonic()
            )
        return info.instance_id

    def heartbeat(self, instance_id: str, status: str = "active") -> None:
        if status not in INSTANCE_STATUSES:
            raise ValueError(f"unknown instance status {status!r}")
        store = self._store
        with store.mutex:
            record = store.instances.get(instance_id)
            if record is None:
                raise KeyError(f"instance {instance_id!r} is not registered")
            if record.status == "crashed":
                return  # declared dead and taken over: it must restart under a new id
            record.last_heartbeat = store.clock.monotonic()
            record.status = status
            if status in DEAD_STATUSES:
                record.stopped_at = store.clock.now()

    def is_live(self, instance_id: str) -> bool:
        store = self._store
        with store.mutex:
            record = store.instances.get(instance_id)
            if record is None or record.status in DEAD_STATUSES:
                return False
            return store.clock.monotonic() - record.last_heartbeat < self._stale_s

    def mark_crashed(self, instance_id: str) -> None:
        store = self._store
        with store.mutex:
            record = store.instances.get(instance_id)
            if record is None or record.status in DEAD_STATUSES:
                return
            record.status = "crashed"
            record.stopped_at = store.clock.now()
            for row in store.history:
                if row.instance_id == instance_id and row.released_at is None:
                    store.close_history(row.epoch, "crashed_detected")

    def stale_instances(self) -> list[str]:
        """Instances not stopped/crashed whose heartbeat is older than the stale threshold."""
        store = self._store
        with store.mutex:
            now = store.clock.monotonic()
            return [
                iid
                for iid, rec in store.instances.items()
                if rec.status not in DEAD_STATUSES and now - rec.last_heartbeat >= self._stale_s
            ]

    def live_count(self) -> int:
        """How many instances are live now (for the local rate budget share)."""
        with self._store.mutex:
            ids = list(self._store.instances)
        return sum(1 for iid in ids if self.is_live(iid))
