"""The per-configuration memo of pure derived values (``pm_core.config.derived``)."""

from __future__ import annotations

import datetime as dt

import attrs

from pm_core import calendar as cal
from pm_core.config import Holiday, default_config, derived


def test_same_config_shares_a_memo_another_config_gets_a_fresh_one() -> None:
    config = default_config()
    memo = derived(config, "test")
    memo["k"] = 1
    assert derived(config, "test") is memo
    assert derived(config, "other") == {}
    # An equal but distinct configuration is another object: nothing is shared with it.
    other = default_config()
    assert derived(other, "test") == {}
    assert derived(config, "test") == {}


def test_contract_for_follows_the_config_it_is_given() -> None:
    config = default_config()
    gold = config.instruments["GOLD_MINI"]
    plain = cal.contract_for(gold, 2026, 3, config)
    # The rule date of March 2026 (its 5th, a Thursday) closed: the expiry moves back a day.
    closed = attrs.evolve(config, holidays=(Holiday("MCX", plain.expiry, "test", "full"),))
    moved = cal.contract_for(closed.instruments["GOLD_MINI"], 2026, 3, closed)
    assert moved.expiry == plain.expiry - dt.timedelta(days=1)
    assert cal.contract_for(gold, 2026, 3, config) == plain


def test_contract_for_an_instrument_outside_the_config_is_not_memoised() -> None:
    config = default_config()
    gold = config.instruments["GOLD_MINI"]
    assert cal.contract_for(gold, 2026, 3, config).lot_size == 100
    bigger = attrs.evolve(
        gold, lot_size_history=(attrs.evolve(gold.lot_size_history[0], lot_size=200),)
    )
    assert cal.contract_for(bigger, 2026, 3, config).lot_size == 200
    assert cal.contract_for(gold, 2026, 3, config).lot_size == 100
