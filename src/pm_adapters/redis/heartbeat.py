"""Redis heartbeat keys ``<p>heartbeat:<id>`` = {status, ts} with PX 3 x PM_HEARTBEAT_MS."""

from __future__ import annotations

import json
import time

import redis

from pm_adapters.redis.client import DEFAULT_PREFIX, redis_call


class RedisHeartbeats:
    """Writes and reads the short-lived liveness keys of instances."""

    def __init__(
        self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX, heartbeat_ms: int = 2000
    ) -> None:
        if heartbeat_ms <= 0:
            raise ValueError("PM_HEARTBEAT_MS must be positive")
        self._client = client
        self._prefix = prefix
        self.ttl_ms = 3 * heartbeat_ms

    def key(self, instance_id: str) -> str:
        return f"{self._prefix}heartbeat:{instance_id}"

    def beat(self, instance_id: str, status: str) -> None:
        """Refresh the key; it vanishes by itself three intervals after the last beat."""
        value = json.dumps({"status": status, "ts": time.time()})
        redis_call(lambda: self._client.set(self.key(instance_id), value, px=self.ttl_ms))

    def present(self, instance_id: str) -> bool:
        """Does the instance's heartbeat key exist."""
        return bool(redis_call(lambda: self._client.exists(self.key(instance_id))))

    def status(self, instance_id: str) -> str | None:
        """The status in the heartbeat key, if the key exists."""
        raw = redis_call(lambda: self._client.get(self.key(instance_id)))
        if raw is None:
            return None
        try:
            status = json.loads(raw)["status"]
        except (ValueError, KeyError, TypeError):
            return None
        return str(status)

    def clear(self, instance_id: str) -> None:
        """Remove the key (clean stop)."""
        redis_call(lambda: self._client.delete(self.key(instance_id)))
