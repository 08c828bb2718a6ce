"""Fixtures and hypothesis strategies for the trading-formula tests (domain 12)."""

from __future__ import annotations

import datetime as dt

import attrs
from hypothesis import strategies as st

from pm_core.config import InstrumentConfig, LotSizeEntry, bank_nifty, gold_mini
from pm_core.model import Position

TS0 = dt.datetime(2025, 11, 28, 10, 30, tzinfo=dt.UTC)


def bn35() -> InstrumentConfig:
    """Config "BN-35": BANK_NIFTY with lot_size_history [(None, 35)] (domain 2.2)."""
    return attrs.evolve(bank_nifty(), lot_size_history=(LotSizeEntry(None, 35),))


def gold() -> InstrumentConfig:
    """Default GOLD_MINI."""
    return gold_mini()


def position(
    instrument: InstrumentConfig,
    *,
    id: int = 1,
    label: str = "Long_1",
    lots: int = 1,
    entry: float = 52000.0,
    stop: float = 51650.0,
    current_stop: float | None = None,
    high: float | None = None,
    atr: float = 350.0,
    basis: float | None = None,
    is_base: bool = True,
    status: str = "open",
    **extra: object,
) -> Position:
    """A live position of ``instrument`` with the usual defaults; pv from the first lot size."""
    lot_size = instrument.lot_size_history[0].lot_size
    fields: dict[str, object] = dict(
        id=id,
        instrument=instrument.id,
        label=label,
        status=status,
        is_base_position=is_base,
        lots=lots,
        quantity=lots * lot_size,
        lot_size=lot_size,
        point_value=lot_size / instrument.quote_unit,
        entry_timestamp=TS0,
        entry_price=entry,
        initial_stop=stop,
        current_stop=stop if current_stop is None else current_stop,
        highest_close=entry if high is None else high,
        atr=atr,
        basis=entry if basis is None else basis,
    )
    fields.update(extra)
    return Position(**fields)  # type: ignore[arg-type]


prices = st.floats(min_value=100.0, max_value=200_000.0, allow_nan=False)
atrs = st.floats(min_value=0.0, max_value=5_000.0, allow_nan=False)
equities = st.floats(min_value=-10_000_000.0, max_value=1e9, allow_nan=False)
margins = st.floats(min_value=0.0, max_value=1e9, allow_nan=False)
ers = st.floats(min_value=0.0, max_value=3.0, allow_nan=False)
signal_lots = st.integers(min_value=-5, max_value=500)
instruments = st.sampled_from([bn35(), gold(), bank_nifty()])
