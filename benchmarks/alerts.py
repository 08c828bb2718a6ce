"""Seeded alerts of a trend-following strategy on a random walk (shared by the benchmarks).

One ``TrendAlerts`` per instrument: ``move()`` advances the price one bar, ``alerts()`` returns
what the strategy would send on that bar as (kind, payload) pairs, payloads without their
timestamp (the caller stamps them).
"""

from __future__ import annotations

import math
import random
from typing import Any

import attrs


@attrs.frozen
class AlertOdds:
    """How often the strategy does the optional things on a bar."""

    entry: float = 0.25  # flat: chance of a base entry
    stray_exit: float = 0.01  # flat: an exit with nothing open (rejected)
    partial_exit: float = 0.03  # in a trade: a 1-lot partial exit
    repeat_base: float = 0.005  # in a trade: a repeated base entry (rejected)


class TrendAlerts:
    """One instrument's price walk and the alert logic of a trend-following strategy."""

    def __init__(
        self,
        rng: random.Random,
        instrument: str,
        price: float,
        atr_frac: float,
        stop_mult: float,
        max_labels: int,
        odds: AlertOdds = AlertOdds(),
    ) -> None:
        self.rng = rng
        self.instrument = instrument
        self.anchor = math.log(price)
        self.log_price = self.anchor
        self.atr_frac = atr_frac
        self.stop_mult = stop_mult
        self.max_labels = int(max_labels)
        self.odds = odds
        self.labels: list[int] = []  # open label numbers, as the strategy believes
        self.entry = self.one_r = self.trail = self.high = self.last_pyramid = 0.0

    @property
    def price(self) -> float:
        return float(round(math.exp(self.log_price)))

    def move(self) -> None:
        """One bar: a random walk with a little drift and a weak pull back to the start, so
        prices stay plausible over years of bars."""
        pull = 0.0005 * (self.anchor + 0.35 - self.log_price)
        self.log_price += self.rng.gauss(0.00005 + pull, 0.3 * self.atr_frac)

    def alerts(self) -> list[tuple[str, dict[str, Any]]]:
        """The alerts of this bar: (kind, payload) with kind e.g. ``EXIT ALL``."""
        rng, price, odds = self.rng, self.price, self.odds
        atr = round(price * self.atr_frac * rng.uniform(0.8, 1.25), 1)
        er = round(rng.uniform(0.55, 1.0), 2)
        if not self.labels:
            if rng.random() < odds.entry:
                stop = round(price - self.stop_mult * atr * rng.uniform(0.9, 1.1))
                self.labels = [1]
                self.entry, self.one_r = price, price - stop
                self.trail, self.high, self.last_pyramid = stop, price, price
                lots = rng.randint(1, 8)
                base = self._payload("BASE_ENTRY", "Long_1", price, stop, lots, atr, er)
                return [("BASE_ENTRY", base)]
            if rng.random() < odds.stray_exit:
                return [("EXIT stray", self._exit("Long_1", price, atr, 0, "Stray Exit"))]
            return []
        self.high = max(self.high, price)
        self.trail = max(self.trail, self.high - 2.0 * atr)
        if price < self.trail:
            labels, self.labels = self.labels, []
            if len(labels) == 1:
                return [("EXIT", self._exit("Long_1", price, atr, 0, "Trailing Stop Hit"))]
            if rng.random() < 0.5:
                return [("EXIT ALL", self._exit("ALL", price, atr, 0, "Trend Reversal"))]
            return [
                ("EXIT", self._exit(f"Long_{n}", price, atr, 0, "Trailing Stop Hit"))
                for n in labels
            ]
        if (
            len(self.labels) < self.max_labels
            and price > self.entry + 1.1 * self.one_r
            and price > self.last_pyramid + 0.75 * atr
            and rng.random() < 0.7
        ):
            label = max(self.labels) + 1
            self.labels.append(label)
            self.last_pyramid = price
            stop = round(price - atr * rng.uniform(0.8, 1.2))
            pyramid = self._payload("PYRAMID", f"Long_{label}", price, stop, 0, atr, er)
            return [("PYRAMID", pyramid)]
        roll = rng.random()
        if roll < odds.partial_exit:
            return [("EXIT partial", self._exit("Long_1", price, atr, 1, "Partial Profit"))]
        if roll < odds.partial_exit + odds.repeat_base:
            base = self._payload("BASE_ENTRY", "Long_1", price, round(price - atr), 2, atr, er)
            return [("BASE_ENTRY repeat", base)]
        return []

    def _payload(
        self, type_: str, label: str, price: float, stop: float, lots: int, atr: float, er: float
    ) -> dict[str, Any]:
        return {
            "type": type_,
            "instrument": self.instrument,
            "position": label,
            "price": price,
            "stop": stop,
            "lots": lots,
            "atr": atr,
            "er": er,
            "supertrend": stop,
            "roc": round(self.rng.uniform(-3.0, 5.0), 2),
        }

    def _exit(self, label: str, price: float, atr: float, lots: int, reason: str) -> dict[str, Any]:
        payload = self._payload("EXIT", label, price, 0, lots, atr, 1.0)
        payload["reason"] = reason
        return payload
