"""Strike selection, limit ladder, roll plans and roll accounting (domain 9.5-9.11, 12.6-12.9)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pm_core import rollover


@pytest.mark.parametrize(
    ("price", "strike"),
    [
        (52100, 52000),
        (52050, 52000),
        (52249.99, 52000),
        (52250, 52000),
        (52250.01, 52500),
        (52300, 52500),
        (52400, 52500),
        (52600, 52500),
        (52700, 52500),
        (52749.5, 52500),
        (52750, 53000),
        (52850, 53000),
        (51250, 51000),
        (51750, 52000),
    ],
)
def test_strike_vectors(price: float, strike: float) -> None:
    assert rollover.select_strike(float(price), 500.0) == float(strike)


@given(
    st.floats(min_value=1.0, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.sampled_from([50.0, 100.0, 500.0, 1000.0]),
)
def test_strike_is_nearest_multiple(price: float, interval: float) -> None:
    strike = rollover.select_strike(price, interval)
    step = Decimal(repr(interval))
    assert Decimal(repr(strike)) % step == 0
    assert abs(Decimal(repr(strike)) - Decimal(repr(price))) <= step / 2
