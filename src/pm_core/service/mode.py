"""The broker's execution mode against the expected one (openalgo.md 8).

Checked at start, every PM_OPENALGO_MODE_CHECK_S and against each write response; on a
mismatch no intent is claimed and signals needing orders fail ``broker_mode_mismatch``.
"""

from __future__ import annotations

import threading

from pm_core.ports import Broker, Clock, Ok

MISMATCH_PREFIX = "Broker mode "


def mismatch_message(mode: str, expected: str) -> str:
    """``Broker mode {mode}, expected {expected}`` (domain 6.4)."""
    return f"{MISMATCH_PREFIX}{mode}, expected {expected}"


def parse_mismatch(text: str | None) -> tuple[str, str] | None:
    """(mode, expected) from a mismatch message, else None."""
    if not text or not text.startswith(MISMATCH_PREFIX):
        return None
    mode, sep, expected = text[len(MISMATCH_PREFIX) :].partition(", expected ")
    return (mode, expected) if sep else None


class BrokerModeGuard:
    """Caches the broker's mode; ``mismatch()`` says whether orders must not be sent."""

    def __init__(self, broker: Broker, expected: str, clock: Clock, check_s: float) -> None:
        self._broker = broker
        self.expected = expected
        self._clock = clock
        self._check_s = check_s
        self._mode: str | None = None
        self._checked_at: float | None = None
        self._lock = threading.Lock()

    def refresh(self) -> str | None:
        """Ask the broker now; None when it does not answer (unknown)."""
        got = self._broker.mode()
        with self._lock:
            self._checked_at = self._clock.monotonic()
            self._mode = got.value if isinstance(got, Ok) else None
            return self._mode

    def observed(self, mode: str | None) -> None:
        """A write response carried ``mode``."""
        if mode:
            with self._lock:
                self._mode = mode
                self._checked_at = self._clock.monotonic()

    def current(self) -> str | None:
        """The cached mode, refreshed when older than the check interval."""
        with self._lock:
            fresh = (
                self._checked_at is not None
                and self._clock.monotonic() - self._checked_at < self._check_s
            )
            mode = self._mode
        return mode if fresh else self.refresh()

    def mismatch(self) -> tuple[str, str] | None:
        """(mode, expected) when the broker runs in another mode; unknown is not a mismatch."""
        mode = self.current()
        if mode is None or mode == self.expected:
            return None
        return mode, self.expected

    def status(self) -> dict[str, object]:
        """The broker entry of /ready."""
        with self._lock:
            mode = self._mode
        if mode is None:
            state = "unknown"
        elif mode != self.expected:
            state = "mode_mismatch"
        else:
            state = "ok"
        return {"status": state, "mode": mode, "expected_mode": self.expected}
