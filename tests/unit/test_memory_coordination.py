"""Memory coordination details the contract suites do not cover: the fence epoch the memory
unit of work reads, and the leadership history rows."""

from __future__ import annotations

from pm_adapters.clock import ManualClock
from pm_adapters.memory.coordination import MemoryCoordination
from pm_core.ports import InstanceInfo


def test_current_epoch_follows_leadership_and_history_records_reasons() -> None:
    clock = ManualClock()
    store = MemoryCoordination(clock)
    a, b = store.leader("a", lease_ms=600), store.leader("b", lease_ms=600)
    assert store.current_epoch() is None
    first = a.try_acquire()
    assert first is not None and store.current_epoch() == first.epoch
    a.resign(first)
    assert store.current_epoch() is None
    second = b.try_acquire()
    assert second is not None
    clock.advance(0.7)
    third = a.try_acquire()
    assert third is not None and store.current_epoch() == third.epoch
    assert b.renew(second) is False
    registry = store.registry(stale_s=15)
    registry.register(InstanceInfo("a", "a", "h", None, 1, "t"))
    registry.mark_crashed("a")
    reasons = [(row.instance_id, row.epoch, row.release_reason) for row in store.history]
    assert reasons == [
        ("a", first.epoch, "resigned"),
        ("b", second.epoch, "lease_lost"),
        ("a", third.epoch, "crashed_detected"),
    ]
    assert all(row.duration_ms is not None and row.duration_ms >= 0 for row in store.history)
