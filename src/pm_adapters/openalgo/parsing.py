"""Turn OpenAlgo response bodies into pm values, accepting every documented variant.

OpenAlgo mixes numbers and strings for numerics, nests some lists under ``data`` and some
not, and formats timestamps per broker (openalgo.md 1-2). Every parser here raises
``BrokerParseError`` on a body it cannot read, so the client reports ``parse`` instead of
guessing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from pm_core.errors import PmError
from pm_core.model import Funds, Quote
from pm_core.ports import BrokerPosition, OrderStatus, TradeRow

IST = ZoneInfo("Asia/Kolkata")

_MONTHS = {
    name: number
    for number, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"),
        start=1,
    )
}


class BrokerParseError(PmError, ValueError):
    """A broker response body does not have the documented shape."""


def to_decimal(value: object, field: str) -> Decimal | None:
    """A number or numeric string as Decimal; None or "" as None."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise BrokerParseError(f"{field}: expected a number, got a boolean")
    if isinstance(value, int | Decimal):
        return Decimal(value)
    if isinstance(value, float):
        # str() keeps what the broker meant (612.35), Decimal(float) would not.
        return Decimal(str(value))
    if isinstance(value, str):
        try:
            number = Decimal(value.strip().replace(",", ""))
        except InvalidOperation:
            raise BrokerParseError(f"{field}: not a number: {value[:40]!r}") from None
        if not number.is_finite():
            raise BrokerParseError(f"{field}: not a finite number")
        return number
    raise BrokerParseError(f"{field}: expected a number, got {type(value).__name__}")


def required_decimal(row: Mapping[str, Any], field: str) -> Decimal:
    """A numeric field that must be present."""
    value = to_decimal(row.get(field), field)
    if value is None:
        raise BrokerParseError(f"{field}: missing")
    return value


def to_int(value: object, field: str) -> int:
    """A whole-number quantity (number or string)."""
    number = to_decimal(value, field)
    if number is None:
        raise BrokerParseError(f"{field}: missing")
    if number != number.to_integral_value():
        raise BrokerParseError(f"{field}: not a whole number: {number}")
    return int(number)


def to_text(row: Mapping[str, Any], field: str, default: str | None = None) -> str:
    """A string field; numbers (order ids sometimes arrive as numbers) become strings."""
    value = row.get(field)
    if value is None or value == "":
        if default is not None:
            return default
        raise BrokerParseError(f"{field}: missing")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BrokerParseError(f"{field}: expected text, got {type(value).__name__}")
    return str(value)


def normalise_status(raw: object) -> str:
    """OpenAlgo order status text -> OPEN, COMPLETE, REJECTED, CANCELLED or UNKNOWN."""
    text = str(raw or "").strip().lower()
    if text in ("complete", "completed", "filled", "traded"):
        return "COMPLETE"
    if text == "rejected":
        return "REJECTED"
    if text in ("cancelled", "canceled"):
        return "CANCELLED"
    if text in ("open", "pending", "trigger pending", "trigger_pending") or any(
        word in text for word in ("pending", "open", "put order", "validation", "modif")
    ):
        return "OPEN"
    return "UNKNOWN"


def parse_timestamp(
    raw: object, today: Callable[[], dt.date], tz: dt.tzinfo = IST
) -> dt.datetime | None:
    """A broker timestamp (IST) as an aware UTC datetime; time-only means today (IST)."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise BrokerParseError(f"timestamp: expected text, got {type(raw).__name__}")
    text = raw.strip()
    local = _parse_broker_format(text, today)
    if local is None:
        try:
            local = dt.datetime.fromisoformat(text)
        except ValueError:
            raise BrokerParseError(f"timestamp: unknown format {text[:40]!r}") from None
    if local.tzinfo is None:
        local = local.replace(tzinfo=tz)
    return local.astimezone(dt.UTC)


def _parse_broker_format(text: str, today: Callable[[], dt.date]) -> dt.datetime | None:
    # "28-Nov-2025 10:30:01" (month names parsed by hand: %b depends on the locale)
    date_part, _, time_part = text.partition(" ")
    pieces = date_part.split("-")
    if len(pieces) == 3 and pieces[1].upper() in _MONTHS and time_part:
        clock = _parse_clock(time_part)
        if clock is None:
            return None
        try:
            day = dt.date(int(pieces[2]), _MONTHS[pieces[1].upper()], int(pieces[0]))
        except ValueError:
            return None
        return dt.datetime.combine(day, clock)
    if not time_part:
        clock = _parse_clock(text)
        if clock is not None:
            return dt.datetime.combine(today(), clock)
    return None


def _parse_clock(text: str) -> dt.time | None:
    try:
        return dt.time.fromisoformat(text)
    except ValueError:
        return None


def _rows(data: object, key: str, field: str) -> Sequence[Mapping[str, Any]]:
    """A list given bare or wrapped as ``{key: [...]}``."""
    if isinstance(data, Mapping):
        data = data.get(key)
    if data is None:
        return []
    if not isinstance(data, list):
        raise BrokerParseError(f"{field}: expected a list")
    for row in data:
        if not isinstance(row, Mapping):
            raise BrokerParseError(f"{field}: expected objects in the list")
    return data


def order_status_row(
    row: Mapping[str, Any], today: Callable[[], dt.date], order_id: str | None = None
) -> OrderStatus:
    """One ``orderstatus`` data object or ``orderbook`` row."""
    if not isinstance(row, Mapping):
        raise BrokerParseError("order: expected an object")
    average = to_decimal(row.get("average_price"), "average_price")
    return OrderStatus(
        order_id=to_text(row, "orderid", order_id),
        symbol=to_text(row, "symbol"),
        exchange=to_text(row, "exchange"),
        action=to_text(row, "action").upper(),
        quantity=to_int(row.get("quantity"), "quantity"),
        price=to_decimal(row.get("price"), "price") or Decimal(0),
        pricetype=to_text(row, "pricetype", "").upper(),
        product=to_text(row, "product", "").upper(),
        status=normalise_status(row.get("order_status", row.get("status"))),
        average_price=average if average else None,
        timestamp=parse_timestamp(row.get("timestamp"), today),
    )


def order_book(data: object, today: Callable[[], dt.date]) -> list[OrderStatus]:
    """``orderbook`` data: ``{"orders": [...]}`` or a bare list."""
    return [order_status_row(row, today) for row in _rows(data, "orders", "orderbook")]


def trade_book(data: object, today: Callable[[], dt.date]) -> list[TradeRow]:
    """``tradebook`` data: a list or ``{"trades": [...]}``; empty rows skipped."""
    trades = []
    for row in _rows(data, "trades", "tradebook"):
        quantity = to_int(row.get("quantity") or 0, "quantity")
        price = to_decimal(row.get("average_price"), "average_price")
        if quantity == 0 or not price:
            continue
        trade_id = row.get("tradeid")
        trades.append(
            TradeRow(
                order_id=to_text(row, "orderid"),
                symbol=to_text(row, "symbol"),
                exchange=to_text(row, "exchange"),
                action=to_text(row, "action").upper(),
                quantity=quantity,
                average_price=price,
                product=to_text(row, "product", "").upper(),
                timestamp=parse_timestamp(row.get("timestamp"), today),
                trade_id=None if trade_id in (None, "") else str(trade_id),
            )
        )
    return trades


def position_book(data: object) -> list[BrokerPosition]:
    """``positionbook`` data; quantity "0" (closed today) rows are dropped."""
    positions = []
    for row in _rows(data, "positions", "positionbook"):
        quantity = to_int(row.get("quantity") or 0, "quantity")
        if quantity == 0:
            continue
        average = to_decimal(row.get("average_price"), "average_price")
        positions.append(
            BrokerPosition(
                symbol=to_text(row, "symbol"),
                exchange=to_text(row, "exchange"),
                product=to_text(row, "product", "").upper(),
                quantity=quantity,
                average_price=average if average else None,
            )
        )
    return positions


def funds(data: object) -> Funds:
    """``funds`` data."""
    if not isinstance(data, Mapping):
        raise BrokerParseError("funds: expected an object")
    return Funds(
        availablecash=required_decimal(data, "availablecash"),
        utiliseddebits=to_decimal(data.get("utiliseddebits"), "utiliseddebits") or Decimal(0),
        collateral=to_decimal(data.get("collateral"), "collateral") or Decimal(0),
        m2mrealized=to_decimal(data.get("m2mrealized"), "m2mrealized") or Decimal(0),
        m2munrealized=to_decimal(data.get("m2munrealized"), "m2munrealized") or Decimal(0),
    )


def quote(data: object) -> Quote:
    """``quotes`` data; a zero bid or ask (no depth) counts as absent."""
    if not isinstance(data, Mapping):
        raise BrokerParseError("quotes: expected an object")
    bid = to_decimal(data.get("bid"), "bid")
    ask = to_decimal(data.get("ask"), "ask")
    return Quote(
        ltp=required_decimal(data, "ltp"),
        bid=bid if bid else None,
        ask=ask if ask else None,
    )


def ping(data: object) -> str:
    """``ping`` data: the broker name (or the message when no broker is named)."""
    if not isinstance(data, Mapping):
        raise BrokerParseError("ping: expected an object")
    return to_text(data, "broker", str(data.get("message") or "pong"))


def analyzer_mode(data: object) -> str:
    """``analyzer`` data: ``analyze`` or ``live``."""
    if not isinstance(data, Mapping):
        raise BrokerParseError("analyzer: expected an object")
    mode = data.get("mode")
    if isinstance(mode, str) and mode:
        return mode.lower()
    flag = data.get("analyze_mode")
    if isinstance(flag, bool):
        return "analyze" if flag else "live"
    raise BrokerParseError("analyzer: neither mode nor analyze_mode")
