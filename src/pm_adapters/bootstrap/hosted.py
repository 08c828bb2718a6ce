"""The face a built application shows its hosts (pm_http, pm_cli).

``pm_adapters.bootstrap.build(settings)`` returns an object of this shape; the HTTP host and
the CLI use nothing else, so they never touch an adapter directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any, Protocol

from pm_core.config import DomainConfig
from pm_core.model import ReceivedSignal
from pm_core.service.api import Observer, SignalResult


class HostedApp(Protocol):
    """A running pm instance as seen from a host."""

    instance_id: str
    config: DomainConfig
    version: str

    @property
    def state(self) -> str:
        """starting | recovering | active | draining | stopped."""
        ...

    @property
    def accepting(self) -> bool:
        """Whether /webhook takes signals (active, or within the drain grace)."""
        ...

    def set_observer(self, observer: Observer) -> None:
        """Report service events to ``observer`` (metrics)."""
        ...

    def submit(self, received: ReceivedSignal, request_id: str) -> Future[SignalResult]:
        """Hand a validated signal to the worker pool; raises ServiceUnavailable (503)."""
        ...

    def in_progress(self, received: ReceivedSignal, request_id: str) -> SignalResult:
        """The 202 answer for a signal still being processed past the response deadline."""
        ...

    def count_invalid(self) -> None:
        """An invalid request arrived (statistics signals_invalid; flushed periodically)."""
        ...

    def health(self) -> Mapping[str, Any]:
        """GET /health body (no dependency checks)."""
        ...

    def ready(self) -> tuple[bool, Mapping[str, Any]]:
        """GET /ready: (ready?, body) per service.md 10."""
        ...

    def status(self) -> Mapping[str, Any]:
        """GET /status body without request_id (webhook.md 2)."""
        ...

    def exported_statistics(self) -> Mapping[str, float] | None:
        """The statistics the leader last exported (None unless this instance leads)."""
        ...

    def positions(self, status: str | None, limit: int) -> Mapping[str, Any]:
        """GET /positions body without request_id (webhook.md 2)."""
        ...

    def start(self) -> None:
        """Register, recover, start background threads; returns when ready or failed."""
        ...

    def drain(self) -> None:
        """Graceful shutdown steps 1-6 of service.md 9 (bounded by the shutdown timeout)."""
        ...

    def close(self) -> None:
        """Release pools and threads (idempotent)."""
        ...
