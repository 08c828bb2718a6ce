"""LocalRateBudget: the broker rate budget without Redis (openalgo.md 7).

In database-only mode each instance gets budget / live instances, so the cluster together
stays under OpenAlgo's per-IP limits. Each kind (``order``, ``read``) is a token bucket
holding at most one second of budget and refilling continuously.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Literal

from pm_core.errors import ConfigError, RateBudgetExceeded

Kind = Literal["order", "read"]


class _Bucket:
    def __init__(self, now: float) -> None:
        self.tokens: float | None = None  # filled to capacity on first use
        self.stamp = now


class LocalRateBudget:
    """pm_core.ports.RateBudget for one process; waits through the injected sleep."""

    def __init__(
        self,
        order_rate: float = 8,
        read_rate: float = 40,
        max_wait_ms: float = 2000,
        *,
        live_instances: Callable[[], int] = lambda: 1,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        errors = [
            (name, "must be a positive number")
            for name, value in (
                ("PM_OPENALGO_ORDER_RATE", order_rate),
                ("PM_OPENALGO_READ_RATE", read_rate),
            )
            if not (value > 0 and math.isfinite(value))
        ]
        if not max_wait_ms >= 0:
            errors.append(("PM_RATE_MAX_WAIT_MS", "must be zero or positive"))
        if errors:
            raise ConfigError(errors)
        self._rates: dict[Kind, float] = {"order": float(order_rate), "read": float(read_rate)}
        self._max_wait_s = max_wait_ms / 1000
        self._live_instances = live_instances
        self._monotonic = monotonic
        self._sleep = sleep
        self._lock = threading.Lock()
        start = monotonic()
        self._buckets: dict[Kind, _Bucket] = {"order": _Bucket(start), "read": _Bucket(start)}

    def rate(self, kind: Kind) -> float:
        """This instance's share of the budget per second."""
        try:
            instances = max(1, int(self._live_instances()))
        except Exception:
            # The registry being unreachable must not stop trading: assume we are alone.
            instances = 1
        return self._rates[kind] / instances

    def take(self, kind: Kind) -> None:
        """Wait for a token; RateBudgetExceeded if none comes within the max wait."""
        if kind not in self._buckets:
            raise ValueError(f"unknown rate kind {kind!r}")
        started = self._monotonic()
        while True:
            with self._lock:
                wait = self._try_take(kind)
            if wait <= 0:
                return
            waited = self._monotonic() - started
            if waited + wait > self._max_wait_s + 1e-9:
                raise RateBudgetExceeded(
                    f"no {kind} token within {self._max_wait_s * 1000:.0f} ms "
                    f"({self.rate(kind):g}/s for this instance)"
                )
            self._sleep(wait)

    def _try_take(self, kind: Kind) -> float:
        """Take a token now (returns 0) or say how long until one is due."""
        rate = self.rate(kind)
        capacity = max(1.0, rate)
        bucket = self._buckets[kind]
        now = self._monotonic()
        if bucket.tokens is None:
            bucket.tokens = capacity
        else:
            bucket.tokens = min(capacity, bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / rate
