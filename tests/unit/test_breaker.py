"""The Redis circuit breaker of service.md 4, driven by a hand-moved monotonic clock."""

from __future__ import annotations

from pm_adapters.clock import ManualClock
from pm_adapters.redis.breaker import CircuitBreaker, Mode


def mode(breaker: CircuitBreaker) -> str:
    return breaker.mode


def state(breaker: CircuitBreaker) -> str:
    return breaker.state


def make(clock: ManualClock) -> tuple[CircuitBreaker, list[tuple[Mode, Mode]]]:
    breaker = CircuitBreaker(clock.monotonic, failures=3, cooldown_s=5, probes=3, probe_s=1)
    changes: list[tuple[Mode, Mode]] = []
    breaker.on_mode_change(lambda old, new: changes.append((old, new)))
    return breaker, changes


def test_opens_after_consecutive_failures_only() -> None:
    clock = ManualClock()
    breaker, changes = make(clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # resets the run of failures
    breaker.record_failure()
    breaker.record_failure()
    assert mode(breaker) == "normal" and breaker.allow()
    breaker.record_failure()
    assert mode(breaker) == "database-only"
    assert not breaker.allow()
    assert changes == [("normal", "database-only")]


def test_half_open_after_cooldown_then_closes_after_good_probes() -> None:
    clock = ManualClock()
    breaker, changes = make(clock)
    for _ in range(3):
        breaker.record_failure()
    clock.advance(4.9)
    assert state(breaker) == "open" and not breaker.probe_due()
    clock.advance(0.1)
    assert state(breaker) == "half_open"
    assert breaker.probe_due()
    assert not breaker.probe_due(), "one probe per probe interval"
    breaker.record_success()
    clock.advance(1)
    assert breaker.probe_due()
    breaker.record_success()
    assert mode(breaker) == "database-only"
    clock.advance(1)
    assert breaker.probe_due()
    breaker.record_success()
    assert mode(breaker) == "normal" and breaker.allow()
    assert changes == [("normal", "database-only"), ("database-only", "normal")]


def test_one_failed_probe_reopens_and_restarts_cooldown() -> None:
    clock = ManualClock()
    breaker, changes = make(clock)
    for _ in range(3):
        breaker.record_failure()
    clock.advance(5)
    assert breaker.probe_due()
    breaker.record_success()
    clock.advance(1)
    assert breaker.probe_due()
    breaker.record_failure()
    assert state(breaker) == "open"
    clock.advance(4)
    assert not breaker.probe_due()
    clock.advance(1)
    assert breaker.probe_due()
    # Successes before the failure do not count towards the three in a row.
    breaker.record_success()
    clock.advance(1)
    breaker.probe_due()
    breaker.record_success()
    assert mode(breaker) == "database-only"
    assert changes == [("normal", "database-only")]


def test_late_success_while_open_does_not_close() -> None:
    clock = ManualClock()
    breaker, _ = make(clock)
    for _ in range(3):
        breaker.record_failure()
    breaker.record_success()
    assert state(breaker) == "open"
