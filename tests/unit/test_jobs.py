"""Leader-only job scheduler on the memory election and a hand-moved clock."""

from __future__ import annotations

import datetime as dt
import time
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pm_adapters.clock import ManualClock, SystemClock
from pm_adapters.memory.coordination import MemoryCoordination
from pm_core.ports import InstanceInfo, Lease
from pm_core.service.jobs import (
    DailyJob,
    IntervalJob,
    LeaderScheduler,
    LeaderTimings,
    clear_orphaned_locks,
    crash_stale_instances,
    next_daily_run,
)

IST = ZoneInfo("Asia/Kolkata")
TIMINGS = LeaderTimings(lease_ms=600, renew_ms=150, tick_ms=50)
UTC = dt.UTC


def ist(hour: int, minute: int, day: int = 5) -> dt.datetime:
    return dt.datetime(2026, 1, day, hour, minute, tzinfo=IST)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, epoch: int) -> None:
        self.calls.append(epoch)


def make(
    clock: ManualClock, store: MemoryCoordination, name: str = "a"
) -> tuple[LeaderScheduler, Recorder, list[tuple[Lease | None, str]]]:
    retention = Recorder()
    events: list[tuple[Lease | None, str]] = []
    scheduler = LeaderScheduler(
        store.leader(name, lease_ms=TIMINGS.lease_ms),
        clock,
        retention=retention,
        retention_at=dt.time(2, 30),
        tz=IST,
        timings=TIMINGS,
        on_leadership=lambda lease, why: events.append((lease, why)),
    )
    return scheduler, retention, events


def current(scheduler: LeaderScheduler) -> Lease | None:
    return scheduler.lease


def test_retention_is_the_first_job() -> None:
    clock = ManualClock(ist(1, 0))
    scheduler, _, _ = make(clock, MemoryCoordination(clock))
    scheduler.add(IntervalJob("sweep", 5, Recorder()))
    assert [job.name for job in scheduler.jobs] == ["retention", "sweep"]
    assert isinstance(scheduler.jobs[0], DailyJob)
    with pytest.raises(ValueError):
        scheduler.add(IntervalJob("sweep", 1, Recorder()))


def test_interval_job_runs_only_while_leader_with_the_epoch() -> None:
    clock = ManualClock(ist(10, 0))
    store = MemoryCoordination(clock)
    store.leader("other", lease_ms=600).try_acquire()  # someone else leads first
    scheduler, _, events = make(clock, store)
    sweep = Recorder()
    scheduler.add(IntervalJob("sweep", 1.0, sweep))
    scheduler.election_step()
    scheduler.jobs_step()
    assert current(scheduler) is None and sweep.calls == []
    clock.advance(0.7)  # the other's lease lapses
    scheduler.election_step()
    lease = current(scheduler)
    assert lease is not None and lease.holder == "a"
    scheduler.jobs_step()
    assert sweep.calls == [lease.epoch], "first run right after election"
    clock.advance(0.5)
    scheduler.jobs_step()
    assert sweep.calls == [lease.epoch]
    clock.advance(0.5)
    scheduler.jobs_step()
    assert sweep.calls == [lease.epoch, lease.epoch]
    assert events == [(lease, "acquired")]


def test_daily_job_runs_once_at_exchange_time() -> None:
    clock = ManualClock(ist(2, 29))
    store = MemoryCoordination(clock)
    scheduler, retention, _ = make(clock, store)
    scheduler.election_step()
    lease = scheduler.lease
    assert lease is not None
    for _ in range(5):  # a minute before 02:30 IST, renewing as a leader does
        clock.advance(12)
        scheduler.jobs_step()
        assert retention.calls == [] or clock.now() >= ist(2, 30)
    assert retention.calls == [lease.epoch]
    clock.advance(3600)
    scheduler.jobs_step()
    assert retention.calls == [lease.epoch], "once per day"


def test_next_daily_run_is_in_the_exchange_zone() -> None:
    assert next_daily_run(ist(2, 29), dt.time(2, 30), IST) == ist(2, 30).astimezone(UTC)
    assert next_daily_run(ist(2, 30), dt.time(2, 30), IST) == ist(2, 30, day=6).astimezone(UTC)
    # 21:00 UTC on the 4th is already 02:30 on the 5th in India.
    assert next_daily_run(
        dt.datetime(2026, 1, 4, 20, 59, tzinfo=UTC), dt.time(2, 30), IST
    ) == dt.datetime(2026, 1, 4, 21, 0, tzinfo=UTC)


def test_lost_renewal_stops_jobs() -> None:
    clock = ManualClock(ist(10, 0))
    store = MemoryCoordination(clock)
    scheduler, _, events = make(clock, store)
    sweep = Recorder()
    scheduler.add(IntervalJob("sweep", 0.1, sweep))
    scheduler.election_step()
    first = scheduler.lease
    assert first is not None
    scheduler.jobs_step()
    assert sweep.calls == [first.epoch]
    # Paused past the lease: another instance takes over, then our renewal is refused.
    clock.advance(0.7)
    usurper = store.leader("b", lease_ms=600).try_acquire()
    assert usurper is not None and usurper.epoch > first.epoch
    scheduler.election_step()
    assert scheduler.lease is None
    assert events[-1] == (None, "lost")
    clock.advance(1)
    scheduler.jobs_step()
    assert sweep.calls == [first.epoch], "no job after leadership was lost"
    assert not scheduler.is_current(first.epoch)


class FlakyElection:
    """The memory election whose renewals raise while ``failing`` (store unreachable)."""

    def __init__(self, store: MemoryCoordination) -> None:
        self.inner = store.leader("a", lease_ms=TIMINGS.lease_ms)
        self.failing = False
        self.resigned: list[Lease] = []

    def try_acquire(self) -> Lease | None:
        return self.inner.try_acquire()

    def renew(self, lease: Lease) -> bool:
        if self.failing:
            raise ConnectionError("store unreachable")
        return self.inner.renew(lease)

    def resign(self, lease: Lease) -> None:
        self.resigned.append(lease)
        self.inner.resign(lease)


def test_steps_down_when_no_renewal_succeeded_for_lease_minus_renew() -> None:
    clock = ManualClock(ist(10, 0))
    store = MemoryCoordination(clock)
    election = FlakyElection(store)
    scheduler = LeaderScheduler(
        election,
        clock,
        retention=Recorder(),
        retention_at=dt.time(2, 30),
        tz=IST,
        timings=TIMINGS,
    )
    scheduler.election_step()
    lease = scheduler.lease
    assert lease is not None
    election.failing = True
    start = clock.monotonic()
    while True:
        step = scheduler.election_step()
        if scheduler.lease is None:
            break
        clock.advance(step)
        assert clock.monotonic() - start < 1.0
    elapsed = clock.monotonic() - start
    # Stepped down after lease - renew (0.45 s), within one tick, before the 0.6 s lease lapsed.
    assert 0.45 - 1e-6 <= elapsed <= 0.5 + 1e-6
    assert election.resigned == [lease]


def test_threads_run_jobs_and_stop_resigns() -> None:
    clock = ManualClock(ist(10, 0))
    store = MemoryCoordination(clock)
    scheduler, _, _ = make(clock, store)
    sweep = Recorder()
    scheduler.add(IntervalJob("sweep", 0.2, sweep))
    scheduler.start()
    deadline = time.monotonic() + 5
    while len(sweep.calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    scheduler.stop()
    assert len(sweep.calls) >= 3
    assert len(set(sweep.calls)) == 1, "one leadership, one epoch"
    assert store.holder is None, "stop resigned the lease"
    assert scheduler.lease is None


def test_failing_job_does_not_stop_the_others() -> None:
    clock = ManualClock(ist(10, 0))
    scheduler, _, _ = make(clock, MemoryCoordination(clock))

    def broken(epoch: int) -> None:
        raise RuntimeError("boom")

    after = Recorder()
    scheduler.add(IntervalJob("broken", 1, broken))
    scheduler.add(IntervalJob("after", 1, after))
    scheduler.election_step()
    scheduler.jobs_step()
    assert len(after.calls) == 1
    assert [name for name, _ in scheduler.job_errors] == ["broken"]


def test_job_failures_kept_are_bounded() -> None:
    clock = ManualClock(ist(10, 0))
    scheduler, _, _ = make(clock, MemoryCoordination(clock))
    runs = iter(range(1_000))

    def broken(epoch: int) -> None:
        raise RuntimeError(f"boom {next(runs)}")

    scheduler.add(IntervalJob("broken", 1, broken))
    scheduler.election_step()
    for _ in range(150):
        scheduler.jobs_step()
        clock.advance(1.0)
        scheduler.election_step()
    assert len(scheduler.job_errors) == 100
    assert str(scheduler.job_errors[-1][1]) == "boom 149"  # the latest are the ones kept


def test_sweep_marks_stale_instances_crashed_and_clears_their_locks() -> None:
    clock = ManualClock(ist(10, 0))
    store = MemoryCoordination(clock)
    registry = store.registry(stale_s=15)
    for name in ("alive", "gone"):
        registry.register(InstanceInfo(name, name, "host", None, 1, "test"))
    held = store.signal_lock("gone").acquire("a" * 64, 60_000)
    kept = store.signal_lock("alive").acquire("b" * 64, 60_000)
    assert held is not None and kept is not None
    clock.advance(10)
    registry.heartbeat("alive")
    assert crash_stale_instances(registry) == []
    clock.advance(6)
    assert crash_stale_instances(registry) == ["gone"]
    assert not registry.is_live("gone") and registry.is_live("alive")
    assert store.instances["gone"].status == "crashed"
    assert clear_orphaned_locks(store.signal_lock("alive"), registry) == 1
    assert store.signal_lock("x").acquire("a" * 64, 1000) is not None
    assert store.signal_lock("x").acquire("b" * 64, 1000) is None
    assert crash_stale_instances(registry) == [], "crashed once only"


def test_wake_runs_the_election_before_the_tick() -> None:
    clock = SystemClock()
    store = MemoryCoordination(clock)
    other = store.leader("other", lease_ms=60_000)
    held = other.try_acquire()
    assert held is not None
    scheduler = LeaderScheduler(
        store.leader("a", lease_ms=6000),
        clock,
        retention=Recorder(),
        retention_at=dt.time(2, 30),
        tz=IST,
        timings=LeaderTimings(lease_ms=6000, renew_ms=2000, tick_ms=2000),
    )
    scheduler.start()
    try:
        time.sleep(0.2)  # first round done: a follower now sleeps for a 2 s tick
        assert current(scheduler) is None
        other.resign(held)
        woken_at = time.monotonic()
        scheduler.wake()
        while current(scheduler) is None and time.monotonic() - woken_at < 1.5:
            time.sleep(0.005)
        assert current(scheduler) is not None
        assert time.monotonic() - woken_at < 0.5, "the notice, not the 2 s tick, elected it"
    finally:
        scheduler.stop()


@given(
    now=st.datetimes(
        min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    at=st.times(),
    zone=st.sampled_from(["Asia/Kolkata", "UTC", "America/New_York", "Europe/London"]),
)
def test_next_daily_run_is_the_next_local_occurrence(
    now: dt.datetime, at: dt.time, zone: str
) -> None:
    tz = ZoneInfo(zone)
    due = next_daily_run(now, at, tz)
    assert due > now
    assert due - now <= dt.timedelta(hours=25), "at most a day (plus a DST hour) away"
    local = due.astimezone(tz)
    if zone in ("Asia/Kolkata", "UTC"):  # no DST: exact wall time, and none missed before
        assert local.time() == at
        assert due - dt.timedelta(days=1) <= now
