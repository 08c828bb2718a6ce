"""Reason codes: their outcomes and message templates (domain 6.4, 13.5)."""

from __future__ import annotations

import math
import string
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pm_core.model import Code

# code -> (outcome, template); templates use Python format specs over the code's params.
_CODES: dict[str, tuple[str, str]] = {
    "instrument_disabled": ("rejected", "Instrument {instrument} is disabled"),
    "instrument_blocked": ("rejected", "New entries on {instrument} are blocked ({reason})"),
    "position_already_open": ("rejected", "Position {key} is already open"),
    "base_already_open": ("rejected", "{instrument} already has an open base position {key}"),
    "position_not_open": ("rejected", "Position {key} is not open"),
    "stale_in_queue": ("rejected", "Queued longer than {max_age}s"),
    "no_base_position": ("blocked", "No base position"),
    "max_pyramids_reached": ("blocked", "Max pyramids reached ({open}/{max})"),
    "invalid_risk": ("blocked", "Stop {stop} is not below price {price}"),
    "invalid_volatility": ("blocked", "ATR must be > 0 to size (got {atr})"),
    "zero_lots": ("blocked", "Zero lots (limited by {limiter})"),
    "equity_non_positive": ("blocked", "Equity \u20b9{equity:,.0f} is not positive"),
    "portfolio_risk_limit": ("blocked", "Portfolio risk would be {x:.1f}% (limit: {limit:.1f}%)"),
    "portfolio_vol_limit": (
        "blocked",
        "Portfolio volatility would be {x:.1f}% (limit: {limit:.1f}%)",
    ),
    "invalid_initial_risk": ("blocked", "Invalid initial risk"),
    "price_not_above_1r": ("blocked", "Price not > 1R (moved {move:.0f}, need {r:.0f})"),
    "atr_spacing": ("blocked", "ATR spacing {x:.3f} < {min}"),
    "pyramid_portfolio_risk": (
        "blocked",
        "Portfolio risk would be {x:.1f}% (block at {limit:.1f}%)",
    ),
    "pyramid_portfolio_vol": ("blocked", "Portfolio vol would be {x:.1f}% (block at {limit:.1f}%)"),
    "instrument_pnl_not_positive": ("blocked", "Instrument P&L not positive: \u20b9{pnl:,.0f}"),
    "pyramid_zero_lots": ("blocked", "Zero pyramid lots (limited by {limiter})"),
    "order_failed": ("failed", "Broker order failed: {detail}"),
    "broker_mode_mismatch": ("failed", "Broker mode {mode}, expected {expected}"),
    "abandoned_after_crash": ("failed", "Abandoned after a crash ({age:.0f}s old)"),
    # Not in domain 6.4: an entry whose contract cannot be named (year past 2099, strike 0).
    "no_contract": ("rejected", "No tradable contract for {instrument}: {detail}"),
    # str.format cannot slice, so render() supplies the 12-character prefix as fingerprint12.
    "duplicate_fingerprint": ("duplicate", "Signal already processed ({fingerprint12})"),
    "duplicate_near_window": (
        "duplicate",
        "Same instrument/type/position processed within {window}s ({original_ts})",
    ),
    "stop_fallback_atr": ("warning", "Signal stop {stop} unusable; ATR stop {effective} used"),
    "stop_hit": ("event", "Stop hit: price {price} < stop {stop}"),
    # Warnings named in domain 7.2 and 11.2 (no template there).
    "equity_fallback": ("warning", "Broker equity unavailable ({reason}); portfolio equity used"),
    "atr_fallback": ("warning", "ATR missing; fallback ATR {atr} used"),
    # Rollover codes (domain 9.12, 9.13); only the first three have spec templates.
    "outside_market_hours": ("rejected", "Outside market hours"),
    "no_reference_price": ("failed", "Could not get reference price (tried: {symbols})"),
    "quote_unavailable": ("failed", "Could not get LTP for {symbol}"),
    "leg_failed": ("failed", "Failed to {step}: {detail}"),
    "leg_timeout": ("failed", "Leg not filled before the limit ladder ran out"),
    "contract_expired": ("rejected", "Contract expired; roll it manually"),
    "rolled": ("event", "Rolled"),
    "rollover_window": ("event", "Within {N}-day rollover window ({d} days to expiry)"),
    "not_found": ("rejected", "Not found"),
}

_NO_OPEN_FOR_INSTRUMENT = "No open positions for {instrument}"

# Domain 13.5: these placeholders print as the shortest round-trip decimal with a point.
_FLOAT_FIELDS = frozenset({"stop", "price", "atr", "effective", "min"})

_PARSED: dict[str, list[tuple[str, str | None, str | None, str | None]]] = {}


def render(code: Code) -> str:
    """The human message of a reason code, its placeholders filled from ``code.params``."""
    entry = _CODES.get(code.code)
    if entry is None:
        return code.code
    params: Mapping[str, Any] = code.params
    template = entry[1]
    if code.code == "position_not_open" and "key" not in params and "instrument" in params:
        template = _NO_OPEN_FOR_INSTRUMENT
    elif code.code == "duplicate_fingerprint":
        params = {**params, "fingerprint12": str(params.get("fingerprint", "?"))[:12]}
    try:
        return _fill(template, params)
    except Exception:  # a message must never break a decision
        return code.code


def outcome_of(code: str) -> str:
    """The outcome a reason code implies (blocked, rejected, failed, duplicate, warning, event)."""
    entry = _CODES.get(code)
    # An unknown code changes nothing, which is what "rejected" means.
    return entry[0] if entry is not None else "rejected"


def format_float(value: float) -> str:
    """Shortest round-trip decimal with a decimal point: 53000.0, 0.333 (domain 13.5)."""
    value = float(value)
    text = repr(value)
    if not math.isfinite(value) or "e" not in text:
        return text
    # repr switched to exponent form (1e+16, 1e-07): write the same digits positionally.
    plain = format(Decimal(text), "f")
    return plain if "." in plain else plain + ".0"


def _fill(template: str, params: Mapping[str, Any]) -> str:
    parsed = _PARSED.get(template)
    if parsed is None:
        parsed = _PARSED[template] = list(string.Formatter().parse(template))
    out: list[str] = []
    for literal, field, spec, _conversion in parsed:
        out.append(literal)
        if field is None:
            continue
        if field not in params:
            out.append("{" + field + "}")
            continue
        out.append(_format_value(field, params[field], spec or ""))
    return "".join(out)


def _format_value(field: str, value: Any, spec: str) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)) and not spec and field in _FLOAT_FIELDS:
        return format_float(value)
    if isinstance(value, (list, tuple)) and not spec:
        return ", ".join(str(item) for item in value)
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)
