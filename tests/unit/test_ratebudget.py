"""LocalRateBudget: per-second token buckets, instance share, bounded waits."""

from __future__ import annotations

import threading

import pytest

from pm_adapters.ratebudget import LocalRateBudget
from pm_core.errors import ConfigError, RateBudgetExceeded


class FakeTime:
    """A monotonic clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def budget(time: FakeTime, **kwargs: object) -> LocalRateBudget:
    return LocalRateBudget(monotonic=time.monotonic, sleep=time.sleep, **kwargs)  # type: ignore[arg-type]


def test_a_second_of_budget_is_granted_without_waiting() -> None:
    time = FakeTime()
    rate = budget(time, order_rate=8, read_rate=40)
    for _ in range(8):
        rate.take("order")
    for _ in range(40):
        rate.take("read")
    assert time.sleeps == []


def test_past_the_burst_each_token_waits_its_share_of_a_second() -> None:
    time = FakeTime()
    rate = budget(time, order_rate=8, max_wait_ms=2000)
    for _ in range(8):
        rate.take("order")
    rate.take("order")
    assert time.sleeps == [pytest.approx(1 / 8)]
    for _ in range(8):
        rate.take("order")
    # nine extra tokens at 8/s took 9/8 s of waiting in total
    assert sum(time.sleeps) == pytest.approx(9 / 8)


def test_kinds_have_separate_buckets() -> None:
    time = FakeTime()
    rate = budget(time, order_rate=1, read_rate=1, max_wait_ms=0)
    rate.take("order")
    rate.take("read")
    with pytest.raises(RateBudgetExceeded):
        rate.take("order")


def test_budget_is_divided_by_live_instances() -> None:
    time = FakeTime()
    instances = [4]
    rate = budget(time, order_rate=8, max_wait_ms=0, live_instances=lambda: instances[0])
    rate.take("order")
    rate.take("order")
    with pytest.raises(RateBudgetExceeded):
        rate.take("order")
    assert rate.rate("order") == 2
    instances[0] = 1
    time.now += 1
    assert rate.rate("order") == 8
    for _ in range(8):
        rate.take("order")


def test_zero_live_instances_or_a_failing_registry_means_the_whole_budget() -> None:
    time = FakeTime()

    def broken() -> int:
        raise ConnectionError("registry down")

    assert budget(time, order_rate=8, live_instances=lambda: 0).rate("order") == 8
    assert budget(time, order_rate=8, live_instances=broken).rate("order") == 8


def test_a_token_not_due_within_max_wait_raises_without_sleeping_past_it() -> None:
    time = FakeTime()
    rate = budget(time, order_rate=1, max_wait_ms=500)
    rate.take("order")
    with pytest.raises(RateBudgetExceeded, match="order"):
        rate.take("order")
    assert sum(time.sleeps) <= 0.5


def test_rate_budget_exceeded_is_a_timeout() -> None:
    assert issubclass(RateBudgetExceeded, TimeoutError)


def test_bad_settings_are_reported_per_field() -> None:
    with pytest.raises(ConfigError) as caught:
        LocalRateBudget(order_rate=0, read_rate=-1, max_wait_ms=-5)
    fields = [field for field, _ in caught.value.errors]
    assert fields == ["PM_OPENALGO_ORDER_RATE", "PM_OPENALGO_READ_RATE", "PM_RATE_MAX_WAIT_MS"]


def test_threads_never_get_more_than_the_budget_at_once() -> None:
    time = FakeTime()  # frozen: no refill while the threads race
    rate = budget(time, order_rate=20, max_wait_ms=0)
    granted = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            try:
                rate.take("order")
            except RateBudgetExceeded:
                continue
            with lock:
                granted.append(1)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(granted) == 20
