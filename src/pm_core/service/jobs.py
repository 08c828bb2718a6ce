"""Leader-only job scheduler (service.md 3 and 12).

One thread runs the election: followers try every PM_ELECTION_TICK_MS, the leader renews
every PM_LEADER_RENEW_MS and steps down when renewal is refused, or when no renewal has
succeeded for lease - renew (before the lease can lapse). A second thread runs the due jobs,
one at a time, passing each the lease epoch so its writes are fenced; after leadership is
lost no further job starts. Both threads wait only through ``Clock.sleep``.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

import attrs

from pm_core.ports import Clock, InstanceRegistry, LeaderElection, Lease, SignalLock

log = logging.getLogger("pm.jobs")
_KEPT_JOB_ERRORS = 100

JobFn = Callable[[int], None]
WAKE_SLICE_S = 0.02
StepDownReason = Literal["lost", "renewal_failed", "resigned"]


@attrs.frozen
class IntervalJob:
    """A job run every ``every_s`` seconds while leader (first run right after election)."""

    name: str
    every_s: float
    run: JobFn

    def __attrs_post_init__(self) -> None:
        if not self.every_s > 0:
            raise ValueError(f"job {self.name}: interval must be positive")


@attrs.frozen
class DailyJob:
    """A job run once a day at ``at`` in the exchange time zone ``tz``."""

    name: str
    at: dt.time
    tz: dt.tzinfo
    run: JobFn


Job = IntervalJob | DailyJob


@attrs.frozen
class LeaderTimings:
    """PM_LEADER_LEASE_MS, PM_LEADER_RENEW_MS, PM_ELECTION_TICK_MS (service.md 13)."""

    lease_ms: int = 2700
    renew_ms: int = 900
    tick_ms: int = 250

    def __attrs_post_init__(self) -> None:
        if min(self.lease_ms, self.renew_ms, self.tick_ms) <= 0:
            raise ValueError("lease, renew and tick must be positive")
        if self.lease_ms < 3 * self.renew_ms:
            raise ValueError("the lease must be at least 3 x the renew interval")


def next_daily_run(now: dt.datetime, at: dt.time, tz: dt.tzinfo) -> dt.datetime:
    """The first instant strictly after ``now`` when the local clock in ``tz`` shows ``at``."""
    local = now.astimezone(tz)
    candidate = dt.datetime.combine(local.date(), at, tzinfo=tz)
    if candidate <= local:
        candidate = dt.datetime.combine(local.date() + dt.timedelta(days=1), at, tzinfo=tz)
    return candidate.astimezone(dt.UTC)


@attrs.define
class _Slot:
    job: Job
    due_mono: float | None = None  # interval jobs
    due_at: dt.datetime | None = None  # daily jobs


class LeaderScheduler:
    """Runs leader-only jobs while this instance holds the lease; the first job is retention."""

    def __init__(
        self,
        election: LeaderElection,
        clock: Clock,
        *,
        retention: JobFn,
        retention_at: dt.time,
        tz: dt.tzinfo,
        timings: LeaderTimings = LeaderTimings(),
        on_leadership: Callable[[Lease | None, str], None] | None = None,
    ) -> None:
        self._election = election
        self._clock = clock
        self._timings = timings
        self._on_leadership = on_leadership
        self._slots: list[_Slot] = [_Slot(DailyJob("retention", retention_at, tz, retention))]
        self._mutex = threading.RLock()
        self._lease: Lease | None = None
        self._generation = 0
        self._last_renewal = 0.0
        self._next_renewal = 0.0
        self._stopping = threading.Event()
        self._woken = threading.Event()
        self._threads: list[threading.Thread] = []
        # The latest job failures (they are logged too). Bounded: a job failing every few
        # seconds through a long database outage would otherwise keep every traceback.
        self.job_errors: collections.deque[tuple[str, BaseException]] = collections.deque(
            maxlen=_KEPT_JOB_ERRORS
        )

    # ------------------------------------------------------------------ registration

    def add(self, job: Job) -> None:
        """Register another leader job (after retention)."""
        with self._mutex:
            if any(slot.job.name == job.name for slot in self._slots):
                raise ValueError(f"job {job.name!r} is already registered")
            slot = _Slot(job)
            if self._lease is not None:
                self._schedule(slot)
            self._slots.append(slot)

    @property
    def jobs(self) -> list[Job]:
        """The registered jobs, retention first."""
        with self._mutex:
            return [slot.job for slot in self._slots]

    @property
    def lease(self) -> Lease | None:
        """The lease held now, or None when following."""
        with self._mutex:
            return self._lease

    def is_current(self, epoch: int) -> bool:
        """Does this instance still lead with ``epoch`` (long jobs check between steps)."""
        with self._mutex:
            return self._lease is not None and self._lease.epoch == epoch

    # ------------------------------------------------------------------ election

    def election_step(self) -> float:
        """One election or renewal round; returns how long to sleep before the next."""
        tick_s = self._timings.tick_ms / 1000
        renew_s = self._timings.renew_ms / 1000
        with self._mutex:
            lease = self._lease
        now = self._clock.monotonic()
        if lease is None:
            try:
                acquired = self._election.try_acquire()
            except Exception:  # any store failure is a lost round, not a crash
                log.exception("leader election round failed")
                return tick_s
            if acquired is None:
                return tick_s
            with self._mutex:
                self._lease = acquired
                self._generation += 1
                self._last_renewal = now
                self._next_renewal = now + renew_s
                for slot in self._slots:
                    self._schedule(slot)
            log.info("became leader with epoch %d", acquired.epoch)
            self._notify(acquired, "acquired")
            return min(tick_s, renew_s)
        if now < self._next_renewal:
            return min(tick_s, self._next_renewal - now)
        try:
            renewed = self._election.renew(lease)
        except Exception:  # a failed round; only the deadline below decides
            log.exception("lease renewal failed")
            renewed = None
        if renewed:
            with self._mutex:
                self._last_renewal = now
                self._next_renewal = now + renew_s
            return min(tick_s, renew_s)
        if renewed is False:
            self._step_down(lease, "lost")
            return tick_s
        grace_s = (self._timings.lease_ms - self._timings.renew_ms) / 1000
        if now - self._last_renewal >= grace_s:
            # Step down before the lease lapses on the store's clock; try to say so.
            self._step_down(lease, "renewal_failed")
            try:
                self._election.resign(lease)
            except Exception:
                log.exception("resign after failed renewals failed")
        return tick_s

    def _step_down(self, lease: Lease, reason: StepDownReason) -> None:
        with self._mutex:
            if self._lease != lease:
                return
            self._lease = None
            self._generation += 1
        log.warning("leadership with epoch %d ended: %s", lease.epoch, reason)
        self._notify(None, reason)

    def _notify(self, lease: Lease | None, reason: str) -> None:
        if self._on_leadership is not None:
            self._on_leadership(lease, reason)

    def _schedule(self, slot: _Slot) -> None:
        job = slot.job
        if isinstance(job, IntervalJob):
            slot.due_mono = self._clock.monotonic()
        else:
            slot.due_at = next_daily_run(self._clock.now(), job.at, job.tz)

    # ------------------------------------------------------------------ jobs

    def jobs_step(self) -> float:
        """Run every job that is due (while still leader); returns how long to sleep."""
        tick_s = self._timings.tick_ms / 1000
        with self._mutex:
            if self._lease is None:
                return tick_s
            generation = self._generation
            epoch = self._lease.epoch
            slots = list(self._slots)
        for slot in slots:
            with self._mutex:
                if self._generation != generation:
                    return tick_s  # leadership changed: start nothing more
                due = self._is_due(slot)
            if not due:
                continue
            try:
                slot.job.run(epoch)
            except Exception as exc:  # one job's failure must not stop the others
                log.exception("leader job %s failed", slot.job.name)
                self.job_errors.append((slot.job.name, exc))
            with self._mutex:
                self._reschedule(slot)
        return tick_s

    def _is_due(self, slot: _Slot) -> bool:
        if isinstance(slot.job, IntervalJob):
            return slot.due_mono is not None and self._clock.monotonic() >= slot.due_mono
        return slot.due_at is not None and self._clock.now() >= slot.due_at

    def _reschedule(self, slot: _Slot) -> None:
        job = slot.job
        if isinstance(job, IntervalJob):
            slot.due_mono = self._clock.monotonic() + job.every_s
        else:
            slot.due_at = next_daily_run(self._clock.now(), job.at, job.tz)

    # ------------------------------------------------------------------ threads

    def start(self) -> None:
        """Start the election and job threads (daemon threads; they never stop the process)."""
        if self._threads:
            return
        self._stopping.clear()
        for name, step in (("pm-election", self.election_step), ("pm-leader-jobs", self.jobs_step)):
            thread = threading.Thread(target=self._loop, args=(step,), name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def wake(self) -> None:
        """Run the next election round now (a ``leader_released`` notice arrived)."""
        self._woken.set()

    def _loop(self, step: Callable[[], float]) -> None:
        wakeable = step == self.election_step
        while not self._stopping.is_set():
            try:
                delay = step()
            except Exception:  # a background thread never dies
                log.exception("scheduler step failed")
                delay = self._timings.tick_ms / 1000
            if self._stopping.is_set():
                return
            # Sleep in short slices so a notice or stop is seen within WAKE_SLICE_S.
            until = self._clock.monotonic() + max(delay, 0.001)
            while not self._stopping.is_set() and not (wakeable and self._woken.is_set()):
                left = until - self._clock.monotonic()
                if left <= 0:
                    break
                self._clock.sleep(min(left, WAKE_SLICE_S))
            if wakeable:
                self._woken.clear()

    def stop(self, *, resign: bool = True, timeout_s: float = 10.0) -> None:
        """Stop both threads; then resign if leading (followers take over at once)."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=timeout_s)
        self._threads = []
        with self._mutex:
            lease = self._lease
        if lease is not None:
            self._step_down(lease, "resigned")
            if resign:
                try:
                    self._election.resign(lease)
                except Exception:
                    log.exception("resign at stop failed")


# ---------------------------------------------------------------------- instance sweep jobs


class StaleInstanceRegistry(Protocol):
    """An InstanceRegistry that can also list instances whose heartbeats stopped."""

    def stale_instances(self) -> Sequence[str]:
        """Instances with no live heartbeat sign left that are not stopped/crashed yet."""
        ...

    def mark_crashed(self, instance_id: str) -> None:
        """Declare the instance dead."""
        ...


def crash_stale_instances(registry: StaleInstanceRegistry) -> list[str]:
    """Mark every instance without a live heartbeat as crashed (leader sweep, service.md 3)."""
    crashed = list(registry.stale_instances())
    for instance_id in crashed:
        registry.mark_crashed(instance_id)
        log.warning("instance %s declared crashed (no heartbeat)", instance_id)
    return crashed


def clear_orphaned_locks(lock: SignalLock, registry: InstanceRegistry) -> int:
    """Remove the signal locks of instances that are no longer live (PM_LOCK_CLEANUP_S job)."""
    return lock.release_orphans(registry.is_live)
