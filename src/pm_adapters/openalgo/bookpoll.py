"""One shared ``orderbook`` read in place of per-order polls (openalgo.md 6).

Each order followed to a fill asks ``orderstatus`` every few hundred milliseconds. With
more than ``threshold`` orders followed at once, those reads would eat the read budget
(40/s cluster-wide), so their status is taken from one ``orderbook`` read shared by all of
them, refreshed at most every PM_OPENALGO_BOOK_POLL_MS. An order not in that book yet (just
placed), or just modified or cancelled by us, is still asked about on its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from pm_core.ports import Ok, OrderStatus, ReadResult


class SharedBookPoll:
    """Order rows from a shared order book while many orders are followed."""

    def __init__(
        self,
        read_book: Callable[[], ReadResult[Sequence[OrderStatus]]],
        interval_s: float,
        *,
        threshold: int = 3,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read_book = read_book
        self._interval_s = interval_s
        # An order asked about within this long counts as followed (polls grow to ~1 s).
        self._window_s = max(4 * interval_s, 2.0)
        self._threshold = threshold
        self._monotonic = monotonic
        self._lock = threading.Lock()  # followed orders and the cached rows
        self._reading = threading.Lock()  # one book read at a time
        self._followed: dict[str, tuple[int, float]] = {}  # order id -> (questions, last)
        self._rows: dict[str, OrderStatus] = {}
        self._read_at: float | None = None

    def status(self, order_id: str) -> OrderStatus | None:
        """The order's row from a book at most one interval old; None: ask for it alone.

        An order's first question (the read right after it was placed) is always asked
        alone; from its second on it is polled, and counts as followed.
        """
        with self._lock:
            now = self._monotonic()
            asked, _ = self._followed.get(order_id, (0, now))
            self._followed[order_id] = (asked + 1, now)
            for other, (_, seen) in list(self._followed.items()):
                if now - seen > self._window_s:
                    del self._followed[other]
            if asked == 0 or self._polled(now) <= self._threshold:
                return None
            if self._fresh(now):
                return self._rows.get(order_id)
        with self._reading:
            with self._lock:
                if self._fresh(self._monotonic()):  # read by another caller meanwhile
                    return self._rows.get(order_id)
            started = self._monotonic()  # the rows are at least this fresh
            book = self._read_book()
            if not isinstance(book, Ok):
                return None
            with self._lock:
                self._rows = {row.order_id: row for row in book.value}
                self._read_at = started
                return self._rows.get(order_id)

    def forget(self, order_id: str) -> None:
        """We just modified or cancelled the order: its cached row is out of date."""
        with self._lock:
            self._rows.pop(order_id, None)

    def followed(self) -> int:
        """How many orders count as followed (polled) now."""
        with self._lock:
            return self._polled(self._monotonic())

    def _polled(self, now: float) -> int:
        return sum(
            1
            for asked, seen in self._followed.values()
            if asked > 1 and now - seen <= self._window_s
        )

    def _fresh(self, now: float) -> bool:
        return self._read_at is not None and now - self._read_at < self._interval_s
