"""L1: the per-process LRU of fingerprints already seen (service.md 2.2 step 4)."""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict

import attrs

from pm_core.service.api import SignalResult


@attrs.frozen
class L1Entry:
    """What this process knows of a fingerprint: in flight here, or its terminal answer."""

    signal_id: int | None
    terminal: SignalResult | None  # None while in flight on this instance
    completed_at: dt.datetime | None = None


class L1Cache:
    """A thread-safe LRU of at most ``size`` fingerprints."""

    def __init__(self, size: int) -> None:
        self._size = max(1, size)
        self._entries: OrderedDict[str, L1Entry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, fingerprint: str) -> L1Entry | None:
        """The entry for ``fingerprint``, refreshed as most recently used."""
        with self._lock:
            entry = self._entries.get(fingerprint)
            if entry is not None:
                self._entries.move_to_end(fingerprint)
            return entry

    def begin(self, fingerprint: str) -> bool:
        """Mark in flight here; False if this process already holds the fingerprint."""
        with self._lock:
            if fingerprint in self._entries:
                return False
            self._put(fingerprint, L1Entry(None, None))
            return True

    def note_signal_id(self, fingerprint: str, signal_id: int) -> None:
        """The in-flight fingerprint got its signal row (202 answers can name it)."""
        with self._lock:
            entry = self._entries.get(fingerprint)
            if entry is not None and entry.terminal is None:
                self._entries[fingerprint] = L1Entry(signal_id, None)

    def finish(
        self,
        fingerprint: str,
        signal_id: int | None,
        result: SignalResult,
        completed_at: dt.datetime | None = None,
    ) -> None:
        """Store the terminal answer."""
        with self._lock:
            self._put(fingerprint, L1Entry(signal_id, result, completed_at))

    def forget(self, fingerprint: str) -> None:
        """Drop an in-flight mark that will not finish here (handed to recovery)."""
        with self._lock:
            entry = self._entries.get(fingerprint)
            if entry is not None and entry.terminal is None:
                del self._entries[fingerprint]

    def _put(self, fingerprint: str, entry: L1Entry) -> None:
        self._entries[fingerprint] = entry
        self._entries.move_to_end(fingerprint)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
