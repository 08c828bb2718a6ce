"""What the service offers its hosts (pm_http, pm_cli): results, errors and observers.

The host parses and authenticates; the service decides, executes and answers with a status
code and a complete body (the body is stored for idempotent replays, so it is built here).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import attrs

from pm_core.errors import PmError


@attrs.frozen
class SignalResult:
    """The HTTP answer for one signal: status code and the whole JSON body (webhook.md 1.3)."""

    http_status: int
    body: Mapping[str, Any]
    retry_after_s: int | None = None


class ServiceUnavailable(PmError, RuntimeError):
    """The service cannot take a signal now: ``reason`` is draining, recovering,
    database_unavailable or overloaded (webhook.md 1.3, 503)."""

    def __init__(self, reason: str, retry_after_s: int) -> None:
        self.reason = reason
        self.retry_after_s = retry_after_s
        super().__init__(reason)


class Observer(Protocol):
    """Where the service reports what it did (Prometheus in pm_http; nothing in tests)."""

    def signal_finished(self, outcome: str, instrument: str, type_: str, seconds: float) -> None:
        """A signal reached an answer (any outcome, duplicates included)."""
        ...

    def duplicate(self, layer: str) -> None:
        """A duplicate caught at layer l1, l2, l3 or near."""
        ...

    def lock_failure(self, reason: str) -> None:
        """L2 could not be used (held elsewhere, store down)."""
        ...

    def inflight(self, delta: int) -> None:
        """Signals in flight on this instance changed by ``delta``."""
        ...

    def tx_retry(self, reason: str) -> None:
        """A transaction was retried."""
        ...

    def intent_state(self, state: str, delta: int) -> None:
        """Order intents in ``state`` changed by ``delta`` (this instance's view)."""
        ...

    def broker_request(self, endpoint: str, seconds: float) -> None:
        """One broker HTTP attempt took ``seconds``."""
        ...

    def broker_error(self, endpoint: str, kind: str) -> None:
        """A broker attempt failed with ``kind`` (timeout, http_5xx, connect, ...)."""
        ...

    def redis_mode_change(self) -> None:
        """Coordination switched between normal and database-only."""
        ...

    def reconciliation_differences(self, instrument: str, kind: str, count: int) -> None:
        """The last reconciliation found ``count`` rows of ``kind`` on ``instrument``."""
        ...


class NullObserver:
    """An Observer that records nothing."""

    def signal_finished(self, outcome: str, instrument: str, type_: str, seconds: float) -> None:
        """Ignore."""

    def duplicate(self, layer: str) -> None:
        """Ignore."""

    def lock_failure(self, reason: str) -> None:
        """Ignore."""

    def inflight(self, delta: int) -> None:
        """Ignore."""

    def tx_retry(self, reason: str) -> None:
        """Ignore."""

    def intent_state(self, state: str, delta: int) -> None:
        """Ignore."""

    def broker_request(self, endpoint: str, seconds: float) -> None:
        """Ignore."""

    def broker_error(self, endpoint: str, kind: str) -> None:
        """Ignore."""

    def redis_mode_change(self) -> None:
        """Ignore."""

    def reconciliation_differences(self, instrument: str, kind: str, count: int) -> None:
        """Ignore."""
