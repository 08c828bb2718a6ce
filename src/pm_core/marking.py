"""Marking to market, trailing stops and stop hits (domain 4)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import attrs

from pm_core.config import InstrumentConfig
from pm_core.model import Code, Mark, Position


@attrs.frozen
class MarkResult:
    """Positions after a mark, stop-hit events and the new mark (None when the mark was stale)."""

    positions: tuple[Position, ...]  # the same positions, same order, updated where marked
    events: tuple[Code, ...]  # stop_hit {key, price, stop}
    hit_ids: tuple[int, ...]  # ids of positions whose stop was hit, label order
    mark: Mark | None
    stale: bool


def effective_stop(
    price: float, stop: float, atr: float, instrument: InstrumentConfig
) -> tuple[float, bool]:
    """The stop used to size an entry: the signal stop if 0 < stop < price, else the ATR stop.

    Returns (stop, used_fallback).
    """
    raise NotImplementedError


def mark(
    positions: Sequence[Position],
    instrument: InstrumentConfig,
    price: float,
    atr: float,
    ts: dt.datetime,
    last: Mark | None,
) -> MarkResult:
    """Mark an instrument's live positions at ``price``: P&L, highest close, ratchet, stop hits."""
    raise NotImplementedError
