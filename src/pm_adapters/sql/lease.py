"""Database-only leader election: the fence's conditional UPDATE alone is the election."""

from __future__ import annotations

import contextlib

from pm_adapters.sql.fence import SqlFence
from pm_core.errors import DatabaseUnavailable
from pm_core.ports import Lease


class SqlLeaderElection:
    """LeaderElection on leader_fence (service.md 3, 4): expiry judged by the database clock."""

    def __init__(
        self,
        fence: SqlFence,
        instance_id: str,
        *,
        lease_ms: int = 2700,
        mode: str = "database-only",
    ) -> None:
        if lease_ms <= 0:
            raise ValueError("PM_LEADER_LEASE_MS must be positive")
        self.fence = fence
        self.instance_id = instance_id
        self.lease_ms = lease_ms
        self.mode = mode
        self._current: Lease | None = None

    def current_lease(self) -> Lease | None:
        """The lease this election last won and has not lost (registry heartbeats show it)."""
        return self._current

    def try_acquire(self) -> Lease | None:
        state = self.fence.state()
        if state.live and state.holder != self.instance_id:
            return None
        epoch = self.fence.acquire(self.instance_id, self.lease_ms, mode=self.mode)
        if epoch is None:
            return None
        self._current = Lease(epoch, self.instance_id)
        return self._current

    def renew(self, lease: Lease) -> bool:
        # A database failure is not a lost lease: the caller retries until lease - renew.
        renewed = self.fence.renew(lease.holder, lease.epoch, self.lease_ms)
        if not renewed and self._current == lease:
            self._current = None
        return renewed

    def resign(self, lease: Lease) -> None:
        if self._current == lease:
            self._current = None
        # If the database is down the lease simply lapses on the database clock.
        with contextlib.suppress(DatabaseUnavailable):
            self.fence.release(lease.holder, lease.epoch, "resigned")
