"""Expiry calendar, contract choice, OpenAlgo symbols and market sessions (domain 9.1-9.4, 9.12)."""

from __future__ import annotations

import datetime as dt

import attrs

from pm_core.config import DomainConfig, InstrumentConfig


@attrs.frozen
class Contract:
    """One expiry of an instrument, with the lot size and point value it trades at."""

    instrument: str
    month: str  # YYYY-MM
    expiry: dt.date
    lot_size: int
    point_value: float


def expiry_for(
    instrument: InstrumentConfig, year: int, month: int, config: DomainConfig
) -> dt.date:
    """Expiry of (instrument, YYYY-MM): override, else the rule date moved back over closures."""
    raise NotImplementedError


def contract_for(
    instrument: InstrumentConfig, year: int, month: int, config: DomainConfig
) -> Contract:
    """The contract of a month with its lot size and point value (domain 2.2)."""
    raise NotImplementedError


def entry_contract(instrument: InstrumentConfig, at: dt.datetime, config: DomainConfig) -> Contract:
    """Contract for a new base: earliest expiry not inside the rollover window (domain 9.4)."""
    raise NotImplementedError


def days_to_expiry(expiry: dt.date, today: dt.date) -> int:
    """max(0, whole days from ``today`` to ``expiry``)."""
    raise NotImplementedError


def format_expiry(expiry: dt.date) -> str:
    """DDMMMYY upper-case: 2025-12-30 -> 30DEC25."""
    raise NotImplementedError


def parse_expiry(text: str) -> dt.date | None:
    """DDMMMYY (any case) or ISO YYYY-MM-DD; None if impossible or malformed."""
    raise NotImplementedError


def option_symbol(root: str, expiry: dt.date, strike: float, kind: str) -> str:
    """<root><DDMMMYY><strike><CE|PE>, integer strike: BANKNIFTY30DEC2552000PE."""
    raise NotImplementedError


def futures_symbol(root: str, expiry: dt.date) -> str:
    """<root><DDMMMYY>FUT: GOLDM05JAN26FUT."""
    raise NotImplementedError


def is_session_open(instrument: InstrumentConfig, at: dt.datetime, config: DomainConfig) -> bool:
    """Whether the instrument's exchange session is open at ``at`` (weekday, holidays, hours)."""
    raise NotImplementedError
