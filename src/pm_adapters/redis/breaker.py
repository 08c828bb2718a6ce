"""The circuit breaker around every Redis call (service.md 4).

closed    -> Redis is used; ``failures`` consecutive failures open it.
open      -> database-only; after ``cooldown_s`` it lets probes through (half-open).
half_open -> still database-only; a probe every ``probe_s``; ``probes`` successes in a row
             close it, one failure opens it again.
Time comes from an injected monotonic clock so tests can drive it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]
Mode = Literal["normal", "database-only"]


class CircuitBreaker:
    """Counts Redis failures and decides whether Redis may be called."""

    def __init__(
        self,
        monotonic: Callable[[], float],
        *,
        failures: int = 3,
        cooldown_s: float = 5.0,
        probes: int = 3,
        probe_s: float = 1.0,
    ) -> None:
        if failures < 1 or probes < 1:
            raise ValueError("failures and probes must be at least 1")
        if cooldown_s < 0 or probe_s < 0:
            raise ValueError("cooldown and probe interval must not be negative")
        self._monotonic = monotonic
        self._failures_to_open = failures
        self._cooldown_s = cooldown_s
        self._probes_to_close = probes
        self._probe_s = probe_s
        self._state: BreakerState = "closed"
        self._failures = 0
        self._successes = 0
        self._opened_at = 0.0
        self._last_probe: float | None = None
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Mode, Mode], None]] = []

    @property
    def state(self) -> BreakerState:
        with self._lock:
            self._refresh()
            return self._state

    @property
    def mode(self) -> Mode:
        return "normal" if self.state == "closed" else "database-only"

    def on_mode_change(self, listener: Callable[[Mode, Mode], None]) -> None:
        """Call ``listener(old, new)`` whenever the mode flips."""
        self._listeners.append(listener)

    def allow(self) -> bool:
        """May an ordinary Redis call be made now (only when closed)."""
        return self.state == "closed"

    def probe_due(self) -> bool:
        """Is it time for a half-open probe; if so the slot is taken by the caller."""
        with self._lock:
            self._refresh()
            if self._state != "half_open":
                return False
            now = self._monotonic()
            if self._last_probe is not None and now - self._last_probe < self._probe_s:
                return False
            self._last_probe = now
            return True

    def record_success(self) -> None:
        """A Redis call (or probe) succeeded."""
        changed: tuple[Mode, Mode] | None = None
        with self._lock:
            self._refresh()
            if self._state == "closed":
                self._failures = 0
            elif self._state == "half_open":
                self._successes += 1
                if self._successes >= self._probes_to_close:
                    self._state = "closed"
                    self._failures = 0
                    self._successes = 0
                    changed = ("database-only", "normal")
            # A late success while open (a call that started before opening) changes nothing.
        if changed:
            self._notify(*changed)

    def record_failure(self) -> None:
        """A Redis call (or probe) failed or timed out."""
        changed: tuple[Mode, Mode] | None = None
        with self._lock:
            self._refresh()
            if self._state == "closed":
                self._failures += 1
                if self._failures >= self._failures_to_open:
                    self._open()
                    changed = ("normal", "database-only")
            elif self._state == "half_open":
                self._open()
        if changed:
            self._notify(*changed)

    def _open(self) -> None:
        self._state = "open"
        self._opened_at = self._monotonic()
        self._successes = 0
        self._last_probe = None

    def _refresh(self) -> None:
        if self._state == "open" and self._monotonic() - self._opened_at >= self._cooldown_s:
            self._state = "half_open"
            self._successes = 0
            self._last_probe = None

    def _notify(self, old: Mode, new: Mode) -> None:
        for listener in list(self._listeners):
            listener(old, new)
