"""Shared hypothesis strategies (one module for every engineer, as attrs does).

Keep this a plain module of strategy functions; append new ones at the end of the file.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import strategies as st

# --------------------------------------------------------------------------- JSON values

JsonValue = Any

INSTRUMENTS: tuple[str, ...] = ("BANK_NIFTY", "GOLD_MINI")
SIGNAL_TYPES: tuple[str, ...] = ("BASE_ENTRY", "PYRAMID", "EXIT")
SIGNAL_FIELDS: tuple[str, ...] = (
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
    "roc",
    "reason",
)


def json_scalars() -> st.SearchStrategy[JsonValue]:
    """Any JSON scalar, including NaN/inf floats and huge ints that lenient decoders produce."""
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=-(10**400), max_value=10**400),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=30),
        numeric_strings(),
    )


def json_values(max_leaves: int = 12) -> st.SearchStrategy[JsonValue]:
    """Any decoded JSON value: scalars, arrays and objects nested a few levels."""
    return st.recursive(
        json_scalars(),
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.text(max_size=8), children, max_size=4),
        ),
        max_leaves=max_leaves,
    )


def numeric_strings() -> st.SearchStrategy[str]:
    """Strings that look numeric, almost numeric, or are non-finite literals."""
    return st.one_of(
        st.from_regex(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?", fullmatch=True),
        st.sampled_from(
            ["nan", "-inf", "Infinity", "1e999", " 5", "5 ", "1_000", "0x10", "", ".", "1e", "e3"]
        ),
    )


# --------------------------------------------------------------------------- signal payloads


def positive_prices() -> st.SearchStrategy[float]:
    """A plausible positive price."""
    return st.floats(min_value=0.05, max_value=1_000_000.0, allow_nan=False)


def numbers_as_json(value: float) -> st.SearchStrategy[JsonValue]:
    """The ways a finite number can arrive: float, int when integral, or a numeric string."""
    options: list[JsonValue] = [value, repr(value)]
    if value.is_integer():
        options += [int(value), str(int(value))]
    return st.sampled_from(options)


def aware_instants(min_year: int = 2000, max_year: int = 2100) -> st.SearchStrategy[dt.datetime]:
    """An aware UTC instant with microseconds."""
    return st.datetimes(
        min_value=dt.datetime(min_year, 1, 2),
        max_value=dt.datetime(max_year, 12, 30),
        timezones=st.just(dt.UTC),
    )


def utc_offsets() -> st.SearchStrategy[dt.timezone]:
    """A fixed UTC offset in whole minutes within ±23:59."""
    return st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
        lambda m: dt.timezone(dt.timedelta(minutes=m))
    )


def _offset_text(ts: dt.datetime, colon: bool) -> str:
    offset = ts.utcoffset()
    assert offset is not None
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}{':' if colon else ''}{mins:02d}"


@st.composite
def iso_timestamps(draw: st.DrawFn, instant: dt.datetime | None = None) -> str:
    """An ISO text of ``instant`` (or a drawn one): ``T``/space, fraction, Z/±HH:MM/±HHMM."""
    if instant is None:
        instant = draw(aware_instants())
    zone = draw(st.sampled_from(["Z", "colon", "plain"]))
    if zone == "Z":
        local = instant.astimezone(dt.UTC)
        suffix = "Z"
    else:
        local = instant.astimezone(draw(utc_offsets()))
        suffix = _offset_text(local, zone == "colon")
    sep = draw(st.sampled_from(["T", " "]))
    text = f"{local:%Y-%m-%d}{sep}{local:%H:%M}"
    if local.second or local.microsecond or draw(st.booleans()):
        text += f":{local:%S}"
        if local.microsecond:
            text += f".{local.microsecond:06d}"
        elif draw(st.booleans()):
            text += ".000"
    return text + suffix


@st.composite
def valid_payloads(
    draw: st.DrawFn,
    instruments: tuple[str, ...] = INSTRUMENTS,
    types: tuple[str, ...] = SIGNAL_TYPES,
    max_layers: int = 6,
) -> dict[str, JsonValue]:
    """A payload that validates under the default configuration (any instrument and type)."""
    type_ = draw(st.sampled_from(types))
    labels = [f"Long_{n}" for n in range(1, max_layers + 1)]
    if type_ == "EXIT":
        labels.append("ALL")
    payload: dict[str, JsonValue] = {
        "type": draw(st.sampled_from([type_, type_.lower(), f" {type_} "])),
        "instrument": draw(
            st.sampled_from(instruments).flatmap(
                lambda i: st.sampled_from([i, i.lower(), f"{i}\t"])
            )
        ),
        "position": draw(st.sampled_from(labels).flatmap(lambda p: st.sampled_from([p, f" {p}"]))),
        "price": draw(positive_prices().flatmap(numbers_as_json)),
        "stop": draw(st.floats(-1e6, 1e6, allow_nan=False).flatmap(numbers_as_json)),
        "lots": draw(st.integers(0, 100).flatmap(lambda n: st.sampled_from([n, float(n), str(n)]))),
        "atr": draw(st.floats(0.0, 5_000.0, allow_nan=False).flatmap(numbers_as_json)),
        "er": draw(st.floats(0.0, 2.0, allow_nan=False).flatmap(numbers_as_json)),
        "supertrend": draw(st.floats(-1e6, 1e6, allow_nan=False).flatmap(numbers_as_json)),
        "timestamp": draw(
            st.one_of(
                iso_timestamps(),
                st.integers(1_000_000_000, 4_000_000_000),
                st.integers(1_000_000_000_000, 4_000_000_000_000),
            )
        ),
    }
    if draw(st.booleans()):
        payload["roc"] = draw(
            st.one_of(st.none(), st.floats(-100.0, 100.0, allow_nan=False).flatmap(numbers_as_json))
        )
    if type_ == "EXIT" or draw(st.booleans()):
        payload["reason"] = draw(st.text(min_size=1, max_size=20).filter(lambda s: s.strip()))
    if draw(st.booleans()):
        payload["secret"] = draw(st.text(max_size=10))
    return payload


# --------------------------------------------------------------------------- trading formulas
# Config "BN-35", position builder and sizing-input strategies (domain 2.2, 12).

MARK_TS = dt.datetime(2025, 11, 28, 10, 30, tzinfo=dt.UTC)


def bn35_config() -> Any:
    """Config "BN-35": BANK_NIFTY with lot_size_history [(None, 35)], all else default."""
    import attrs

    from pm_core.config import LotSizeEntry, bank_nifty

    return attrs.evolve(bank_nifty(), lot_size_history=(LotSizeEntry(None, 35),))


def make_position(
    instrument: Any,
    *,
    id: int = 1,
    label: str = "Long_1",
    lots: int = 1,
    entry: float = 52000.0,
    stop: float = 51650.0,
    current_stop: float | None = None,
    high: float | None = None,
    atr: float = 350.0,
    basis: float | None = None,
    is_base: bool = True,
    status: str = "open",
    **extra: Any,
) -> Any:
    """A position of ``instrument`` (an InstrumentConfig), pv from its first lot size."""
    from pm_core.model import Position

    lot_size = instrument.lot_size_history[0].lot_size
    fields: dict[str, Any] = dict(
        id=id,
        instrument=instrument.id,
        label=label,
        status=status,
        is_base_position=is_base,
        lots=lots,
        quantity=lots * lot_size,
        lot_size=lot_size,
        point_value=lot_size / instrument.quote_unit,
        entry_timestamp=MARK_TS,
        entry_price=entry,
        initial_stop=stop,
        current_stop=stop if current_stop is None else current_stop,
        highest_close=entry if high is None else high,
        atr=atr,
        basis=entry if basis is None else basis,
    )
    fields.update(extra)
    return Position(**fields)


def sizing_prices() -> st.SearchStrategy[float]:
    """Realistic quote prices (BN points, Gold per 10 g)."""
    return st.floats(min_value=100.0, max_value=200_000.0)


def sizing_atrs() -> st.SearchStrategy[float]:
    """ATRs from 0 up."""
    return st.floats(min_value=0.0, max_value=5_000.0)


def sizing_equities() -> st.SearchStrategy[float]:
    """Sizing equity, negative included."""
    return st.floats(min_value=-10_000_000.0, max_value=1e9)


def sizing_margins() -> st.SearchStrategy[float]:
    """Available margin M (never negative)."""
    return st.floats(min_value=0.0, max_value=1e9)


def efficiency_ratios() -> st.SearchStrategy[float]:
    """ER from 0 (above 1 is accepted, domain 3.1)."""
    return st.floats(min_value=0.0, max_value=3.0)


def signal_lot_counts() -> st.SearchStrategy[int]:
    """Signal lots, non-positive included (as_signalled: no cap / zero)."""
    return st.integers(min_value=-5, max_value=500)


def instrument_configs() -> st.SearchStrategy[Any]:
    """BN-35, default Gold Mini and default Bank Nifty registry entries."""
    from pm_core.config import bank_nifty, gold_mini

    return st.sampled_from([bn35_config(), gold_mini(), bank_nifty()])


# --------------------------------------------------------------------------- hostile webhook input
# Schema-driven fuzzing of POST /webhook (webhook.md 1): mutated valid payloads and raw bodies.


@st.composite
def mutated_payloads(draw: st.DrawFn) -> dict[str, JsonValue]:
    """A valid payload with one to three fields dropped, retyped or set to junk."""
    payload = dict(draw(valid_payloads()))
    payload.pop("secret", None)
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from([*SIGNAL_FIELDS, "extra", ""]))
        action = draw(st.sampled_from(["drop", "junk", "text", "huge", "nested"]))
        if action == "drop":
            payload.pop(field, None)
        elif action == "junk":
            payload[field] = draw(json_scalars())
        elif action == "text":
            payload[field] = draw(st.text(max_size=40))
        elif action == "huge":
            payload[field] = draw(
                st.sampled_from(
                    [10**30, -(10**30), 1e308, -1e308, "1e400", "-0", "NaN", "Infinity"]
                )
            )
        else:
            payload[field] = draw(json_values(max_leaves=4))
    return payload


def hostile_bodies() -> st.SearchStrategy[bytes]:
    """Raw request bodies: random bytes, broken JSON, JSON of the wrong shape."""
    return st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.sampled_from(
            [
                b"",
                b"{",
                b'{"type": "EXIT",',
                b"[" * 5000,
                b'{"a":' * 2000,
                b"null",
                b"NaN",
                b'"\\ud800"',
                b'{"type": "BASE_ENTRY"}' * 2,
                b"\xef\xbb\xbf{}",
                b'{"price": 1e999999}',
            ]
        ),
    )


def make_intent(coid: str, position_id: int, seq: int = 1, **kw: Any) -> Any:
    """A Gold Mini BUY FUT intent of two lots; ``kw`` overrides any field."""
    from pm_core.model import OrderIntent

    fields: dict[str, Any] = dict(
        client_order_id=coid,
        origin="signal",
        position_id=position_id,
        leg="FUT",
        seq=seq,
        attempt=1,
        symbol="GOLDM05DEC25FUT",
        exchange="MCX",
        action="BUY",
        product="NRML",
        pricetype="MARKET",
        quantity=2,
        lots=2,
        ref_price=78_000.5,
        group_id="g1",
    )
    fields.update(kw)
    return OrderIntent(**fields)
