"""Domain configuration: the instrument registry and the portfolio settings (domain spec section 2).

Instruments are data. Nothing in pm branches on an instrument id; a new market is a new
registry entry. ``load_config`` validates a TOML-shaped mapping and reports every bad field.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from pm_core.errors import ConfigError

InstrumentKind = Literal["synthetic_future", "future"]
QuantityUnit = Literal["units", "lots"]
EquityMode = Literal["closed", "open", "blended"]
EquitySource = Literal["portfolio", "broker"]
SizingMode = Literal["tom_basso", "as_signalled"]
PnlPriceSource = Literal["signal", "fill"]
HolidayClosure = Literal["full", "morning", "evening"]

WEEKDAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")


@attrs.frozen
class LotSizeEntry:
    """A lot size in force for contracts expiring on or after ``effective_from`` (None = always)."""

    effective_from: dt.date | None
    lot_size: int


@attrs.frozen
class ExpiryRule:
    """How an instrument's monthly expiry date is found (domain 9.1)."""

    kind: Literal["last_weekday", "day_of_month"]
    value: int  # weekday 0=Mon..6=Sun for last_weekday; day number for day_of_month


@attrs.frozen
class ReferenceQuote:
    """One entry of the strike-reference list; ``{next}``/``{cur}`` expand to DDMMMYY expiries."""

    symbol: str
    exchange: str


@attrs.frozen
class Holiday:
    """One exchange holiday row: ``calendar,date,description,closed`` (domain 9.2)."""

    calendar: str
    date: dt.date
    description: str
    closed: HolidayClosure


@attrs.frozen
class SessionHours:
    """Trading session of an exchange calendar, exchange-local times, bounds inclusive."""

    start: dt.time
    end: dt.time
    # MCX splits its day: the morning session ends here and the evening one starts after it.
    morning_end: dt.time | None = None


@attrs.frozen
class InstrumentConfig:
    """One registry entry (domain 2.1)."""

    id: str
    exchange: str
    kind: InstrumentKind
    symbol_root: str
    quote_unit: int
    lot_size_history: tuple[LotSizeEntry, ...]
    order_quantity_unit: QuantityUnit
    tick_size: float
    margin_per_lot: float
    initial_risk_percent: float
    initial_vol_percent: float
    ongoing_risk_percent: float
    ongoing_vol_percent: float
    initial_atr_mult: float
    trailing_atr_mult: float
    fallback_atr: float
    max_pyramids: int
    atr_pyramid_spacing: float
    pyramid_base_ratio: float
    pyramid_profit_fraction: float
    expiry_rule: ExpiryRule
    calendar: str
    rollover_days: int
    strike_interval: float | None = None
    freeze_quantity: int | None = None
    expiry_overrides: Mapping[str, dt.date] = attrs.field(factory=dict)
    reference_quotes: tuple[ReferenceQuote, ...] = ()
    enabled: bool = True
    product: str = "NRML"

    def lot_size_for(self, expiry: dt.date) -> int:
        """Lot size of the contract expiring on ``expiry``: the newest history entry in force."""
        best: LotSizeEntry | None = None
        for entry in self.lot_size_history:
            if entry.effective_from is not None and entry.effective_from > expiry:
                continue
            if (
                best is None
                or best.effective_from is None
                or (entry.effective_from is not None and entry.effective_from > best.effective_from)
            ):
                best = entry
        if best is None:
            # Validation guarantees an undated entry or an early enough one; fall back to the first.
            return self.lot_size_history[0].lot_size
        return best.lot_size

    def point_value_for(self, expiry: dt.date) -> float:
        """Rupees per lot per 1.0 price move of the contract expiring on ``expiry``."""
        return self.lot_size_for(expiry) / self.quote_unit

    def broker_quantity(self, lots: int, lot_size: int) -> int:
        """Broker order quantity for ``lots`` in this instrument's order quantity unit."""
        return lots * lot_size if self.order_quantity_unit == "units" else lots


@attrs.frozen
class PortfolioConfig:
    """Portfolio-wide settings (domain 2.3)."""

    initial_capital: float = 5_000_000.0
    timezone: str = "Asia/Kolkata"
    equity_mode: EquityMode = "blended"
    blended_unrealized_weight: float = 0.5
    equity_source: EquitySource = "portfolio"
    sizing_mode: SizingMode = "tom_basso"
    max_portfolio_risk_percent: float = 15.0
    max_portfolio_vol_percent: float = 5.0
    max_margin_utilization_percent: float = 60.0
    pyramid_risk_block_percent: float = 12.0
    pyramid_vol_block_percent: float = 4.0
    use_1r_gate: bool = True
    max_layers: int = 6
    exit_on_stop_hit: bool = False
    peel_off_report: bool = True
    enable_peel_off_orders: bool = False
    pnl_price_source: PnlPriceSource = "signal"
    duplicate_retention_days: int = 7
    near_duplicate_window_s: float = 60.0
    reconciliation_fail_closed: bool = True
    enable_auto_rollover: bool = True
    rollover_initial_buffer_pct: float = 0.25
    rollover_increment_pct: float = 0.05
    rollover_max_retries: int = 5
    rollover_retry_interval_s: float = 3.0
    rollover_market_fallback: bool = True
    # Service limit that decide() needs (service.md 2.6): entries queued longer are rejected.
    max_queue_age_s: float = 60.0

    @property
    def tz(self) -> ZoneInfo:
        """The portfolio time zone as a tzinfo."""
        return _zone(self.timezone)


@attrs.frozen
class DomainConfig:
    """Everything the pure rules need: the portfolio settings, the registry and the calendars."""

    portfolio: PortfolioConfig
    instruments: Mapping[str, InstrumentConfig]  # registry order is meaningful (messages)
    sessions: Mapping[str, SessionHours]
    holidays: tuple[Holiday, ...] = ()

    def instrument(self, instrument_id: str) -> InstrumentConfig:
        """The registry entry for ``instrument_id`` (KeyError if unregistered)."""
        return self.instruments[instrument_id]

    @property
    def labels(self) -> tuple[str, ...]:
        """Valid position labels, ``Long_1``..``Long_{max_layers}``."""
        return tuple(f"Long_{n}" for n in range(1, self.portfolio.max_layers + 1))


_ZONES: dict[str, ZoneInfo] = {}

# Pure results derived from one configuration (contracts per date, ...), for the latest
# configuration seen. Configurations are immutable but unhashable (mapping fields), so they are
# matched by identity; the cache holds the configuration itself, so its id cannot be reused
# by another object while the entries live. Another configuration replaces the whole cache.
_DERIVED: tuple[DomainConfig | None, dict[str, dict[Any, Any]]] = (None, {})


def derived(config: DomainConfig, name: str) -> dict[Any, Any]:
    """A memo of pure results computed from ``config``, keyed by their other (hashable) inputs.

    Only for values that depend on nothing but ``config`` and the key; the dict is shared by
    every caller asking for ``name`` with the same configuration object.
    """
    global _DERIVED
    owner, memos = _DERIVED
    if owner is not config:
        memos = {}
        _DERIVED = (config, memos)
    memo = memos.get(name)
    if memo is None:
        memo = memos[name] = {}
    return memo


def _zone(name: str) -> ZoneInfo:
    zone = _ZONES.get(name)
    if zone is None:
        zone = _ZONES[name] = ZoneInfo(name)
    return zone


def bank_nifty() -> InstrumentConfig:
    """Default BANK_NIFTY entry: synthetic future on NFO (short ATM PE + long ATM CE)."""
    return InstrumentConfig(
        id="BANK_NIFTY",
        exchange="NFO",
        kind="synthetic_future",
        symbol_root="BANKNIFTY",
        quote_unit=1,
        lot_size_history=(
            LotSizeEntry(None, 35),
            LotSizeEntry(dt.date(2025, 12, 1), 30),
        ),
        order_quantity_unit="units",
        tick_size=0.05,
        margin_per_lot=270_000.0,
        initial_risk_percent=0.5,
        initial_vol_percent=0.5,
        ongoing_risk_percent=1.0,
        ongoing_vol_percent=0.7,
        initial_atr_mult=1.5,
        trailing_atr_mult=2.5,
        fallback_atr=350.0,
        max_pyramids=5,
        atr_pyramid_spacing=0.5,
        pyramid_base_ratio=0.5,
        pyramid_profit_fraction=0.5,
        strike_interval=500.0,
        expiry_rule=ExpiryRule("last_weekday", 1),
        calendar="NSE",
        rollover_days=7,
        reference_quotes=(
            ReferenceQuote("BANKNIFTY{next}FUT", "NFO"),
            ReferenceQuote("BANKNIFTY{cur}FUT", "NFO"),
            ReferenceQuote("BANKNIFTY", "NSE_INDEX"),
        ),
    )


def gold_mini() -> InstrumentConfig:
    """Default GOLD_MINI entry: MCX futures, quoted per 10 g, 100 g lots."""
    return InstrumentConfig(
        id="GOLD_MINI",
        exchange="MCX",
        kind="future",
        symbol_root="GOLDM",
        quote_unit=10,
        lot_size_history=(LotSizeEntry(None, 100),),
        order_quantity_unit="lots",
        tick_size=1.0,
        margin_per_lot=105_000.0,
        initial_risk_percent=0.5,
        initial_vol_percent=0.2,
        ongoing_risk_percent=1.0,
        ongoing_vol_percent=0.3,
        initial_atr_mult=1.0,
        trailing_atr_mult=2.0,
        fallback_atr=450.0,
        max_pyramids=3,
        atr_pyramid_spacing=0.5,
        pyramid_base_ratio=0.5,
        pyramid_profit_fraction=0.5,
        expiry_rule=ExpiryRule("day_of_month", 5),
        calendar="MCX",
        rollover_days=8,
    )


def default_sessions() -> dict[str, SessionHours]:
    """NSE 09:15-15:30; MCX 09:00-23:30 with the morning session to 17:00 (domain 2.3)."""
    return {
        "NSE": SessionHours(dt.time(9, 15), dt.time(15, 30)),
        "MCX": SessionHours(dt.time(9, 0), dt.time(23, 30), morning_end=dt.time(17, 0)),
    }


def default_config(**portfolio_overrides: Any) -> DomainConfig:
    """The shipped configuration: BANK_NIFTY and GOLD_MINI, default portfolio, no holidays."""
    return DomainConfig(
        portfolio=PortfolioConfig(**portfolio_overrides),
        instruments={"BANK_NIFTY": bank_nifty(), "GOLD_MINI": gold_mini()},
        sessions=default_sessions(),
    )


# --------------------------------------------------------------------------- loading


_INSTRUMENT_FIELDS = {f.name for f in attrs.fields(InstrumentConfig)} - {"id"}
_PORTFOLIO_FIELDS = {f.name for f in attrs.fields(PortfolioConfig)}


def load_config(data: Mapping[str, Any]) -> DomainConfig:
    """Build a DomainConfig from ``[portfolio]``, ``[instruments.<ID>]``, ``[calendars]`` tables.

    Instrument tables for registered ids override the defaults field by field; new ids must
    give every required field. Raises ConfigError listing every bad field.
    """
    errors: list[tuple[str, str]] = []
    base = default_config()
    portfolio_data = dict(data.get("portfolio", {}) or {})
    for key in sorted(set(portfolio_data) - _PORTFOLIO_FIELDS):
        errors.append((f"portfolio.{key}", "unknown key"))
        portfolio_data.pop(key)
    try:
        portfolio = PortfolioConfig(**portfolio_data)
    except (TypeError, ValueError) as exc:
        errors.append(("portfolio", str(exc)))
        portfolio = PortfolioConfig()

    instruments: dict[str, InstrumentConfig] = dict(base.instruments)
    for raw_id, table in (data.get("instruments", {}) or {}).items():
        inst_id = str(raw_id).strip().upper()
        prefix = f"instruments.{inst_id}"
        if not isinstance(table, Mapping):
            errors.append((prefix, "must be a table"))
            continue
        fields = dict(table)
        for key in sorted(set(fields) - _INSTRUMENT_FIELDS):
            errors.append((f"{prefix}.{key}", "unknown key"))
            fields.pop(key)
        try:
            converted = _convert_instrument_fields(fields)
        except (TypeError, ValueError, KeyError) as exc:
            errors.append((prefix, str(exc)))
            continue
        existing = instruments.get(inst_id)
        try:
            if existing is not None:
                instruments[inst_id] = attrs.evolve(existing, **converted)
            else:
                instruments[inst_id] = InstrumentConfig(id=inst_id, **converted)
        except TypeError as exc:
            errors.append((prefix, f"missing or bad fields: {exc}"))

    sessions = dict(base.sessions)
    holidays: list[Holiday] = []
    for cal, table in (data.get("calendars", {}) or {}).items():
        try:
            if "start" in table and "end" in table:
                sessions[cal] = SessionHours(
                    _time(table["start"]),
                    _time(table["end"]),
                    _time(table["morning_end"]) if table.get("morning_end") else None,
                )
            for row in table.get("holidays", []):
                holidays.append(
                    Holiday(
                        cal,
                        dt.date.fromisoformat(str(row["date"])),
                        str(row.get("description", "")),
                        row.get("closed", "full"),
                    )
                )
        except (TypeError, ValueError, KeyError) as exc:
            errors.append((f"calendars.{cal}", str(exc)))

    config = DomainConfig(portfolio, instruments, sessions, tuple(holidays))
    errors.extend(validate_config(config))
    if errors:
        raise ConfigError(errors)
    return config


def _time(value: Any) -> dt.time:
    return value if isinstance(value, dt.time) else dt.time.fromisoformat(str(value))


def _convert_instrument_fields(fields: dict[str, Any]) -> dict[str, Any]:
    out = dict(fields)
    if "lot_size_history" in out:
        out["lot_size_history"] = tuple(
            LotSizeEntry(
                dt.date.fromisoformat(str(e["effective_from"]))
                if e.get("effective_from")
                else None,
                int(e["lot_size"]),
            )
            for e in out["lot_size_history"]
        )
    if "expiry_rule" in out:
        rule = out["expiry_rule"]
        if isinstance(rule, Mapping):
            kind = rule["kind"]
            value = rule["value"]
            if kind == "last_weekday" and isinstance(value, str):
                value = WEEKDAYS.index(value.upper())
            out["expiry_rule"] = ExpiryRule(kind, int(value))
    if "expiry_overrides" in out:
        out["expiry_overrides"] = {
            str(k): v if isinstance(v, dt.date) else dt.date.fromisoformat(str(v))
            for k, v in out["expiry_overrides"].items()
        }
    if "reference_quotes" in out:
        out["reference_quotes"] = tuple(
            ReferenceQuote(str(q["symbol"]), str(q["exchange"])) for q in out["reference_quotes"]
        )
    for name in (
        "tick_size",
        "margin_per_lot",
        "initial_risk_percent",
        "initial_vol_percent",
        "ongoing_risk_percent",
        "ongoing_vol_percent",
        "initial_atr_mult",
        "trailing_atr_mult",
        "fallback_atr",
        "atr_pyramid_spacing",
        "pyramid_base_ratio",
        "pyramid_profit_fraction",
        "strike_interval",
    ):
        if out.get(name) is not None:
            out[name] = float(out[name])
    return out


def validate_config(config: DomainConfig) -> list[tuple[str, str]]:
    """Every bad field of ``config`` as (field, message); empty when valid (domain 2.1)."""
    errors: list[tuple[str, str]] = []
    p = config.portfolio
    try:
        _zone(p.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        errors.append(("portfolio.timezone", f"unknown time zone {p.timezone!r}"))
    for name in (
        "initial_capital",
        "max_portfolio_risk_percent",
        "max_portfolio_vol_percent",
        "max_margin_utilization_percent",
        "pyramid_risk_block_percent",
        "pyramid_vol_block_percent",
    ):
        if not _positive(getattr(p, name)):
            errors.append((f"portfolio.{name}", "must be > 0"))
    if not (0.0 <= p.blended_unrealized_weight <= 1.0):
        errors.append(("portfolio.blended_unrealized_weight", "must be in [0, 1]"))
    if not isinstance(p.max_layers, int) or p.max_layers < 1:
        errors.append(("portfolio.max_layers", "must be an integer >= 1"))
    for name in ("duplicate_retention_days", "near_duplicate_window_s", "max_queue_age_s"):
        if getattr(p, name) < 0:
            errors.append((f"portfolio.{name}", "must be >= 0"))
    _check_choice(errors, "portfolio.equity_mode", p.equity_mode, ("closed", "open", "blended"))
    _check_choice(errors, "portfolio.equity_source", p.equity_source, ("portfolio", "broker"))
    _check_choice(errors, "portfolio.sizing_mode", p.sizing_mode, ("tom_basso", "as_signalled"))
    _check_choice(errors, "portfolio.pnl_price_source", p.pnl_price_source, ("signal", "fill"))

    for inst_id, inst in config.instruments.items():
        pre = f"instruments.{inst_id}"
        if inst_id != inst_id.upper() or not inst_id:
            errors.append((pre, "instrument ids are upper-case"))
        _check_choice(errors, f"{pre}.kind", inst.kind, ("synthetic_future", "future"))
        _check_choice(
            errors, f"{pre}.order_quantity_unit", inst.order_quantity_unit, ("units", "lots")
        )
        if not _positive_int(inst.quote_unit):
            errors.append((f"{pre}.quote_unit", "must be a positive integer"))
        if not inst.lot_size_history:
            errors.append((f"{pre}.lot_size_history", "must not be empty"))
        for i, entry in enumerate(inst.lot_size_history):
            if not _positive_int(entry.lot_size):
                errors.append(
                    (f"{pre}.lot_size_history[{i}].lot_size", "must be a positive integer")
                )
        if inst.freeze_quantity is not None and not _positive_int(inst.freeze_quantity):
            errors.append((f"{pre}.freeze_quantity", "must be a positive integer"))
        for name in (
            "tick_size",
            "margin_per_lot",
            "initial_risk_percent",
            "initial_vol_percent",
            "ongoing_risk_percent",
            "ongoing_vol_percent",
            "initial_atr_mult",
            "trailing_atr_mult",
            "fallback_atr",
        ):
            if not _positive(getattr(inst, name)):
                errors.append((f"{pre}.{name}", "must be > 0"))
        for name in ("pyramid_base_ratio", "pyramid_profit_fraction"):
            value = getattr(inst, name)
            if not (0.0 < value <= 1.0):
                errors.append((f"{pre}.{name}", "must be in (0, 1]"))
        if not isinstance(inst.max_pyramids, int) or inst.max_pyramids < 0:
            errors.append((f"{pre}.max_pyramids", "must be an integer >= 0"))
        if inst.atr_pyramid_spacing < 0:
            errors.append((f"{pre}.atr_pyramid_spacing", "must be >= 0"))
        if inst.rollover_days < 0:
            errors.append((f"{pre}.rollover_days", "must be >= 0"))
        if inst.kind == "synthetic_future" and not _positive(inst.strike_interval or 0):
            errors.append((f"{pre}.strike_interval", "required (> 0) for synthetic_future"))
        if inst.expiry_rule.kind == "last_weekday" and not 0 <= inst.expiry_rule.value <= 6:
            errors.append((f"{pre}.expiry_rule", "weekday must be MON..SUN"))
        if inst.expiry_rule.kind == "day_of_month" and not 1 <= inst.expiry_rule.value <= 31:
            errors.append((f"{pre}.expiry_rule", "day must be 1..31"))
        if inst.calendar not in config.sessions:
            errors.append((f"{pre}.calendar", f"unknown calendar {inst.calendar!r}"))
    return errors


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_choice(
    errors: list[tuple[str, str]], field: str, value: object, allowed: tuple[str, ...]
) -> None:
    if value not in allowed:
        errors.append((field, f"must be one of {', '.join(allowed)}, got {value!r}"))
