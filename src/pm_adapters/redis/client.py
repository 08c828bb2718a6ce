"""redis-py client construction and error translation shared by the Redis adapters."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pm_core.errors import CoordinationUnavailable

T = TypeVar("T")

DEFAULT_PREFIX = "pm:"


def make_client(url: str, timeout_ms: int = 250) -> redis.Redis:
    """A client whose every call gives up after ``timeout_ms`` (connect and read), no retries.

    redis-py retries by default; the circuit breaker counts failures itself, so a hidden
    retry would only stretch a call past PM_REDIS_TIMEOUT_MS.
    """
    if timeout_ms <= 0:
        raise ValueError("PM_REDIS_TIMEOUT_MS must be positive")
    timeout_s = timeout_ms / 1000
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        health_check_interval=0,
    )


def redis_call(operation: Callable[[], T]) -> T:
    """Run one Redis operation; any Redis failure becomes CoordinationUnavailable."""
    try:
        return operation()
    except redis.RedisError as exc:
        raise CoordinationUnavailable(f"redis: {type(exc).__name__}") from exc
    except OSError as exc:
        raise CoordinationUnavailable(f"redis: {type(exc).__name__}") from exc


def as_text(value: object) -> str | None:
    """A Redis reply (bytes or str) as text."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
