"""Clocks implementing ``pm_core.ports.Clock``: the real one and a hand-driven one for tests."""

from __future__ import annotations

import datetime as dt
import threading
import time

UTC = dt.UTC


class SystemClock:
    """Wall time in UTC, the OS monotonic clock and a real sleep."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class ManualClock:
    """A clock that moves only when told to; ``sleep`` advances it instead of waiting.

    Thread-safe, so a background loop sleeping on it simply runs through simulated time.
    """

    def __init__(
        self, start: dt.datetime | None = None, *, monotonic_start: float = 1000.0
    ) -> None:
        start = start or dt.datetime(2026, 1, 5, 3, 45, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware start time")
        self._now = start.astimezone(UTC)
        self._mono = monotonic_start
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def sleep(self, seconds: float) -> None:
        self.advance(max(seconds, 0.0))

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        with self._lock:
            self._now += dt.timedelta(seconds=seconds)
            self._mono += seconds

    def set(self, when: dt.datetime) -> None:
        """Jump wall time to ``when`` (not backwards); monotonic moves by the same amount."""
        when = when.astimezone(UTC)
        with self._lock:
            delta = (when - self._now).total_seconds()
            if delta < 0:
                raise ValueError("time only moves forward")
            self._now = when
            self._mono += delta
