"""The Redis leader key ``<p>leader`` (service.md 3).

This is the fast half of the election; the database fence (pm_adapters.sql.fence) is the
authority. The composite LeaderElection (pm_adapters.redis.composite) combines the two.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, Literal, cast

import redis

from pm_adapters.redis.client import DEFAULT_PREFIX, as_text, redis_call
from pm_adapters.redis.lock import COMPARE_AND_DELETE

# Renewal: ours -> push expiry; missing (Redis restarted empty) -> re-create; other -> lost.
RENEW_OR_RECREATE = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not current then
  if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return 2
  end
end
return 0
"""

RenewOutcome = Literal["renewed", "recreated", "lost"]
RELEASED_NOTICE = "leader_released"


class RedisLeaderKey:
    """SET NX PX to claim, compare-and-expire to renew, compare-and-delete to resign."""

    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._prefix = prefix
        self.key = f"{prefix}leader"
        self.channel = f"{prefix}{RELEASED_NOTICE}"
        self._renew = client.register_script(RENEW_OR_RECREATE)
        self._delete = client.register_script(COMPARE_AND_DELETE)

    def holder(self) -> str | None:
        """The id in the leader key, or None when it is absent."""
        return as_text(redis_call(lambda: self._client.get(self.key)))

    def holder_and_ttl(self) -> tuple[str | None, int]:
        """The id in the leader key and its remaining milliseconds, in one round trip."""

        def read() -> tuple[str | None, int]:
            pipe = self._client.pipeline(transaction=False)
            pipe.get(self.key)
            pipe.pttl(self.key)
            value, ttl = pipe.execute()
            return as_text(value), int(ttl)

        return redis_call(read)

    def claim(self, holder: str, lease_ms: int) -> bool:
        """SET NX PX: True when the key is now ours."""
        return bool(redis_call(lambda: self._client.set(self.key, holder, nx=True, px=lease_ms)))

    def renew(self, holder: str, lease_ms: int) -> RenewOutcome:
        """Compare-and-expire, re-creating a missing key; ``lost`` if another id holds it."""
        result = int(redis_call(lambda: self._renew(keys=[self.key], args=[holder, lease_ms])))
        return {1: "renewed", 2: "recreated"}.get(result, "lost")  # type: ignore[return-value]

    def release(self, holder: str) -> bool:
        """Compare-and-delete; True when our key was removed."""
        return bool(redis_call(lambda: self._delete(keys=[self.key], args=[holder])))

    def publish_released(self, holder: str) -> None:
        """Tell followers the leadership is free now (they try at once, not at the next tick)."""
        redis_call(lambda: self._client.publish(self.channel, holder))

    def listen_released(
        self, on_released: Callable[[str], None], *, poll_s: float = 0.25
    ) -> ReleaseListener:
        """Start a daemon thread calling ``on_released(holder)`` for every notice."""
        listener = ReleaseListener(self._client, self.channel, on_released, poll_s=poll_s)
        listener.start()
        return listener


class ReleaseListener:
    """Subscribes to ``leader_released``; survives Redis restarts by re-subscribing."""

    def __init__(
        self,
        client: redis.Redis,
        channel: str,
        on_released: Callable[[str], None],
        *,
        poll_s: float,
    ) -> None:
        self._client = client
        self._channel = channel
        self._on_released = on_released
        self._poll_s = poll_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pm-leader-notices", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=2 * self._poll_s + 1)

    def _run(self) -> None:
        while not self._stopped.is_set():
            # cast: pubsub() is untyped in some redis-py releases and typed in others
            pubsub = cast(Any, self._client).pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self._channel)
                while not self._stopped.is_set():
                    message = pubsub.get_message(timeout=self._poll_s)
                    if message and message.get("type") == "message":
                        self._on_released(as_text(message.get("data")) or "")
            except (redis.RedisError, OSError):
                # Redis is down: the election tick still runs; try again after a pause.
                self._stopped.wait(self._poll_s)
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    pubsub.close()
