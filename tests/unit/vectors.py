"""Short aliases for the trading-formula tests; the fixtures live in tests/strategies.py."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pm_core.config import InstrumentConfig
from pm_core.model import Position
from tests import strategies as s

TS0: dt.datetime = s.MARK_TS


def bn35() -> InstrumentConfig:
    """Config "BN-35" (domain 2.2)."""
    config: InstrumentConfig = s.bn35_config()
    return config


def position(instrument: InstrumentConfig, **kw: Any) -> Position:
    """A live position of ``instrument`` (see tests.strategies.make_position)."""
    built: Position = s.make_position(instrument, **kw)
    return built


prices = s.sizing_prices()
atrs = s.sizing_atrs()
equities = s.sizing_equities()
margins = s.sizing_margins()
ers = s.efficiency_ratios()
signal_lots = s.signal_lot_counts()
instruments = s.instrument_configs()
