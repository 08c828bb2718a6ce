"""Signals: validation, timestamps, fingerprint and duplicate rules (domain spec 3, 13.2).

``validate`` turns a decoded JSON payload into a frozen ``Signal`` or lists every bad field.
It runs once per signal in a backtest, so the happy path raises nothing, allocates no error
list and compiles no pattern; each field helper raises ``_Bad`` only when its field fails.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from typing import Final

from pm_core.config import DomainConfig
from pm_core.errors import InvalidSignal
from pm_core.model import (
    SIGNAL_TYPES,
    FieldError,
    RecordedSignal,
    RecordedSignals,
    Signal,
    SignalType,
    instant_us,
)

__all__ = [
    "find_duplicate",
    "fingerprint",
    "parse_signal",
    "parse_timestamp",
    "recorded_from",
    "validate",
]

UTC: Final = dt.UTC
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_MS_THRESHOLD: Final = 1e11  # |epoch| at or above this is milliseconds (domain 3.2)

# Domain 13.2: numeric strings match whole and untrimmed; ASCII digits only (``\d`` would
# accept other scripts' digits, which float() would then happily parse).
_NUMBER_RE: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INTEGER_RE: Final = re.compile(r"[+-]?[0-9]+")
_NON_FINITE_RE: Final = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)
# Domain 3.2 + 13.2: hour 24, second 60 and offsets beyond 23:59 are out by construction;
# day-of-month validity is left to fromisoformat. No trimming, ``T``/``Z`` upper-case only.
_TIMESTAMP_RE: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ](?:[01][0-9]|2[0-3]):[0-5][0-9]"
    r"(?::[0-5][0-9](?:\.([0-9]+))?)?"
    r"(Z|[+-](?:[01][0-9]|2[0-3]):?[0-5][0-9])?"
)

_TYPES: Final[dict[str, SignalType]] = {t: t for t in SIGNAL_TYPES}
_TYPES_ALLOWED: Final = ", ".join(SIGNAL_TYPES)


class _Bad(Exception):
    """One field's first failing rule; raised only off the happy path."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    if value is None:
        return "null"
    return type(value).__name__


def _wrong_type(field: str, expected: str, value: object) -> _Bad:
    return _Bad("wrong_type", f"{field} must be a {expected}, got {_json_type(value)}")


def _not_finite(field: str) -> _Bad:
    return _Bad("not_finite", f"{field} must be finite")


def _number(field: str, value: object) -> float:
    """A finite float from a JSON number or numeric string; None is the caller's business."""
    if type(value) is float:
        # x - x is 0.0 for every finite x and NaN for NaN and the infinities.
        if value - value == 0.0:
            return value
        raise _not_finite(field)
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:
            raise _not_finite(field) from None
    return _number_slow(field, value)


def _number_slow(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _wrong_type(field, "number", value)
    if isinstance(value, str):
        if _NUMBER_RE.fullmatch(value) is None:
            if _NON_FINITE_RE.fullmatch(value) is not None:
                raise _not_finite(field)
            raise _Bad("not_a_number", f"{field} is not a number: {value!r}")
        result = float(value)  # cannot raise: the pattern is a subset of float()'s grammar
    else:  # int/float subclasses
        try:
            result = float(value)
        except OverflowError:
            raise _not_finite(field) from None
    if not math.isfinite(result):
        raise _not_finite(field)
    return result


def _at_least_zero(field: str, value: float) -> float:
    if value >= 0.0:
        return value
    raise _Bad("out_of_range", f"{field} must be >= 0, got {value}")


def _lots(value: object) -> int:
    if type(value) is int:
        result = value
    elif type(value) is float:
        if value - value != 0.0:
            raise _not_finite("lots")
        if not value.is_integer():
            raise _Bad("not_integer", f"lots must be a whole number: {value!r}")
        result = int(value)
    else:
        result = _lots_slow(value)
    try:
        float(result)
    except OverflowError:
        raise _not_finite("lots") from None
    if result < 0:
        raise _Bad("out_of_range", f"lots must be >= 0, got {result}")
    return result


def _lots_slow(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _wrong_type("lots", "whole number", value)
    if isinstance(value, str):
        if _INTEGER_RE.fullmatch(value) is not None:
            try:
                return int(value)
            except ValueError:  # beyond Python's int-string digit limit: far beyond doubles
                raise _not_finite("lots") from None
        if _NUMBER_RE.fullmatch(value) is not None:
            raise _Bad("not_integer", f"lots must be a whole number: {value!r}")
        if _NON_FINITE_RE.fullmatch(value) is not None:
            raise _not_finite("lots")
        raise _Bad("not_a_number", f"lots is not a number: {value!r}")
    if isinstance(value, int):
        return int(value)
    number = float(value)
    if not math.isfinite(number):
        raise _not_finite("lots")
    if not number.is_integer():
        raise _Bad("not_integer", f"lots must be a whole number: {value!r}")
    return int(number)


_OFFSETS: dict[str, dt.timezone] = {"Z": UTC}


def _offset(zone: str) -> dt.timezone:
    tz = _OFFSETS.get(zone)
    if tz is None:
        minutes = int(zone[1:3]) * 60 + int(zone[-2:])
        tz = dt.timezone(dt.timedelta(minutes=-minutes if zone[0] == "-" else minutes))
        if len(_OFFSETS) < 4096:  # bounded: offsets come from untrusted input
            _OFFSETS[zone] = tz
    return tz


def _timestamp(value: object, tz: dt.tzinfo) -> dt.datetime:
    if type(value) is str:
        match = _TIMESTAMP_RE.fullmatch(value)
        if match is not None:
            fraction, zone = match.groups()
            text = value
            if fraction is not None and len(fraction) > 6:
                # Domain 13.2: digits beyond microseconds are truncated, never rounded.
                start = match.start(1)
                text = value[: start + 6] + value[match.end(1) :]
            if zone is not None:
                text = text[: len(text) - len(zone)]
            try:
                parsed = dt.datetime.fromisoformat(text)
            except ValueError:  # e.g. 2025-02-30
                pass
            else:
                return parsed.replace(tzinfo=tz if zone is None else _offset(zone))
        raise _Bad(
            "invalid_timestamp", f"timestamp is not an ISO 8601 date-time or epoch: {value!r}"
        )
    return _timestamp_slow(value, tz)


def _timestamp_slow(value: object, tz: dt.tzinfo) -> dt.datetime:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _wrong_type("timestamp", "string or number", value)
    if isinstance(value, str):  # a str subclass: judge its plain text
        return _timestamp(str(value), tz)
    if isinstance(value, float) and not math.isfinite(value):
        raise _not_finite("timestamp")
    try:
        if abs(value) >= _EPOCH_MS_THRESHOLD:
            return _EPOCH + dt.timedelta(milliseconds=value)
        return _EPOCH + dt.timedelta(seconds=value)
    except OverflowError:
        # Beyond the double range (huge ints) or beyond year 9999.
        if isinstance(value, int):
            try:
                float(value)
            except OverflowError:
                raise _not_finite("timestamp") from None
        raise _Bad(
            "invalid_timestamp", f"timestamp is not an ISO 8601 date-time or epoch: {value!r}"
        ) from None


def parse_timestamp(raw: object, tz: dt.tzinfo) -> dt.datetime:
    """The aware instant of a signal timestamp (ISO string or epoch); ValueError if it is not one.

    Naive strings are read in ``tz``; epochs are UTC, milliseconds when |value| >= 10^11.
    """
    try:
        return _timestamp(raw, tz)
    except _Bad as bad:
        raise ValueError(bad.message) from None


class _Rules:
    """What validation needs from a configuration, precomputed once per configuration."""

    __slots__ = ("config", "instruments", "instruments_allowed", "labels", "labels_allowed", "tz")

    def __init__(self, config: DomainConfig) -> None:
        self.config = config
        self.instruments = {i: i for i in config.instruments}
        self.instruments_allowed = ", ".join(config.instruments)
        labels = config.labels
        self.labels = {label: label for label in (*labels, "ALL")}
        self.labels_allowed = f"Long_1..Long_{config.portfolio.max_layers}, ALL"
        self.tz: dt.tzinfo = config.portfolio.tz


_RULES: dict[int, _Rules] = {}


def _rules(config: DomainConfig) -> _Rules:
    rules = _RULES.get(id(config))
    if rules is None or rules.config is not config:
        if len(_RULES) >= 64:
            _RULES.clear()
        # The entry holds the config itself, so its id cannot be reused while cached.
        rules = _RULES[id(config)] = _Rules(config)
    return rules


def _choice(field: str, value: object, normalise: bool, allowed: dict[str, str], text: str) -> str:
    if value is None:
        raise _Bad("missing", f"{field} is required")
    if not isinstance(value, str):
        raise _wrong_type(field, "string", value)
    key = value.strip().upper() if normalise else value.strip()
    found = allowed.get(key)
    if found is None:
        raise _Bad("unknown_value", f"{field} must be one of {text}, got {value!r}")
    return found


def validate(payload: object, config: DomainConfig) -> Signal | tuple[FieldError, ...]:
    """Check a webhook/CSV payload: the normalised signal, or every bad field at once."""
    if not isinstance(payload, dict):
        return (FieldError("payload", "not_an_object", "Payload must be a JSON object"),)
    if not payload:
        return (FieldError("payload", "empty_payload", "Payload is empty"),)
    rules = _rules(config)
    errors: list[FieldError] | None = None
    get = payload.get

    type_: SignalType | None = None
    try:
        raw = get("type")
        if raw is None:
            raise _Bad("missing", "type is required")
        if not isinstance(raw, str):
            raise _wrong_type("type", "string", raw)
        type_ = _TYPES.get(raw.strip().upper())
        if type_ is None:
            raise _Bad("unknown_value", f"type must be one of {_TYPES_ALLOWED}, got {raw!r}")
    except _Bad as bad:
        errors = [FieldError("type", bad.code, bad.message)]

    instrument = ""
    try:
        instrument = _choice(
            "instrument", get("instrument"), True, rules.instruments, rules.instruments_allowed
        )
    except _Bad as bad:
        errors = _add(errors, "instrument", bad)

    position = ""
    try:
        position = _choice("position", get("position"), False, rules.labels, rules.labels_allowed)
        if position == "ALL" and type_ is not None and type_ != "EXIT":
            raise _Bad("not_allowed_for_type", "position ALL is only valid for EXIT")
    except _Bad as bad:
        errors = _add(errors, "position", bad)

    price = stop = atr = er = supertrend = 0.0
    try:
        raw = get("price")
        if raw is None:
            raise _Bad("missing", "price is required")
        price = _number("price", raw)
        if not price > 0.0:
            raise _Bad("out_of_range", f"price must be > 0, got {price}")
    except _Bad as bad:
        errors = _add(errors, "price", bad)

    try:
        raw = get("stop")
        if raw is None:
            raise _Bad("missing", "stop is required")
        stop = _number("stop", raw)
    except _Bad as bad:
        errors = _add(errors, "stop", bad)

    lots = 0
    try:
        raw = get("lots")
        if raw is None:
            raise _Bad("missing", "lots is required")
        lots = _lots(raw)
    except _Bad as bad:
        errors = _add(errors, "lots", bad)

    try:
        raw = get("atr")
        if raw is None:
            raise _Bad("missing", "atr is required")
        atr = _at_least_zero("atr", _number("atr", raw))
    except _Bad as bad:
        errors = _add(errors, "atr", bad)

    try:
        raw = get("er")
        if raw is None:
            raise _Bad("missing", "er is required")
        er = _at_least_zero("er", _number("er", raw))
    except _Bad as bad:
        errors = _add(errors, "er", bad)

    try:
        raw = get("supertrend")
        if raw is None:
            raise _Bad("missing", "supertrend is required")
        supertrend = _number("supertrend", raw)
    except _Bad as bad:
        errors = _add(errors, "supertrend", bad)

    timestamp = _EPOCH
    try:
        raw = get("timestamp")
        if raw is None:
            raise _Bad("missing", "timestamp is required")
        timestamp = _timestamp(raw, rules.tz)
    except _Bad as bad:
        errors = _add(errors, "timestamp", bad)

    roc: float | None = None
    raw = get("roc")
    if raw is not None:
        try:
            roc = _number("roc", raw)
        except _Bad as bad:
            errors = _add(errors, "roc", bad)

    reason: str | None = None
    raw = get("reason")
    if raw is not None and not isinstance(raw, str):
        errors = _add(errors, "reason", _wrong_type("reason", "string", raw))
    else:
        if raw is not None:
            reason = raw.strip() or None
        if reason is None and type_ == "EXIT":
            errors = _add(
                errors,
                "reason",
                _Bad("required_for_exit", "EXIT signals require a non-empty reason"),
            )

    if errors is not None:
        return tuple(errors)
    assert type_ is not None  # no error means type parsed
    return Signal(
        type_,
        instrument,
        position,
        price,
        stop,
        lots,
        atr,
        er,
        supertrend,
        timestamp,
        roc,
        reason,
    )


def _add(errors: list[FieldError] | None, field: str, bad: _Bad) -> list[FieldError]:
    error = FieldError(field, bad.code, bad.message)
    if errors is None:
        return [error]
    errors.append(error)
    return errors


def parse_signal(payload: object, config: DomainConfig) -> Signal:
    """The validated signal of a payload; raises InvalidSignal listing every bad field."""
    result = validate(payload, config)
    if isinstance(result, Signal):
        return result
    raise InvalidSignal(result)


def fingerprint(signal: Signal) -> str:
    """The signal's identity: SHA-256 of instrument, type, label and its UTC second (domain 3.4)."""
    ts = signal.timestamp
    try:
        # The duplicate check asks for the same instant next (instant_us remembers it).
        second = utc_second_text(instant_us(ts))
    except TypeError:  # naive: read as local time, as astimezone does
        second = ts.astimezone(UTC).replace(microsecond=0).isoformat()
    text = f"{signal.instrument}:{signal.type}:{signal.position}:{second}"
    return hashlib.sha256(text.encode()).hexdigest()


_EPOCH_ORDINAL: Final = dt.date(1970, 1, 1).toordinal()
_UTC_DAYS: dict[int, str] = {}


def utc_second_text(at_us: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS+00:00`` of the UTC second holding an instant (us since the epoch).

    The text ``datetime.astimezone(UTC).replace(microsecond=0).isoformat()`` gives, built from
    integers: days are formatted once each, the time of day by arithmetic.
    """
    day, second = divmod(at_us // 1_000_000, 86_400)
    date = _UTC_DAYS.get(day)
    if date is None:
        date = dt.date.fromordinal(_EPOCH_ORDINAL + day).isoformat()
        if len(_UTC_DAYS) < 100_000:  # about 270 years of days; bounded for long-lived services
            _UTC_DAYS[day] = date
    hour, rest = divmod(second, 3600)
    minute, sec = divmod(rest, 60)
    return f"{date}T{hour:02d}:{minute:02d}:{sec:02d}+00:00"


def find_duplicate(
    recorded: RecordedSignals, signal: Signal, fingerprint: str, window_s: float
) -> tuple[str, RecordedSignal] | None:
    """The recorded signal this one repeats, with the duplicate code; None if it is new.

    Exact fingerprint first; then the same instrument, type and label within ``window_s``
    seconds either way, inclusive, at full precision (0 disables the near check).
    """
    original = recorded.by_fingerprint(fingerprint)
    if original is not None:
        return ("duplicate_fingerprint", original)
    if window_s > 0:
        window_us = round(window_s * 1_000_000)
        at_us = instant_us(signal.timestamp)
        original = recorded.near(signal.instrument, signal.type, signal.position, at_us, window_us)
        if original is not None:
            return ("duplicate_near_window", original)
    return None


def recorded_from(
    signal: Signal, fingerprint: str, outcome: str, signal_id: int | None = None
) -> RecordedSignal:
    """How a signal that reached a decision is remembered for later duplicate checks."""
    return RecordedSignal(  # positional, in field order: one per signal in a backtest
        fingerprint,
        signal.instrument,
        signal.type,
        signal.position,  # label
        instant_us(signal.timestamp),
        outcome,
        signal_id,
        signal.timestamp,
    )
