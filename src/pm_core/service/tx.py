"""Transactions with retry (service.md 5): transient failures re-run from a fresh read."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TypeVar

import attrs

from pm_core.errors import CommitUnknown, DatabaseUnavailable, StaleVersionError
from pm_core.ports import Clock, TxKind, UnitOfWork, UnitOfWorkFactory

T = TypeVar("T")


@attrs.frozen
class RetryPolicy:
    """PM_TX_ATTEMPTS with full-jitter backoff base x 2^n, capped, within a total budget."""

    attempts: int = 4
    base_s: float = 0.025
    cap_s: float = 0.5
    budget_s: float = 2.0

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Full jitter: uniform in [0, min(cap, base x 2^attempt))."""
        return float(rng()) * min(self.cap_s, self.base_s * float(2**attempt))


def in_transaction(
    uow: UnitOfWorkFactory,
    work: Callable[[UnitOfWork], T],
    clock: Clock,
    policy: RetryPolicy,
    *,
    kind: TxKind = "signal",
    on_retry: Callable[[BaseException], None] | None = None,
    rng: Callable[[], float] = random.random,
) -> T:
    """Run ``work`` in a unit of work and commit; retry stale versions and lost connections.

    ``work`` must be idempotent when re-run: every attempt re-reads what it decides on.
    An unknown commit outcome is not retried here: the caller re-reads by idempotency key.
    """
    started = clock.monotonic()
    attempt = 0
    while True:
        try:
            with uow.begin(kind) as unit:
                result = work(unit)
                unit.commit()
                return result
        except (StaleVersionError, DatabaseUnavailable) as exc:
            if isinstance(exc, CommitUnknown):
                raise
            attempt += 1
            wait = policy.delay(attempt - 1, rng)
            if attempt >= policy.attempts or clock.monotonic() - started + wait > policy.budget_s:
                raise
            if on_retry is not None:
                on_retry(exc)
            clock.sleep(wait)
