"""Expiry calendar, contract choice, OpenAlgo symbols and market sessions (domain 9.1-9.4, 9.12)."""

from __future__ import annotations

import calendar as _stdcal
import csv
import datetime as dt
import io
import re
from collections.abc import Iterable
from typing import Literal, cast

import attrs

from pm_core.config import DomainConfig, Holiday, HolidayClosure, InstrumentConfig, derived
from pm_core.errors import ConfigError
from pm_core.model import Code, Position, label_number

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_MONTH_INDEX = {name: i + 1 for i, name in enumerate(MONTHS)}
_DDMMMYY = re.compile(r"(\d{2})([A-Za-z]{3})(\d{2})")
_ISO = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_CLOSURES: tuple[HolidayClosure, ...] = ("full", "morning", "evening")
_SEARCH_MONTHS = 24  # how far entry_contract looks ahead before giving up

SymbolKind = Literal["CE", "PE", "FUT"]


@attrs.frozen
class Contract:
    """One expiry of an instrument, with the lot size and point value it trades at."""

    instrument: str
    month: str  # YYYY-MM
    expiry: dt.date
    lot_size: int
    point_value: float


@attrs.frozen
class ParsedSymbol:
    """An OpenAlgo symbol split into instrument, expiry, kind and (options) integer strike."""

    instrument: str
    root: str
    expiry: dt.date
    kind: SymbolKind
    strike: int | None = None


@attrs.frozen
class RolloverCandidate:
    """A position the scanner found due for a roll, with why (domain 9.12)."""

    position_id: int
    instrument: str
    label: str
    expiry: dt.date
    days_to_expiry: int
    next_month: str  # YYYY-MM of the target contract
    next_expiry: dt.date
    reason: Code
    resume: bool = False  # a failed roll to pick up at its first incomplete step
    manual_only: bool = False  # contract_expired: never rolled automatically

    @property
    def message(self) -> str:
        """The scanner's human reason."""
        return candidate_message(self.reason)


# --------------------------------------------------------------------------- months and expiries


def month_key(year: int, month: int) -> str:
    """Contract month as ``YYYY-MM``."""
    return f"{year:04d}-{month:02d}"


def parse_month_key(text: str) -> tuple[int, int]:
    """``YYYY-MM`` -> (year, month); ValueError when malformed."""
    match = re.fullmatch(r"(\d{4})-(\d{2})", text)
    if match is None or not 1 <= int(match.group(2)) <= 12:
        raise ValueError(f"contract month must be YYYY-MM, got {text!r}")
    return int(match.group(1)), int(match.group(2))


def next_month(year: int, month: int) -> tuple[int, int]:
    """The month after (year, month); December rolls into January of the next year."""
    return (year + 1, 1) if month == 12 else (year, month + 1)


def _previous_month(year: int, month: int) -> tuple[int, int]:
    return (year - 1, 12) if month == 1 else (year, month - 1)


def closed_days(config: DomainConfig, calendar_name: str) -> frozenset[dt.date]:
    """Dates a calendar's ``full`` holidays close completely (the only ones that move expiries)."""
    return frozenset(
        h.date for h in config.holidays if h.calendar == calendar_name and h.closed == "full"
    )


def _rule_date(instrument: InstrumentConfig, year: int, month: int) -> dt.date:
    last_day = _stdcal.monthrange(year, month)[1]
    rule = instrument.expiry_rule
    if rule.kind == "last_weekday":
        last = dt.date(year, month, last_day)
        return last - dt.timedelta(days=(last.weekday() - rule.value) % 7)
    return dt.date(year, month, min(rule.value, last_day))


def expiry_for(
    instrument: InstrumentConfig, year: int, month: int, config: DomainConfig
) -> dt.date:
    """Expiry of (instrument, YYYY-MM): override, else the rule date moved back over closures."""
    override = instrument.expiry_overrides.get(month_key(year, month))
    if override is not None:
        return override
    closed = closed_days(config, instrument.calendar)
    day = _rule_date(instrument, year, month)
    while day.weekday() >= 5 or day in closed:
        day -= dt.timedelta(days=1)
    return day


def contract_for(
    instrument: InstrumentConfig, year: int, month: int, config: DomainConfig
) -> Contract:
    """The contract of a month with its lot size and point value (domain 2.2)."""
    if config.instruments.get(instrument.id) is not instrument:
        return _contract_for(instrument, year, month, config)
    # Every base entry of a backtest looks at two or three months; the answer is pure.
    memo = derived(config, "contract_for")
    key = (instrument.id, year, month)
    contract: Contract | None = memo.get(key)
    if contract is None:
        contract = memo[key] = _contract_for(instrument, year, month, config)
    return contract


def _contract_for(
    instrument: InstrumentConfig, year: int, month: int, config: DomainConfig
) -> Contract:
    expiry = expiry_for(instrument, year, month, config)
    lot_size = instrument.lot_size_for(expiry)
    return Contract(
        instrument=instrument.id,
        month=month_key(year, month),
        expiry=expiry,
        lot_size=lot_size,
        point_value=lot_size / instrument.quote_unit,
    )


def next_contract(instrument: InstrumentConfig, month: str, config: DomainConfig) -> Contract:
    """The contract after the one of ``month`` (YYYY-MM): the roll target (domain 9.1)."""
    return contract_for(instrument, *next_month(*parse_month_key(month)), config)


def local_date(at: dt.datetime, config: DomainConfig) -> dt.date:
    """Exchange-local date of an instant (naive = already in the portfolio time zone)."""
    return local_datetime(at, config).date()


def local_datetime(at: dt.datetime, config: DomainConfig) -> dt.datetime:
    """An instant in the portfolio time zone (naive input is taken as already local)."""
    tz = config.portfolio.tz
    if at.tzinfo is None:
        return at.replace(tzinfo=tz)
    return at.astimezone(tz)


def entry_contract(instrument: InstrumentConfig, at: dt.datetime, config: DomainConfig) -> Contract:
    """Contract for a new base: earliest expiry not inside the rollover window (domain 9.4)."""
    today = local_date(at, config)
    # Start a month early: an override may push a month's expiry past its calendar month.
    year, month = _previous_month(today.year, today.month)
    for _ in range(_SEARCH_MONTHS):
        contract = contract_for(instrument, year, month, config)
        if (
            contract.expiry >= today
            and days_to_expiry(contract.expiry, today) >= instrument.rollover_days
        ):
            return contract
        year, month = next_month(year, month)
    raise ValueError(f"no {instrument.id} contract found within {_SEARCH_MONTHS} months of {today}")


def days_to_expiry(expiry: dt.date, today: dt.date) -> int:
    """max(0, whole days from ``today`` to ``expiry``)."""
    return max(0, (expiry - today).days)


def format_expiry(expiry: dt.date) -> str:
    """DDMMMYY upper-case: 2025-12-30 -> 30DEC25."""
    # Few expiries, formatted for every order symbol: remember them (errors are not cached).
    text = _EXPIRY_TEXT.get(expiry)
    if text is None:
        if not 2000 <= expiry.year <= 2099:
            raise ValueError(f"expiry year {expiry.year} cannot be written as DDMMMYY")
        text = f"{expiry.day:02d}{MONTHS[expiry.month - 1]}{expiry.year % 100:02d}"
        if len(_EXPIRY_TEXT) < 4096:
            _EXPIRY_TEXT[expiry] = text
    return text


_EXPIRY_TEXT: dict[dt.date, str] = {}


def parse_expiry(text: str) -> dt.date | None:
    """DDMMMYY (any case) or ISO YYYY-MM-DD; None if impossible or malformed."""
    match = _DDMMMYY.fullmatch(text)
    if match is not None:
        month = _MONTH_INDEX.get(match.group(2).upper())
        if month is None:
            return None
        return _date_or_none(2000 + int(match.group(3)), month, int(match.group(1)))
    match = _ISO.fullmatch(text)
    if match is not None:
        return _date_or_none(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    return None


def _date_or_none(year: int, month: int, day: int) -> dt.date | None:
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


def display_month(month: str | dt.date) -> str:
    """Display contract month MMMYY: ``2025-12`` or a December 2025 date -> DEC25."""
    if isinstance(month, dt.date):
        year, mon = month.year, month.month
    else:
        year, mon = parse_month_key(month)
    return f"{MONTHS[mon - 1]}{year % 100:02d}"


# --------------------------------------------------------------------------- symbols


def _strike_text(strike: float) -> str:
    value = float(strike)
    if not value.is_integer() or value <= 0:
        raise ValueError(f"OpenAlgo option strikes are positive integers, got {strike!r}")
    return str(int(value))


def option_symbol(root: str, expiry: dt.date, strike: float, kind: str) -> str:
    """<root><DDMMMYY><strike><CE|PE>, integer strike: BANKNIFTY30DEC2552000PE."""
    if kind not in ("CE", "PE"):
        raise ValueError(f"option kind must be CE or PE, got {kind!r}")
    return f"{root}{format_expiry(expiry)}{_strike_text(strike)}{kind}"


def futures_symbol(root: str, expiry: dt.date) -> str:
    """<root><DDMMMYY>FUT: GOLDM05JAN26FUT."""
    return f"{root}{format_expiry(expiry)}FUT"


def _roots_longest_first(config: DomainConfig) -> list[InstrumentConfig]:
    return sorted(config.instruments.values(), key=lambda i: len(i.symbol_root), reverse=True)


def instrument_for_symbol(
    symbol: str, config: DomainConfig, exchange: str | None = None
) -> InstrumentConfig | None:
    """The instrument whose root starts ``symbol`` directly followed by 2 digits, longest first.

    With ``exchange`` only instruments ordered on that exchange qualify.
    """
    for inst in _roots_longest_first(config):
        if exchange is not None and inst.exchange != exchange:
            continue
        root = inst.symbol_root
        rest = symbol[len(root) :]
        if symbol.startswith(root) and len(rest) >= 2 and rest[:2].isdigit():
            return inst
    return None


def parse_symbol(symbol: str, config: DomainConfig) -> ParsedSymbol | None:
    """Split an option or futures symbol of a registered root; None if it is not one of ours."""
    for inst in _roots_longest_first(config):
        root = inst.symbol_root
        if not symbol.startswith(root):
            continue
        rest = symbol[len(root) :]
        if len(rest) < 2 or not rest[:2].isdigit():
            continue
        expiry = parse_expiry(rest[:7]) if len(rest) >= 7 else None
        if expiry is None:
            return None
        tail = rest[7:]
        if tail == "FUT":
            return ParsedSymbol(inst.id, root, expiry, "FUT")
        match = re.fullmatch(r"([1-9]\d*)(CE|PE)", tail)
        if match is None:
            return None
        kind = cast(SymbolKind, match.group(2))
        return ParsedSymbol(inst.id, root, expiry, kind, int(match.group(1)))
    return None


# --------------------------------------------------------------------------- holidays and sessions


def load_holidays(text: str) -> tuple[Holiday, ...]:
    """Holiday rows from CSV ``calendar,date,description,closed``; ConfigError lists bad lines.

    A header row, blank lines and ``#`` comment lines are skipped.
    """
    holidays: list[Holiday] = []
    errors: list[tuple[str, str]] = []
    for line_no, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or all(not cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        cells = [cell.strip() for cell in row]
        if line_no == 1 and [c.lower() for c in cells[:2]] == ["calendar", "date"]:
            continue
        field = f"holidays line {line_no}"
        if len(cells) != 4:
            errors.append(
                (field, f"expected 4 columns (calendar,date,description,closed), got {len(cells)}")
            )
            continue
        calendar_name, date_text, description, closed = cells
        if not calendar_name:
            errors.append((f"{field}.calendar", "must not be empty"))
            continue
        date = _date_or_none_iso(date_text)
        if date is None:
            errors.append((f"{field}.date", f"must be YYYY-MM-DD, got {date_text!r}"))
            continue
        if closed not in _CLOSURES:
            errors.append((f"{field}.closed", f"must be full, morning or evening, got {closed!r}"))
            continue
        holidays.append(Holiday(calendar_name, date, description, closed))
    if errors:
        raise ConfigError(errors)
    return tuple(holidays)


def _date_or_none_iso(text: str) -> dt.date | None:
    match = _ISO.fullmatch(text)
    if match is None:
        return None
    return _date_or_none(int(match.group(1)), int(match.group(2)), int(match.group(3)))


def is_session_open(instrument: InstrumentConfig, at: dt.datetime, config: DomainConfig) -> bool:
    """Whether the instrument's exchange session is open at ``at`` (weekday, holidays, hours)."""
    local = local_datetime(at, config)
    day = local.date()
    if day.weekday() >= 5:
        return False
    session = config.sessions.get(instrument.calendar)
    if session is None:
        return False
    t = local.time().replace(tzinfo=None)
    if not session.start <= t <= session.end:
        return False
    for holiday in config.holidays:
        if holiday.calendar != instrument.calendar or holiday.date != day:
            continue
        if holiday.closed == "full":
            return False
        # Without a split session a partial closure leaves no open part of the day.
        if session.morning_end is None:
            return False
        if holiday.closed == "morning" and t <= session.morning_end:
            return False
        if holiday.closed == "evening" and t > session.morning_end:
            return False
    return True


# --------------------------------------------------------------------------- rollover scanner


def candidate_message(reason: Code) -> str:
    """Human text of a scanner reason code."""
    if reason.code == "rollover_window":
        return (
            f"Within {reason.params['N']}-day rollover window ({reason.params['d']} days to expiry)"
        )
    if reason.code == "contract_expired":
        return f"Contract expired on {reason.params['expiry']}: roll manually"
    if reason.code == "rollover_resume":
        return f"Resume failed roll after step {reason.params['step']}"
    return reason.code


def rollover_candidates(
    positions: Iterable[Position], config: DomainConfig, now: dt.datetime
) -> tuple[RolloverCandidate, ...]:
    """Positions due for a roll at ``now``, in (instrument, label) order (domain 9.12).

    Open positions whose expiry is inside the instrument's window, failed rolls (always, to
    resume) and expired contracts (``contract_expired``, manual only); rolls in progress are
    skipped. The caller still checks market hours and enable_auto_rollover.
    """
    today = local_date(now, config)
    found: list[RolloverCandidate] = []
    for pos in positions:
        if pos.expiry is None or pos.instrument not in config.instruments:
            continue
        if pos.status not in ("open", "partial") or pos.rollover_status == "in_progress":
            continue
        inst = config.instruments[pos.instrument]
        days = days_to_expiry(pos.expiry, today)
        if pos.rollover_status == "failed" and pos.rollover_target_expiry is not None:
            target = pos.rollover_target_expiry
            target_month = month_key(target.year, target.month)
        else:
            month = pos.contract_month or month_key(pos.expiry.year, pos.expiry.month)
            nxt = next_contract(inst, month, config)
            target, target_month = nxt.expiry, nxt.month
        resume = pos.rollover_status == "failed"
        if today > pos.expiry and not resume:
            reason = Code("contract_expired", {"expiry": format_expiry(pos.expiry)})
            manual = True
        elif resume:
            reason = Code("rollover_resume", {"step": pos.rollover_step})
            manual = False
        elif days < inst.rollover_days:
            reason = Code("rollover_window", {"N": inst.rollover_days, "d": days})
            manual = False
        else:
            continue
        found.append(
            RolloverCandidate(
                position_id=pos.id,
                instrument=pos.instrument,
                label=pos.label,
                expiry=pos.expiry,
                days_to_expiry=days,
                next_month=target_month,
                next_expiry=target,
                reason=reason,
                resume=resume,
                manual_only=manual,
            )
        )
    found.sort(key=lambda c: (c.instrument, label_number(c.label), c.label))
    return tuple(found)
