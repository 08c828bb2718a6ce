"""Cluster-wide broker rate budget on Redis per-second counters (openalgo.md 7).

``<p>rl:orders:<unix s>`` / ``<p>rl:reads:<unix s>``: INCR, expiring after 2 s. The second
comes from Redis TIME inside the script, so instance clocks do not matter.
"""

from __future__ import annotations

from typing import Literal

import redis

from pm_adapters.redis.client import DEFAULT_PREFIX, redis_call
from pm_core.errors import RateBudgetExceeded
from pm_core.ports import Clock

TAKE = """
local t = redis.call('TIME')
local key = ARGV[1] .. t[1]
local n = redis.call('INCR', key)
if n == 1 then
  redis.call('PEXPIRE', key, 2000)
end
return {n, tonumber(t[2])}
"""

KIND_KEY = {"order": "orders", "read": "reads"}


class RedisRateBudget:
    """RateBudget shared by every instance through Redis counters."""

    def __init__(
        self,
        client: redis.Redis,
        clock: Clock,
        *,
        prefix: str = DEFAULT_PREFIX,
        order_rate: float = 8,
        read_rate: float = 40,
        max_wait_ms: float = 2000,
    ) -> None:
        if order_rate < 1 or read_rate < 1:
            raise ValueError("rates must be at least 1 per second")
        self._client = client
        self._clock = clock
        self._prefix = prefix
        self._rates = {"order": order_rate, "read": read_rate}
        self._max_wait_s = max_wait_ms / 1000
        self._take = client.register_script(TAKE)

    def take(self, kind: Literal["order", "read"]) -> None:
        deadline = self._clock.monotonic() + self._max_wait_s
        base = f"{self._prefix}rl:{KIND_KEY[kind]}:"
        while True:
            count, micros = redis_call(lambda: self._take(keys=[], args=[base]))
            if int(count) <= self._rates[kind]:
                return
            # Over budget this second: wait for the next one (a few ms past the boundary).
            wait_s = (1_000_000 - int(micros)) / 1_000_000 + 0.002
            if self._clock.monotonic() + wait_s > deadline:
                raise RateBudgetExceeded(
                    f"no {kind} token within {int(self._max_wait_s * 1000)} ms"
                )
            self._clock.sleep(wait_s)
