"""Marking to market, trailing stops and stop hits (domain 4)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import attrs

from pm_core.config import InstrumentConfig
from pm_core.model import Code, Mark, Position


@attrs.frozen(slots=False)  # built per signal: see "Slots or not" in pm_core.model
class MarkResult:
    """Positions after a mark, stop-hit events and the new mark (None when the mark was stale)."""

    positions: tuple[Position, ...]  # the same positions, same order, updated where marked
    events: tuple[Code, ...]  # stop_hit {key, price, stop}
    hit_ids: tuple[int, ...]  # ids of positions whose stop was hit, label order
    mark: Mark | None
    stale: bool


# Position.roll_incomplete, inlined: marking runs over every position of every signal.
_ROLL_INCOMPLETE = ("in_progress", "failed")


def effective_stop(
    price: float, stop: float, atr: float, instrument: InstrumentConfig
) -> tuple[float, bool]:
    """The stop used to size an entry: the signal stop if 0 < stop < price, else the ATR stop.

    Returns (stop, used_fallback).
    """
    if 0 < stop < price:
        return stop, False
    return price - instrument.initial_atr_mult * atr, True


def mark(
    positions: Sequence[Position],
    instrument: InstrumentConfig,
    price: float,
    atr: float,
    ts: dt.datetime,
    last: Mark | None,
) -> MarkResult:
    """Mark an instrument's live positions at ``price``: P&L, highest close, ratchet, stop hits."""
    if last is not None and ts < last.ts:
        return MarkResult(tuple(positions), (), (), None, True)
    trail_by = instrument.trailing_atr_mult * atr if atr > 0 else None
    updated: list[Position] = []
    hits: list[tuple[tuple[int, str], Position]] | None = None
    for position in positions:
        if position.status == "pending_open" or position.rollover_status in _ROLL_INCOMPLETE:
            updated.append(position)
            continue
        unrealized = (price - position.basis) * position.lots * position.point_value
        highest = position.highest_close if position.highest_close >= price else price
        stop = position.current_stop
        if trail_by is not None:
            trail = highest - trail_by
            if trail > stop:
                stop = trail
        if (
            unrealized != position.unrealized_pnl
            or highest != position.highest_close
            or stop != position.current_stop
        ):
            position = position.replace(
                unrealized_pnl=unrealized, highest_close=highest, current_stop=stop
            )
        updated.append(position)
        if price < stop:
            if hits is None:
                hits = []
            hits.append((_label_order(position.label), position))
    if hits is None:
        # The common case: nothing hit, no events to sort or build.
        return MarkResult(tuple(updated), (), (), Mark(price, atr, ts), False)
    hits.sort(key=lambda hit: hit[0])
    events = tuple(
        Code("stop_hit", {"key": p.key, "price": price, "stop": p.current_stop}) for _, p in hits
    )
    return MarkResult(
        tuple(updated), events, tuple([p.id for _, p in hits]), Mark(price, atr, ts), False
    )


def _label_order(label: str) -> tuple[int, str]:
    """Sort key for label order: ascending n of ``Long_n`` (other labels after, by name)."""
    _, _, number = label.rpartition("_")
    if number.isdigit():
        return (int(number), label)
    return (1 << 30, label)
