"""Signal validation, timestamps and fingerprint (domain 3, 12.10, 13.2)."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pm_core.config import DomainConfig, default_config
from pm_core.errors import InvalidSignal, PmError
from pm_core.model import FieldError, Signal
from pm_core.signal import fingerprint, parse_signal, parse_timestamp, validate
from tests.strategies import (
    SIGNAL_FIELDS,
    aware_instants,
    iso_timestamps,
    json_values,
    valid_payloads,
)

CONFIG = default_config()
IST = ZoneInfo("Asia/Kolkata")
T0 = dt.datetime(2025, 11, 28, 10, 30, tzinfo=dt.UTC)

BN_BASE: dict[str, Any] = {
    "type": "BASE_ENTRY",
    "instrument": "BANK_NIFTY",
    "position": "Long_1",
    "price": 52000,
    "stop": 51650,
    "lots": 5,
    "atr": 350,
    "er": 0.82,
    "supertrend": 51650,
    "roc": 2.5,
    "timestamp": "2025-11-28T16:00:00",
}
EXIT_BASE: dict[str, Any] = {**BN_BASE, "type": "EXIT", "reason": "Stop Loss Hit"}


def ok(payload: object, config: DomainConfig = CONFIG) -> Signal:
    result = validate(payload, config)
    assert isinstance(result, Signal), result
    return result


def errors(payload: object, config: DomainConfig = CONFIG) -> tuple[FieldError, ...]:
    result = validate(payload, config)
    assert isinstance(result, tuple), result
    return result


def codes(payload: object, config: DomainConfig = CONFIG) -> dict[str, str]:
    return {e.field: e.code for e in errors(payload, config)}


def one_error(payload: object) -> FieldError:
    found = errors(payload)
    assert len(found) == 1, found
    return found[0]


def change(**fields: Any) -> dict[str, Any]:
    """The valid BN BASE payload with fields replaced (value ``...`` removes the field)."""
    payload = dict(BN_BASE)
    for name, value in fields.items():
        if value is ...:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


# --------------------------------------------------------------------------- happy path


def test_valid_payload_normalises_every_field() -> None:
    signal = ok(
        change(
            type=" base_entry ",
            instrument="bank_nifty\n",
            position=" Long_2\t",
            lots="7",
            price="52000.5",
            reason="  why  ",
            secret="hunter2",
            extra={"x": 1},
        )
    )
    assert signal == Signal(
        type="BASE_ENTRY",
        instrument="BANK_NIFTY",
        position="Long_2",
        price=52000.5,
        stop=51650.0,
        lots=7,
        atr=350.0,
        er=0.82,
        supertrend=51650.0,
        timestamp=dt.datetime(2025, 11, 28, 16, 0, tzinfo=IST),
        roc=2.5,
        reason="why",
    )
    assert type(signal.price) is float and type(signal.stop) is float
    assert type(signal.lots) is int
    assert signal.key == "BANK_NIFTY_Long_2"


def test_webhook_example_fingerprint() -> None:
    # webhook.md 1.1: the naive timestamp is Asia/Kolkata.
    signal = ok(change(timestamp="2025-11-28T10:30:00"))
    assert fingerprint(signal) == (
        "fb6ca43d510c08d56a6d1fd6848830c8193068f498bb4b21bf66c8f8ef03abff"
    )


def test_domain_fingerprint_vector_across_renderings() -> None:
    expected = "c68174e192421b604f85474a9f0d3b30d0b7d9657ce4a3e4825c6a55798095d1"
    text = "BANK_NIFTY:BASE_ENTRY:Long_1:2025-11-28T10:30:00+00:00"
    assert hashlib.sha256(text.encode()).hexdigest() == expected
    for raw in (
        "2025-11-28T10:30:00Z",
        "2025-11-28T10:30:00.999Z",
        "2025-11-28T16:00:00+05:30",
        "2025-11-28T16:00:00",
        1764325800,
        1764325800000,
    ):
        assert fingerprint(ok(change(timestamp=raw))) == expected, raw


def test_fingerprint_uses_label_as_given_and_normalised_ids() -> None:
    exit_all = ok({**EXIT_BASE, "position": "ALL", "type": "exit", "instrument": "bank_nifty"})
    text = "BANK_NIFTY:EXIT:ALL:2025-11-28T10:30:00+00:00"
    assert fingerprint(exit_all) == hashlib.sha256(text.encode()).hexdigest()


def test_exit_keeps_trimmed_reason() -> None:
    assert ok({**EXIT_BASE, "reason": "  Stop Loss Hit "}).reason == "Stop Loss Hit"


def test_roc_optional_and_null() -> None:
    assert ok(change(roc=...)).roc is None
    assert ok(change(roc=None)).roc is None
    assert ok(change(roc="-1.5")).roc == -1.5


def test_parse_signal_raises_invalid_signal_with_every_error() -> None:
    assert parse_signal(BN_BASE, CONFIG) == ok(BN_BASE)
    with pytest.raises(InvalidSignal) as info:
        parse_signal(change(price=-1, atr=...), CONFIG)
    assert isinstance(info.value, PmError) and isinstance(info.value, ValueError)
    assert [(e.field, e.code) for e in info.value.errors] == [  # type: ignore[attr-defined]
        ("price", "out_of_range"),
        ("atr", "missing"),
    ]


# --------------------------------------------------------------------------- domain 12.10


def test_1210_price_atr_negative_stop_zero() -> None:
    assert codes(change(price=-100, stop=0, atr=-1)) == {
        "price": "out_of_range",
        "atr": "out_of_range",
    }
    assert ok(change(stop=0)).stop == 0.0


def test_1210_price_and_atr_absent() -> None:
    assert codes(change(price=..., atr=...)) == {"price": "missing", "atr": "missing"}
    assert codes(change(price=None, atr=None)) == {"price": "missing", "atr": "missing"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(5.9, "not_integer"), ("5", 5), (5.0, 5), (-1, "out_of_range"), (True, "wrong_type")],
)
def test_1210_lots(raw: object, expected: object) -> None:
    if isinstance(expected, int):
        assert ok(change(lots=raw)).lots == expected
    else:
        assert codes(change(lots=raw)) == {"lots": expected}


@pytest.mark.parametrize("raw", [math.nan, "inf"])
def test_1210_price_not_finite(raw: object) -> None:
    assert codes(change(price=raw)) == {"price": "not_finite"}


def test_1210_type() -> None:
    assert codes(change(type=5)) == {"type": "wrong_type"}
    assert ok(change(type="base_entry")).type == "BASE_ENTRY"


def test_1210_position() -> None:
    assert codes(change(position="Long_7")) == {"position": "unknown_value"}
    assert codes(change(position="long_1")) == {"position": "unknown_value"}
    assert codes(change(position="ALL")) == {"position": "not_allowed_for_type"}


@pytest.mark.parametrize("reason", [..., "", None, "   "])
def test_1210_exit_requires_reason(reason: object) -> None:
    payload = {**EXIT_BASE}
    if reason is ...:
        del payload["reason"]
    else:
        payload["reason"] = reason
    error = one_error(payload)
    assert error == FieldError(
        "reason", "required_for_exit", "EXIT signals require a non-empty reason"
    )


def test_1210_er() -> None:
    assert codes(change(er=-0.1)) == {"er": "out_of_range"}
    assert ok(change(er=1.2)).er == 1.2


@pytest.mark.parametrize("raw", [1764325800, 1764325800000, "2025-11-28T16:00:00"])
def test_1210_timestamps(raw: object) -> None:
    ts = ok(change(timestamp=raw)).timestamp
    assert ts.tzinfo is not None
    assert ts == T0


@pytest.mark.parametrize("raw", ["2025-11-28", "invalid-date-format"])
def test_1210_invalid_timestamps(raw: str) -> None:
    assert codes(change(timestamp=raw)) == {"timestamp": "invalid_timestamp"}


def test_1210_payload_shape() -> None:
    assert errors("x") == (FieldError("payload", "not_an_object", "Payload must be a JSON object"),)
    assert errors({}) == (FieldError("payload", "empty_payload", "Payload is empty"),)


@pytest.mark.parametrize("payload", [None, 5, 1.5, True, [], [BN_BASE], "{}"])
def test_non_objects(payload: object) -> None:
    assert codes(payload) == {"payload": "not_an_object"}


def test_missing_everything_reports_every_required_field_in_order() -> None:
    found = errors({"secret": "x"})
    assert [e.field for e in found] == [
        "type",
        "instrument",
        "position",
        "price",
        "stop",
        "lots",
        "atr",
        "er",
        "supertrend",
        "timestamp",
    ]
    assert all(e.code == "missing" and e.message == f"{e.field} is required" for e in found)


# --------------------------------------------------------------------------- numbers (13.2)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("52000", 52000.0),
        ("+1", 1.0),
        ("1.", 1.0),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("1E+3", 1000.0),
        ("1.5e-2", 0.015),
        ("0001.50", 1.5),
        (2**60, float(2**60)),
        (1e308, 1e308),
    ],
)
def test_numeric_forms_accepted(raw: object, value: float) -> None:
    assert ok(change(price=raw)).price == value


@pytest.mark.parametrize(
    "raw",
    [" 5", "5 ", "1_000", "0x10", "", ".", "e3", "1e", "5.0.0", "١٢", "５", "1e3.5", "--1", "1,5"],
)
def test_not_a_number_strings(raw: str) -> None:
    assert one_error(change(price=raw)) == FieldError(
        "price", "not_a_number", f"price is not a number: {raw!r}"
    )


@pytest.mark.parametrize(
    "raw",
    [
        "nan",
        "NaN",
        "-nan",
        "inf",
        "-Inf",
        "+INFINITY",
        "infinity",
        "1e999",
        "-1e400",
        math.inf,
        -math.inf,
        math.nan,
        10**400,
        -(10**400),
    ],
)
def test_not_finite(raw: object) -> None:
    assert one_error(change(stop=raw)) == FieldError("stop", "not_finite", "stop must be finite")


@pytest.mark.parametrize(
    ("raw", "json_type"),
    [(True, "boolean"), (False, "boolean"), ([1], "array"), ({"v": 1}, "object")],
)
def test_numbers_wrong_type(raw: object, json_type: str) -> None:
    for field in ("price", "stop", "atr", "er", "supertrend", "roc"):
        assert one_error(change(**{field: raw})) == FieldError(
            field, "wrong_type", f"{field} must be a number, got {json_type}"
        )


def test_range_messages_show_parsed_value() -> None:
    assert one_error(change(price=-100)).message == "price must be > 0, got -100.0"
    assert one_error(change(price="0")).message == "price must be > 0, got 0.0"
    assert one_error(change(atr="-1e0")).message == "atr must be >= 0, got -1.0"
    assert one_error(change(er=-0.1)).message == "er must be >= 0, got -0.1"
    assert one_error(change(lots=-3)).message == "lots must be >= 0, got -3"
    assert ok(change(atr=0, er=0, stop=-5, supertrend=-1)).atr == 0.0


def test_negative_zero_is_not_a_positive_price() -> None:
    assert codes(change(price=-0.0)) == {"price": "out_of_range"}
    assert ok(change(atr=-0.0)).atr == 0.0


# --------------------------------------------------------------------------- lots (13.2)


@pytest.mark.parametrize(
    ("raw", "lots"),
    [("0", 0), ("+5", 5), ("007", 7), (1e3, 1000), (5.0, 5), (0, 0), (-0.0, 0), (2**70, 2**70)],
)
def test_lots_accepted(raw: object, lots: int) -> None:
    signal = ok(change(lots=raw))
    assert signal.lots == lots and type(signal.lots) is int


@pytest.mark.parametrize(
    ("raw", "code", "message"),
    [
        (5.9, "not_integer", "lots must be a whole number: 5.9"),
        ("5.0", "not_integer", "lots must be a whole number: '5.0'"),
        ("1e3", "not_integer", "lots must be a whole number: '1e3'"),
        ("5.9", "not_integer", "lots must be a whole number: '5.9'"),
        ("abc", "not_a_number", "lots is not a number: 'abc'"),
        (" 5", "not_a_number", "lots is not a number: ' 5'"),
        ("-1", "out_of_range", "lots must be >= 0, got -1"),
        (-2.0, "out_of_range", "lots must be >= 0, got -2"),
        (True, "wrong_type", "lots must be a whole number, got boolean"),
        ([5], "wrong_type", "lots must be a whole number, got array"),
        ({}, "wrong_type", "lots must be a whole number, got object"),
        (math.nan, "not_finite", "lots must be finite"),
        (math.inf, "not_finite", "lots must be finite"),
        ("nan", "not_finite", "lots must be finite"),
        ("-Infinity", "not_finite", "lots must be finite"),
        (10**400, "not_finite", "lots must be finite"),
        ("9" * 5000, "not_finite", "lots must be finite"),
        (None, "missing", "lots is required"),
    ],
)
def test_lots_rejected(raw: object, code: str, message: str) -> None:
    assert one_error(change(lots=raw)) == FieldError("lots", code, message)


# --------------------------------------------------------------------------- strings and choices


@pytest.mark.parametrize(
    ("field", "raw", "message"),
    [
        ("type", "ENTRY", "type must be one of BASE_ENTRY, PYRAMID, EXIT, got 'ENTRY'"),
        ("type", "", "type must be one of BASE_ENTRY, PYRAMID, EXIT, got ''"),
        ("instrument", "X", "instrument must be one of BANK_NIFTY, GOLD_MINI, got 'X'"),
        (
            "instrument",
            "BANK NIFTY",
            "instrument must be one of BANK_NIFTY, GOLD_MINI, got 'BANK NIFTY'",
        ),
        ("position", "Long_7", "position must be one of Long_1..Long_6, ALL, got 'Long_7'"),
        ("position", "Long_01", "position must be one of Long_1..Long_6, ALL, got 'Long_01'"),
        ("position", "Long_0", "position must be one of Long_1..Long_6, ALL, got 'Long_0'"),
        ("position", "all", "position must be one of Long_1..Long_6, ALL, got 'all'"),
        ("position", "LONG_1", "position must be one of Long_1..Long_6, ALL, got 'LONG_1'"),
    ],
)
def test_unknown_values(field: str, raw: str, message: str) -> None:
    assert one_error(change(**{field: raw})) == FieldError(field, "unknown_value", message)


@pytest.mark.parametrize(
    ("raw", "json_type"), [(5, "number"), (1.5, "number"), (True, "boolean"), (["x"], "array")]
)
def test_string_fields_wrong_type(raw: object, json_type: str) -> None:
    for field in ("type", "instrument", "position"):
        assert one_error(change(**{field: raw})) == FieldError(
            field, "wrong_type", f"{field} must be a string, got {json_type}"
        )


def test_allowed_placeholders_follow_configuration() -> None:
    config = default_config(max_layers=3)
    assert one_error_for(change(position="Long_4"), config).message == (
        "position must be one of Long_1..Long_3, ALL, got 'Long_4'"
    )
    assert ok(change(position="Long_3"), config).position == "Long_3"
    gold_only = DomainConfig(
        portfolio=CONFIG.portfolio,
        instruments={"GOLD_MINI": CONFIG.instruments["GOLD_MINI"]},
        sessions=CONFIG.sessions,
    )
    assert one_error_for(change(), gold_only).message == (
        "instrument must be one of GOLD_MINI, got 'BANK_NIFTY'"
    )


def one_error_for(payload: object, config: DomainConfig) -> FieldError:
    found = errors(payload, config)
    assert len(found) == 1, found
    return found[0]


# --------------------------------------------------------------------------- cross-field rules


def test_all_is_accepted_for_exit() -> None:
    assert ok({**EXIT_BASE, "position": "ALL"}).position == "ALL"
    assert ok({**EXIT_BASE, "position": " ALL "}).position == "ALL"


def test_all_rule_needs_type_parsed() -> None:
    # type failed: the ALL rule cannot run, only type is reported.
    assert codes(change(type="ENTRY", position="ALL")) == {"type": "unknown_value"}
    assert codes(change(type=..., position="ALL")) == {"type": "missing"}
    assert codes(change(type="pyramid", position="ALL")) == {"position": "not_allowed_for_type"}


def test_reason_rule_needs_type_parsed() -> None:
    assert codes({**EXIT_BASE, "type": "EXITS", "reason": ""}) == {"type": "unknown_value"}
    assert codes({**EXIT_BASE, "type": "exit", "reason": ""}) == {"reason": "required_for_exit"}


@pytest.mark.parametrize("type_", ["BASE_ENTRY", "PYRAMID", "EXIT", "bogus"])
def test_reason_of_wrong_type_for_every_type(type_: str) -> None:
    found = {e.field: e for e in errors({**EXIT_BASE, "type": type_, "reason": 5})}
    assert found["reason"] == FieldError(
        "reason", "wrong_type", "reason must be a string, got number"
    )


def test_reason_ignored_for_entries() -> None:
    assert ok(change(reason="")).reason is None
    assert ok(change(reason="  ")).reason is None
    assert ok(change(reason=None)).reason is None
    assert ok(change(reason=" trend ")).reason == "trend"


def test_one_error_per_field_and_order() -> None:
    payload = {
        "type": "EXIT",
        "instrument": 3,
        "position": "Long_9",
        "price": "abc",
        "stop": math.inf,
        "lots": 1.5,
        "atr": -1,
        "er": [],
        "supertrend": None,
        "timestamp": True,
        "roc": "nan",
    }
    assert [(e.field, e.code) for e in errors(payload)] == [
        ("instrument", "wrong_type"),
        ("position", "unknown_value"),
        ("price", "not_a_number"),
        ("stop", "not_finite"),
        ("lots", "not_integer"),
        ("atr", "out_of_range"),
        ("er", "wrong_type"),
        ("supertrend", "missing"),
        ("timestamp", "wrong_type"),
        ("roc", "not_finite"),
        ("reason", "required_for_exit"),
    ]


# --------------------------------------------------------------------------- timestamps (3.2, 13.2)

UTC = dt.UTC
PLUS_0530 = dt.timezone(dt.timedelta(hours=5, minutes=30))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2025-11-28T10:30:00Z", dt.datetime(2025, 11, 28, 10, 30, tzinfo=UTC)),
        ("2025-11-28 10:30:00Z", dt.datetime(2025, 11, 28, 10, 30, tzinfo=UTC)),
        ("2025-11-28T10:30Z", dt.datetime(2025, 11, 28, 10, 30, tzinfo=UTC)),
        ("2025-11-28T10:30", dt.datetime(2025, 11, 28, 10, 30, tzinfo=IST)),
        ("2025-11-28 16:00", dt.datetime(2025, 11, 28, 16, 0, tzinfo=IST)),
        ("2025-11-28T16:00:00+05:30", dt.datetime(2025, 11, 28, 16, 0, tzinfo=PLUS_0530)),
        ("2025-11-28T16:00:00+0530", dt.datetime(2025, 11, 28, 16, 0, tzinfo=PLUS_0530)),
        ("2025-11-28T16:00+0530", dt.datetime(2025, 11, 28, 16, 0, tzinfo=PLUS_0530)),
        (
            "2025-11-28T01:00:00-03:45",
            dt.datetime(2025, 11, 28, 1, 0, tzinfo=dt.timezone(-dt.timedelta(hours=3, minutes=45))),
        ),
        (
            "2025-11-28T00:00:00+23:59",
            dt.datetime(2025, 11, 28, tzinfo=dt.timezone(dt.timedelta(hours=23, minutes=59))),
        ),
        ("2025-11-28T10:30:00.5Z", dt.datetime(2025, 11, 28, 10, 30, 0, 500000, tzinfo=UTC)),
        ("2025-11-28T10:30:00.123Z", dt.datetime(2025, 11, 28, 10, 30, 0, 123000, tzinfo=UTC)),
        ("2025-11-28T10:30:00.123456Z", dt.datetime(2025, 11, 28, 10, 30, 0, 123456, tzinfo=UTC)),
        # Digits beyond microseconds are truncated, not rounded.
        ("2025-11-28T10:30:00.9999999Z", dt.datetime(2025, 11, 28, 10, 30, 0, 999999, tzinfo=UTC)),
        (
            "2025-11-28T10:30:00.12345678901+05:30",
            dt.datetime(2025, 11, 28, 10, 30, 0, 123456, tzinfo=PLUS_0530),
        ),
        ("2024-02-29T23:59:59", dt.datetime(2024, 2, 29, 23, 59, 59, tzinfo=IST)),
        (1764325800, T0),
        (1764325800.25, T0 + dt.timedelta(microseconds=250000)),
        (1764325800000, T0),
        (1764325800123, T0 + dt.timedelta(milliseconds=123)),
        # A float epoch in milliseconds keeps its sub-millisecond part.
        (1764325800123.5, T0 + dt.timedelta(microseconds=123500)),
        (0, dt.datetime(1970, 1, 1, tzinfo=UTC)),
        (-86400, dt.datetime(1969, 12, 31, tzinfo=UTC)),
        (
            99_999_999_999,
            dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=99_999_999_999),
        ),
        (100_000_000_000, dt.datetime(1973, 3, 3, 9, 46, 40, tzinfo=UTC)),
        (1e11, dt.datetime(1973, 3, 3, 9, 46, 40, tzinfo=UTC)),
        (-100_000_000_000, dt.datetime(1966, 10, 31, 14, 13, 20, tzinfo=UTC)),
    ],
)
def test_timestamp_forms(raw: object, expected: dt.datetime) -> None:
    parsed = parse_timestamp(raw, IST)
    assert parsed == expected
    assert parsed.utcoffset() == expected.utcoffset()
    assert ok(change(timestamp=raw)).timestamp == expected


@pytest.mark.parametrize(
    "raw",
    [
        "2025-11-28",
        "2025-11-28T",
        "2025-11-28T10",
        "2025-11-28T10:30:60",
        "2025-11-28T24:00:00",
        "2025-11-28T23:60:00",
        "2025-11-28T10:30:00+24:00",
        "2025-11-28T10:30:00+05:60",
        "2025-11-28T10:30:00+5:30",
        "2025-11-28T10:30:00+05",
        "2025-11-28T10:30:00+05:3",
        "2025-11-28t10:30:00",
        "2025-11-28T10:30:00z",
        "2025-11-28T10:30:00 Z",
        "2025-11-28  10:30:00",
        " 2025-11-28T10:30:00",
        "2025-11-28T10:30:00 ",
        "2025-11-28T10:30:00.",
        "2025-11-28T10:30.5",
        "2025-11-28T10:30:00,5",
        "2025-02-30T10:30:00",
        "2025-13-01T10:30:00",
        "0000-01-01T00:00:00",
        "25-11-28T10:30:00",
        "2025/11/28 10:30:00",
        "20251128T103000",
        "2025-11-28T10:30:00UTC",
        "2025-11-28T10:30:00[Asia/Kolkata]",
        "1764325800",
        "1764325800000",
        "",
        "invalid-date-format",
        "２０２５-11-28T10:30:00",
    ],
)
def test_invalid_timestamp_strings(raw: str) -> None:
    message = f"timestamp is not an ISO 8601 date-time or epoch: {raw!r}"
    assert one_error(change(timestamp=raw)) == FieldError("timestamp", "invalid_timestamp", message)
    with pytest.raises(ValueError, match="timestamp is not an ISO 8601"):
        parse_timestamp(raw, IST)


@pytest.mark.parametrize(
    ("raw", "code", "message"),
    [
        (True, "wrong_type", "timestamp must be a string or number, got boolean"),
        ([], "wrong_type", "timestamp must be a string or number, got array"),
        ({}, "wrong_type", "timestamp must be a string or number, got object"),
        (math.nan, "not_finite", "timestamp must be finite"),
        (-math.inf, "not_finite", "timestamp must be finite"),
        (10**400, "not_finite", "timestamp must be finite"),
        (1e300, "invalid_timestamp", "timestamp is not an ISO 8601 date-time or epoch: 1e+300"),
        (None, "missing", "timestamp is required"),
    ],
)
def test_timestamp_rejections(raw: object, code: str, message: str) -> None:
    assert one_error(change(timestamp=raw)) == FieldError("timestamp", code, message)


def test_naive_timestamp_uses_portfolio_zone() -> None:
    config = default_config(timezone="America/New_York")
    ts = ok(change(timestamp="2025-11-28T05:30:00"), config).timestamp
    assert ts == T0
    assert ok(change(timestamp="2025-11-28T05:30:00Z"), config).timestamp != T0


# --------------------------------------------------------------------------- properties


@given(instant=aware_instants(), data=st.data())
def test_fingerprint_same_for_every_rendering_of_a_second(
    instant: dt.datetime, data: st.DataObject
) -> None:
    second = instant.replace(microsecond=0)
    epoch_s = int(second.timestamp())
    renderings: list[object] = [
        epoch_s,
        epoch_s * 1000,
        epoch_s * 1000 + data.draw(st.integers(0, 999), label="ms"),
        float(epoch_s) + data.draw(st.integers(0, 999), label="ms2") / 1000,
        data.draw(iso_timestamps(second), label="iso"),
        data.draw(
            iso_timestamps(second + dt.timedelta(microseconds=instant.microsecond)), label="iso_us"
        ),
        second.astimezone(IST).replace(tzinfo=None).isoformat(),  # naive portfolio time
    ]
    expected = hashlib.sha256(f"GOLD_MINI:PYRAMID:Long_3:{second.isoformat()}".encode()).hexdigest()
    for raw in renderings:
        payload = change(type="PYRAMID", instrument="GOLD_MINI", position="Long_3", timestamp=raw)
        assert fingerprint(ok(payload)) == expected, raw


@settings(max_examples=300)
@given(payload=json_values())
def test_validate_never_raises_on_any_json(payload: object) -> None:
    check_result(validate(payload, CONFIG))


@settings(max_examples=300)
@given(
    base=valid_payloads(),
    replacements=st.dictionaries(st.sampled_from(SIGNAL_FIELDS), json_values(4), max_size=5),
)
def test_validate_never_raises_on_corrupted_payloads(
    base: dict[str, object], replacements: dict[str, object]
) -> None:
    result = validate({**base, **replacements}, CONFIG)
    check_result(result)
    if isinstance(result, tuple):
        # A replaced type can make the base's position (ALL) or reason (EXIT) invalid too.
        touched = set(replacements) | ({"position", "reason"} if "type" in replacements else set())
        assert {e.field for e in result} <= touched


def test_validate_does_not_mutate_payload() -> None:
    payload = {**EXIT_BASE, "reason": "  x ", "secret": "s"}
    before = dict(payload)
    ok(payload)
    errors({**payload, "price": "bad"})
    assert payload == before


def check_result(result: object) -> None:
    if isinstance(result, Signal):
        return
    assert isinstance(result, tuple) and result
    assert all(isinstance(e, FieldError) and e.message for e in result)
    fields = [e.field for e in result]
    assert len(fields) == len(set(fields))
    order = ("payload", *SIGNAL_FIELDS)
    assert fields == sorted(fields, key=order.index)


@given(payload=valid_payloads())
def test_valid_payload_round_trips(payload: dict[str, Any]) -> None:
    signal = ok(payload)
    assert signal.type == payload["type"].strip().upper()
    assert signal.instrument == payload["instrument"].strip().upper()
    assert signal.position == payload["position"].strip()
    for field in ("price", "stop", "atr", "er", "supertrend"):
        assert getattr(signal, field) == float(payload[field])
    assert signal.lots == int(float(payload["lots"]))
    assert signal.timestamp == parse_timestamp(payload["timestamp"], IST)
    assert signal.timestamp.utcoffset() is not None
    if payload.get("roc") is None:
        assert signal.roc is None
    else:
        assert signal.roc == float(payload["roc"])
    if "reason" in payload:
        assert signal.reason == payload["reason"].strip()
    assert len(fingerprint(signal)) == 64
