"""Expiry calendar, symbols, sessions and the rollover scanner (domain 9.1-9.4, 9.12, 12.7)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pm_core import calendar as cal
from pm_core.config import DomainConfig, Holiday, HolidayClosure, default_config
from pm_core.errors import ConfigError
from pm_core.model import Position

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
D = dt.date


def with_holidays(*rows: tuple[str, dt.date, HolidayClosure]) -> DomainConfig:
    config = default_config()
    return attrs.evolve(
        config,
        holidays=tuple(Holiday(c, d, "test", closed) for c, d, closed in rows),
    )


CONFIG = default_config()
BN = CONFIG.instrument("BANK_NIFTY")
GOLD = CONFIG.instrument("GOLD_MINI")


@pytest.mark.parametrize(
    ("month", "expected"),
    [
        ((2025, 11), "25NOV25"),
        ((2025, 12), "30DEC25"),
        ((2026, 1), "27JAN26"),
        ((2026, 2), "24FEB26"),
        ((2026, 3), "31MAR26"),
    ],
)
def test_bank_nifty_expiry_is_last_tuesday(month: tuple[int, int], expected: str) -> None:
    assert cal.format_expiry(cal.expiry_for(BN, *month, CONFIG)) == expected


@pytest.mark.parametrize(
    ("month", "holiday", "expected"),
    [((2025, 12), D(2025, 12, 30), "29DEC25"), ((2026, 3), D(2026, 3, 31), "30MAR26")],
)
def test_bank_nifty_expiry_moves_back_over_full_holiday(
    month: tuple[int, int], holiday: dt.date, expected: str
) -> None:
    config = with_holidays(("NSE", holiday, "full"))
    assert cal.format_expiry(cal.expiry_for(BN, *month, config)) == expected


def test_partial_holiday_and_other_calendar_do_not_move_expiry() -> None:
    config = with_holidays(("NSE", D(2025, 12, 30), "morning"), ("MCX", D(2025, 12, 30), "full"))
    assert cal.expiry_for(BN, 2025, 12, config) == D(2025, 12, 30)


def test_override_wins_and_is_not_adjusted() -> None:
    bn = attrs.evolve(BN, expiry_overrides={"2026-01": D(2026, 1, 28)})
    config = with_holidays(("NSE", D(2026, 1, 28), "full"))
    assert cal.format_expiry(cal.expiry_for(bn, 2026, 1, config)) == "28JAN26"


@pytest.mark.parametrize(
    ("month", "expected"),
    [
        ((2025, 10), "03OCT25"),
        ((2025, 12), "05DEC25"),
        ((2026, 1), "05JAN26"),
        ((2026, 4), "03APR26"),
        ((2026, 9), "04SEP26"),
    ],
)
def test_gold_expiry_is_fifth_moved_back_over_weekend(
    month: tuple[int, int], expected: str
) -> None:
    assert cal.format_expiry(cal.expiry_for(GOLD, *month, CONFIG)) == expected


def test_gold_expiry_moves_back_over_holiday() -> None:
    config = with_holidays(("MCX", D(2026, 4, 3), "full"))
    assert cal.format_expiry(cal.expiry_for(GOLD, 2026, 4, config)) == "02APR26"


def test_contract_for_uses_lot_size_history() -> None:
    nov = cal.contract_for(BN, 2025, 11, CONFIG)
    dec = cal.contract_for(BN, 2025, 12, CONFIG)
    assert (nov.month, nov.lot_size, nov.point_value) == ("2025-11", 35, 35.0)
    assert (dec.month, dec.lot_size, dec.point_value) == ("2025-12", 30, 30.0)
    gold = cal.contract_for(GOLD, 2026, 1, CONFIG)
    assert (gold.lot_size, gold.point_value) == (100, 10.0)


def test_format_and_parse_expiry() -> None:
    assert cal.format_expiry(D(2025, 12, 30)) == "30DEC25"
    assert cal.parse_expiry("30DEC25") == D(2025, 12, 30)
    assert cal.parse_expiry("05jan26") == D(2026, 1, 5)
    assert cal.parse_expiry("31FEB26") is None
    assert cal.parse_expiry("INVALID") is None
    assert cal.parse_expiry("2025-12-25") == D(2025, 12, 25)
    assert cal.parse_expiry("5JAN26") is None
    assert cal.parse_expiry("05XYZ26") is None
    assert cal.parse_expiry("20251225") is None


@given(st.dates(min_value=D(2000, 1, 1), max_value=D(2099, 12, 31)))
def test_expiry_text_round_trips(day: dt.date) -> None:
    text = cal.format_expiry(day)
    assert len(text) == 7 and text == text.upper()
    assert cal.parse_expiry(text) == day
    assert cal.parse_expiry(text.lower()) == day


def test_symbols() -> None:
    dec, jan26 = D(2025, 12, 30), D(2026, 1, 27)
    assert cal.option_symbol("BANKNIFTY", dec, 52000.0, "PE") == "BANKNIFTY30DEC2552000PE"
    assert cal.option_symbol("BANKNIFTY", dec, 52000, "CE") == "BANKNIFTY30DEC2552000CE"
    assert cal.futures_symbol("BANKNIFTY", dec) == "BANKNIFTY30DEC25FUT"
    assert cal.option_symbol("BANKNIFTY", jan26, 53000.0, "CE") == "BANKNIFTY27JAN2653000CE"
    assert cal.futures_symbol("GOLDM", D(2025, 12, 5)) == "GOLDM05DEC25FUT"
    assert cal.futures_symbol("GOLDM", D(2026, 1, 5)) == "GOLDM05JAN26FUT"
    with pytest.raises(ValueError):
        cal.option_symbol("BANKNIFTY", dec, 52000.5, "CE")
    with pytest.raises(ValueError):
        cal.option_symbol("BANKNIFTY", dec, 52000.0, "FUT")


def test_parse_symbol_prefers_longest_root() -> None:
    gold = attrs.evolve(GOLD, id="GOLD", symbol_root="GOLD")
    config = attrs.evolve(CONFIG, instruments={**CONFIG.instruments, "GOLD": gold})
    parsed = cal.parse_symbol("GOLDM05JAN26FUT", config)
    assert parsed == cal.ParsedSymbol("GOLD_MINI", "GOLDM", D(2026, 1, 5), "FUT")
    assert cal.parse_symbol("GOLD05JAN26FUT", config) == cal.ParsedSymbol(
        "GOLD", "GOLD", D(2026, 1, 5), "FUT"
    )
    assert cal.parse_symbol("BANKNIFTY30DEC2552000PE", CONFIG) == cal.ParsedSymbol(
        "BANK_NIFTY", "BANKNIFTY", D(2025, 12, 30), "PE", 52000
    )
    assert cal.parse_symbol("RELIANCE", CONFIG) is None
    assert cal.parse_symbol("BANKNIFTY", CONFIG) is None
    assert cal.parse_symbol("BANKNIFTY31FEB26FUT", CONFIG) is None
    assert cal.instrument_for_symbol("GOLDM05JAN26FUT", CONFIG, "NFO") is None
    inst = cal.instrument_for_symbol("GOLDM05JAN26FUT", CONFIG, "MCX")
    assert inst is not None and inst.id == "GOLD_MINI"


def test_display_and_next_month() -> None:
    assert cal.display_month("2025-12") == "DEC25"
    assert cal.display_month(D(2026, 1, 27)) == "JAN26"
    assert cal.next_month(2025, 12) == (2026, 1)
    assert cal.next_month(2026, 1) == (2026, 2)


@pytest.mark.parametrize(
    ("today", "days"),
    [(D(2025, 12, 23), 7), (D(2025, 12, 24), 6), (D(2025, 12, 30), 0), (D(2025, 12, 31), 0)],
)
def test_days_to_expiry(today: dt.date, days: int) -> None:
    assert cal.days_to_expiry(D(2025, 12, 30), today) == days


@pytest.mark.parametrize(
    ("at", "expiry", "lot"),
    [
        (dt.datetime(2025, 11, 10, 10, 0, tzinfo=IST), "25NOV25", 35),
        (dt.datetime(2025, 11, 20, 10, 0, tzinfo=IST), "30DEC25", 30),
        # IST 2025-11-19 01:30: the UTC date 11-18 would give 25NOV25 (7 days).
        (dt.datetime(2025, 11, 18, 20, 0, tzinfo=dt.UTC), "30DEC25", 30),
        (dt.datetime(2025, 11, 18, 12, 0, tzinfo=dt.UTC), "25NOV25", 35),
    ],
)
def test_entry_contract_bank_nifty(at: dt.datetime, expiry: str, lot: int) -> None:
    contract = cal.entry_contract(BN, at, CONFIG)
    assert (cal.format_expiry(contract.expiry), contract.lot_size) == (expiry, lot)
    assert contract.point_value == float(lot)


def test_entry_contract_gold_and_naive_time() -> None:
    contract = cal.entry_contract(GOLD, dt.datetime(2025, 11, 28, 10, 0), CONFIG)
    assert cal.format_expiry(contract.expiry) == "05JAN26"
    assert cal.entry_contract(GOLD, dt.datetime(2025, 11, 27, 10), CONFIG).expiry == D(2025, 12, 5)


@pytest.mark.parametrize(
    ("calendar_name", "at", "is_open"),
    [
        ("BANK_NIFTY", dt.datetime(2025, 12, 15, 9, 14, 59), False),
        ("BANK_NIFTY", dt.datetime(2025, 12, 15, 9, 15, 0), True),
        ("BANK_NIFTY", dt.datetime(2025, 12, 15, 10, 0), True),
        ("BANK_NIFTY", dt.datetime(2025, 12, 15, 15, 30, 0), True),
        ("BANK_NIFTY", dt.datetime(2025, 12, 15, 15, 30, 1), False),
        ("GOLD_MINI", dt.datetime(2025, 12, 15, 20, 0), True),
        ("GOLD_MINI", dt.datetime(2025, 12, 15, 23, 30, 0), True),
        ("GOLD_MINI", dt.datetime(2025, 12, 15, 23, 30, 1), False),
        ("BANK_NIFTY", dt.datetime(2025, 12, 20, 10, 0), False),
        ("GOLD_MINI", dt.datetime(2025, 12, 21, 20, 0), False),
    ],
)
def test_sessions(calendar_name: str, at: dt.datetime, is_open: bool) -> None:
    assert cal.is_session_open(CONFIG.instrument(calendar_name), at, CONFIG) is is_open


def test_session_uses_exchange_local_time() -> None:
    # 04:30 UTC = 10:00 IST
    assert cal.is_session_open(BN, dt.datetime(2025, 12, 15, 4, 30, tzinfo=dt.UTC), CONFIG)
    assert not cal.is_session_open(BN, dt.datetime(2025, 12, 15, 10, 1, tzinfo=dt.UTC), CONFIG)


def test_holiday_closures() -> None:
    day = D(2026, 1, 26)
    config = with_holidays(("NSE", day, "full"), ("MCX", day, "morning"))
    at = dt.datetime.combine(day, dt.time(10, 0))
    assert not cal.is_session_open(BN, at, config)
    assert not cal.is_session_open(GOLD, at, config)
    assert not cal.is_session_open(GOLD, at.replace(hour=17), config)
    assert cal.is_session_open(GOLD, at.replace(hour=17, second=1), config)
    evening = with_holidays(("MCX", day, "evening"))
    assert cal.is_session_open(GOLD, at.replace(hour=17), evening)
    assert not cal.is_session_open(GOLD, at.replace(hour=20), evening)
    assert cal.is_session_open(BN, at, evening)


def test_load_holidays() -> None:
    text = (
        "calendar,date,description,closed\n"
        "NSE,2026-01-26,Republic Day,full\n"
        "\n"
        "# comment\n"
        'NSE,2026-10-02,"Gandhi Jayanti, holiday",full\n'
        "MCX,2026-01-26,Republic Day,morning\n"
    )
    rows = cal.load_holidays(text)
    assert rows == (
        Holiday("NSE", D(2026, 1, 26), "Republic Day", "full"),
        Holiday("NSE", D(2026, 10, 2), "Gandhi Jayanti, holiday", "full"),
        Holiday("MCX", D(2026, 1, 26), "Republic Day", "morning"),
    )


def test_load_holidays_reports_every_bad_line() -> None:
    text = (
        "NSE,2026-02-30,x,full\nNSE,2026-01-26,x,partial\nNSE,2026-01-26\nNSE,2026-01-27,ok,full\n"
    )
    with pytest.raises(ConfigError) as info:
        cal.load_holidays(text)
    fields = [f for f, _ in info.value.errors]
    assert fields == ["holidays line 1.date", "holidays line 2.closed", "holidays line 3"]


def test_no_holidays_by_default() -> None:
    assert CONFIG.holidays == ()
    assert cal.expiry_for(BN, 2026, 1, CONFIG) == D(2026, 1, 27)


holiday_sets = st.frozensets(
    st.dates(min_value=D(2024, 1, 1), max_value=D(2030, 12, 31)), max_size=40
)


@given(
    st.integers(min_value=2024, max_value=2030),
    st.integers(min_value=1, max_value=12),
    holiday_sets,
    st.sampled_from(["BANK_NIFTY", "GOLD_MINI"]),
)
def test_expiry_never_on_weekend_or_full_holiday(
    year: int, month: int, holidays: frozenset[dt.date], instrument: str
) -> None:
    inst = CONFIG.instrument(instrument)
    config = attrs.evolve(
        CONFIG, holidays=tuple(Holiday(inst.calendar, d, "h", "full") for d in holidays)
    )
    # Days 1..5 hold at most two weekend days, so two holidays in them still leave a trading day.
    in_month = [d for d in holidays if (d.year, d.month) == (year, month) and d.day <= 5]
    expiry = cal.expiry_for(inst, year, month, config)
    assert expiry.weekday() < 5
    assert expiry not in holidays
    if instrument == "BANK_NIFTY" or len(in_month) <= 2:
        assert (expiry.year, expiry.month) == (year, month)


def bn_position(expiry: dt.date, **changes: Any) -> Position:
    base = Position(
        id=1,
        instrument="BANK_NIFTY",
        label="Long_1",
        status="open",
        is_base_position=True,
        lots=3,
        quantity=90,
        lot_size=30,
        point_value=30.0,
        entry_timestamp=dt.datetime(2025, 12, 1, 10, tzinfo=IST),
        entry_price=52000.0,
        initial_stop=51000.0,
        current_stop=51000.0,
        highest_close=52000.0,
        atr=350.0,
        basis=52000.0,
        contract_month=f"{expiry.year:04d}-{expiry.month:02d}",
        expiry=expiry,
        strike=52000.0,
    )
    return attrs.evolve(base, **changes)


def at_ist(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(10, 0), tzinfo=IST)


def test_scanner_bank_nifty_window() -> None:
    pos = bn_position(D(2025, 12, 30))
    assert cal.rollover_candidates([pos], CONFIG, at_ist(D(2025, 12, 23))) == ()
    assert cal.rollover_candidates([pos], CONFIG, at_ist(D(2025, 12, 10))) == ()
    (found,) = cal.rollover_candidates([pos], CONFIG, at_ist(D(2025, 12, 24)))
    assert cal.format_expiry(found.next_expiry) == "27JAN26"
    assert found.next_month == "2026-01"
    assert found.message == "Within 7-day rollover window (6 days to expiry)"
    assert found.days_to_expiry == 6 and not found.manual_only


def test_scanner_gold_window() -> None:
    pos = attrs.evolve(
        bn_position(D(2025, 12, 5)), instrument="GOLD_MINI", contract_month="2025-12"
    )
    assert cal.rollover_candidates([pos], CONFIG, at_ist(D(2025, 11, 27))) == ()
    (found,) = cal.rollover_candidates([pos], CONFIG, at_ist(D(2025, 11, 28)))
    assert found.days_to_expiry == 7
    assert cal.format_expiry(found.next_expiry) == "05JAN26"


def test_scanner_expired_in_progress_failed_rolled() -> None:
    expiry = D(2025, 12, 30)
    (expired,) = cal.rollover_candidates([bn_position(expiry)], CONFIG, at_ist(D(2025, 12, 31)))
    assert expired.reason.code == "contract_expired" and expired.manual_only
    (on_day,) = cal.rollover_candidates([bn_position(expiry)], CONFIG, at_ist(expiry))
    assert on_day.reason.code == "rollover_window" and on_day.days_to_expiry == 0
    busy = bn_position(expiry, rollover_status="in_progress")
    assert cal.rollover_candidates([busy], CONFIG, at_ist(D(2025, 12, 24))) == ()
    failed = bn_position(
        expiry, rollover_status="failed", rollover_step=1, rollover_target_expiry=D(2026, 1, 27)
    )
    (resume,) = cal.rollover_candidates([failed], CONFIG, at_ist(D(2025, 12, 1)))
    assert resume.resume and resume.next_expiry == D(2026, 1, 27)
    rolled = bn_position(D(2026, 1, 27), rollover_status="rolled", contract_month="2026-01")
    assert cal.rollover_candidates([rolled], CONFIG, at_ist(D(2025, 12, 24))) == ()
    (due,) = cal.rollover_candidates([rolled], CONFIG, at_ist(D(2026, 1, 21)))
    assert due.next_month == "2026-02"
    closed = bn_position(expiry, status="closed")
    assert cal.rollover_candidates([closed], CONFIG, at_ist(D(2025, 12, 24))) == ()


def test_scanner_orders_by_instrument_then_label_number() -> None:
    day = at_ist(D(2025, 12, 24))
    positions = [
        bn_position(D(2025, 12, 30), id=3, label="Long_10"),
        bn_position(D(2025, 12, 30), id=2, label="Long_2"),
        attrs.evolve(
            bn_position(D(2025, 12, 30)), id=4, instrument="GOLD_MINI", contract_month="2025-12"
        ),
        bn_position(D(2025, 12, 30), id=1, label="Long_1"),
    ]
    found = cal.rollover_candidates(positions, CONFIG, day)
    assert [(c.instrument, c.label) for c in found] == [
        ("BANK_NIFTY", "Long_1"),
        ("BANK_NIFTY", "Long_2"),
        ("BANK_NIFTY", "Long_10"),
        ("GOLD_MINI", "Long_1"),
    ]
