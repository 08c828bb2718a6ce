"""Backtest statistics (domain 11.5, 13.8): the formula check and the edge rules."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from pm_core.backtest.statistics import exposure_pct, max_drawdown, trade_figures, trade_r

MINUTE_US = 60_000_000


def test_formula_check_drawdown() -> None:
    drawdown, pct = max_drawdown(5_000_000.0, [5.0e6, 5.1e6, 4.9e6, 5.2e6, 5.05e6])
    assert drawdown == 200_000.0
    assert pct == 3.9215686274509802


def test_formula_check_trades() -> None:
    figures = trade_figures([5_000.0, -2_000.0, 0.0, 3_000.0], [None, None, None, None])
    assert figures.trades == 4
    assert figures.win_rate_pct == 50.0
    assert figures.gross_profit == 8_000.0
    assert figures.gross_loss == 2_000.0
    assert figures.profit_factor == 4.0
    assert figures.average_r is None


def test_win_rate_is_wins_over_trades_times_100() -> None:
    assert trade_figures([1.0, -1.0, 0.0], [None] * 3).win_rate_pct == 33.33333333333333


def test_no_trades_and_no_losses_give_nulls_not_errors() -> None:
    empty = trade_figures([], [])
    assert (empty.trades, empty.win_rate_pct, empty.profit_factor) == (0, None, None)
    assert empty.gross_loss == 0.0 and math.copysign(1.0, empty.gross_loss) == 1.0
    only_wins = trade_figures([10.0, 20.0], [1.0, None])
    assert only_wins.profit_factor is None
    assert only_wins.average_r == 1.0


def test_drawdown_percent_and_amount_are_maximised_separately() -> None:
    # The biggest rupee fall (from 10M) is not the biggest percentage fall (from 1M).
    drawdown, pct = max_drawdown(1_000_000.0, [500_000.0, 10_000_000.0, 8_000_000.0])
    assert drawdown == 2_000_000.0
    assert pct == 50.0


def test_drawdown_starts_at_initial_capital_and_skips_non_positive_peaks() -> None:
    assert max_drawdown(5_000_000.0, [4_000_000.0]) == (1_000_000.0, 20.0)
    assert max_drawdown(5_000_000.0, []) == (0.0, 0.0)
    assert max_drawdown(-10.0, [-20.0]) == (10.0, 0.0)


def test_trade_r_uses_the_rows_lots_and_is_null_without_initial_risk() -> None:
    # domain 12.11: 2 lots closed at 52400 of a base at 52000 stop 51900, pv 35 -> 4.0
    assert trade_r(28_000.0, 52000.0, 51900.0, 2, 35.0) == 4.0
    assert trade_r(100.0, 52000.0, 52000.0, 2, 35.0) is None
    assert trade_r(100.0, 52000.0, 52100.0, 2, 35.0) is None


def test_exposure_counts_time_held_until_the_next_signal() -> None:
    times = [0, 10 * MINUTE_US, 30 * MINUTE_US, 40 * MINUTE_US]
    # open after the first signal, flat after the second, open after the third: 10 + 10 of 40
    assert exposure_pct(times, [True, False, True, True]) == 50.0
    # the state after the last signal does not count
    assert exposure_pct(times, [False, False, False, True]) == 0.0


def test_exposure_zero_span_is_zero() -> None:
    assert exposure_pct([], []) == 0.0
    assert exposure_pct([5], [True]) == 0.0
    assert exposure_pct([5, 5], [True, True]) == 0.0


@given(st.lists(st.floats(1.0, 1e9), min_size=1, max_size=50))
def test_drawdown_bounds(curve: list[float]) -> None:
    drawdown, pct = max_drawdown(curve[0], curve)
    assert 0.0 <= drawdown <= max(curve) - min(curve)
    assert 0.0 <= pct < 100.0


@given(
    st.lists(
        st.tuples(st.integers(0, 10 * MINUTE_US), st.booleans()),
        min_size=2,
        max_size=40,
    )
)
def test_exposure_is_a_percentage(steps: list[tuple[int, bool]]) -> None:
    times: list[int] = []
    now = 0
    for gap, _held in steps:
        now += gap
        times.append(now)
    value = exposure_pct(times, [held for _gap, held in steps])
    assert 0.0 <= value <= 100.0
    if all(held for _gap, held in steps) and times[-1] > times[0]:
        assert value == 100.0
