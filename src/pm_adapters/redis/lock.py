"""L2 signal locks in Redis (service.md 2.2 step 5, 3 lock cleanup).

Key ``<p>signal_lock:<fingerprint>``, value ``<instance_id>|<128-bit token hex>``, set with
NX PX; each acquisition takes a fencing token from ``INCR <p>signal_fence`` (diagnostic,
stored as signal_log.redis_token). Release and extend compare the value first (Lua), so a
lock that expired and was taken by someone else is never touched.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from functools import partial

import redis

from pm_adapters.redis.client import DEFAULT_PREFIX, as_text, redis_call
from pm_core.ports import LockHandle

COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

COMPARE_AND_EXPIRE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# SET NX PX and, if it won, the fencing token: one round trip (service.md 2.2 step 5).
SET_AND_FENCE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return false
"""


def lock_value(owner: str, token: str) -> str:
    """The stored value: owner id and token, so cleanup can tell whose lock it is."""
    return f"{owner}|{token}"


class RedisSignalLock:
    """SignalLock over one Redis; raises CoordinationUnavailable when Redis fails."""

    def __init__(
        self,
        client: redis.Redis,
        instance_id: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        scan_count: int = 500,
    ) -> None:
        if "|" in instance_id:
            raise ValueError("instance_id must not contain '|'")
        self._client = client
        self._instance_id = instance_id
        self._prefix = prefix
        self._scan_count = scan_count
        self._delete = client.register_script(COMPARE_AND_DELETE)
        self._expire = client.register_script(COMPARE_AND_EXPIRE)
        self._acquire = client.register_script(SET_AND_FENCE)

    def key(self, fingerprint: str) -> str:
        return f"{self._prefix}signal_lock:{fingerprint}"

    def acquire(self, fingerprint: str, ttl_ms: int) -> LockHandle | None:
        token = secrets.token_hex(16)
        value = lock_value(self._instance_id, token)
        key = self.key(fingerprint)
        fence_key = f"{self._prefix}signal_fence"
        fencing = redis_call(lambda: self._acquire(keys=[key, fence_key], args=[value, ttl_ms]))
        if fencing is None:
            return None
        return LockHandle(
            fingerprint=fingerprint,
            token=token,
            owner=self._instance_id,
            fencing_token=int(fencing),
        )

    def release(self, handle: LockHandle) -> None:
        value = lock_value(handle.owner, handle.token)
        key = self.key(handle.fingerprint)
        redis_call(lambda: self._delete(keys=[key], args=[value]))

    def extend(self, handle: LockHandle, ttl_ms: int) -> bool:
        value = lock_value(handle.owner, handle.token)
        key = self.key(handle.fingerprint)
        return bool(redis_call(lambda: self._expire(keys=[key], args=[value, ttl_ms])))

    def holder(self, fingerprint: str) -> str | None:
        """The owner id of the current lock on ``fingerprint`` (diagnostics, tests)."""
        value = as_text(redis_call(lambda: self._client.get(self.key(fingerprint))))
        return None if value is None else value.split("|", 1)[0]

    def release_orphans(self, is_live: Callable[[str], bool]) -> int:
        # SCAN, never KEYS: KEYS blocks Redis for every other instance while it walks.
        pattern = f"{self._prefix}signal_lock:*"
        verdicts: dict[str, bool] = {}
        removed = 0
        cursor: int = 0
        while True:
            cursor, keys = redis_call(partial(self._scan_page, cursor, pattern))
            if keys:
                values: list[bytes | str | None] = redis_call(partial(self._client.mget, keys))
                for key, raw in zip(keys, values, strict=True):
                    value = as_text(raw)
                    if value is None:
                        continue
                    owner = value.split("|", 1)[0]
                    if owner not in verdicts:
                        verdicts[owner] = is_live(owner)
                    if not verdicts[owner]:
                        removed += int(redis_call(partial(self._delete, keys=[key], args=[value])))
            if int(cursor) == 0:
                return removed

    def _scan_page(self, cursor: int, pattern: str) -> tuple[int, list[bytes | str]]:
        next_cursor, keys = self._client.scan(cursor, match=pattern, count=self._scan_count)
        return int(next_cursor), list(keys)
