"""One cattrs converter between table rows and core values, plus the JSON codec of JSON columns.

Column types already give floats, aware datetimes, dates and Decimals; JSON columns hold
ISO 8601 strings and decimal strings, which the same hooks accept.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import cattrs

from pm_core.model import OrderIntent, PendingExit, Position, Signal
from pm_core.ports import StoredIntent, StoredSignal

converter = cattrs.Converter()


def _structure_datetime(value: Any, _: type) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))


def _structure_date(value: Any, _: type) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


def _structure_decimal(value: Any, _: type) -> Decimal:
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def _structure_float(value: Any, _: type) -> float:
    return float(value)


converter.register_structure_hook(dt.datetime, _structure_datetime)
converter.register_structure_hook(dt.date, _structure_date)
converter.register_structure_hook(Decimal, _structure_decimal)
converter.register_structure_hook(float, _structure_float)
# Keep datetimes, dates and Decimals as objects: columns bind them, json_default writes them.
converter.register_unstructure_hook(dt.datetime, lambda v: v)
converter.register_unstructure_hook(dt.date, lambda v: v)
converter.register_unstructure_hook(Decimal, lambda v: v)


def json_default(value: Any) -> Any:
    """JSON encoding of the values rows carry: ISO 8601 times, decimal strings."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, frozenset | set | tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def json_dumps(value: Any) -> str:
    """The JSON text stored in JSON/JSONB columns."""
    return json.dumps(value, default=json_default, separators=(",", ":"))


def json_loads(text: str | bytes) -> Any:
    """Parse a JSON column."""
    return json.loads(text)


def jsonable(value: Any) -> Any:
    """A plain JSON-ready structure (round-trips through the codec)."""
    return json.loads(json_dumps(value))


POSITION_FIELDS = tuple(a.name for a in Position.__attrs_attrs__)


def position_values(position: Position) -> dict[str, Any]:
    """The portfolio_positions column values of a position (``id`` included)."""
    values: dict[str, Any] = converter.unstructure(position)
    if position.pending_exit is not None:
        values["pending_exit"] = jsonable(converter.unstructure(position.pending_exit))
    return values


def position_from_row(row: Mapping[Any, Any]) -> Position:
    """A Position from a portfolio_positions row.

    The column types already produce floats, ints, dates and aware datetimes, so the record
    is built directly (recovery reads 10,000 of them); only ``pending_exit`` JSON is structured.
    """
    data = {name: row[name] for name in POSITION_FIELDS}
    pending = data["pending_exit"]
    if pending is not None:
        data["pending_exit"] = converter.structure(pending, PendingExit)
    return Position(**data)


def position_as_stored(position: Position) -> Position:
    """The position as a read of the row just written would return it.

    Column round trips: aware datetimes come back in UTC, ``pending_exit`` through JSON;
    NUMERIC holds the shortest decimal of each float, which reads back as the same float.
    """
    values = position_values(position)
    for name, value in values.items():
        if isinstance(value, dt.datetime):
            values[name] = value.astimezone(dt.UTC)
    return position_from_row(values)


def signal_payload(signal: Signal) -> dict[str, Any]:
    """The signal as stored in ``signal_log.payload`` (it never carries the secret)."""
    payload: dict[str, Any] = converter.unstructure(signal)  # the JSON codec writes datetimes
    return payload


def signal_from_payload(payload: Mapping[str, Any]) -> Signal:
    """Rebuild the Signal stored in a payload."""
    return converter.structure(dict(payload), Signal)


def stored_signal_from_row(row: Mapping[Any, Any]) -> StoredSignal:
    """A StoredSignal from a signal_log row."""
    return StoredSignal(
        id=row["id"],
        fingerprint=row["fingerprint"],
        signal=signal_from_payload(row["payload"]),
        received_at=row["received_at"],
        status=row["status"],
        owner_instance_id=row["owner_instance_id"],
        claim_epoch=row["claim_epoch"],
        outcome=row["outcome"],
        http_status=row["http_status"],
        attention_required=bool(row["attention_required"]),
        response=row["response"],
        completed_at=row["completed_at"],
    )


def intent_values(intent: OrderIntent) -> dict[str, Any]:
    """The order_intents column values of an intent."""
    values: dict[str, Any] = converter.unstructure(intent)
    return values


def stored_intent_from_row(row: Mapping[Any, Any]) -> StoredIntent:
    """A StoredIntent from an order_intents row."""
    intent = converter.structure(dict(row), OrderIntent)
    return StoredIntent(
        id=row["id"],
        intent=intent,
        state=row["state"],
        signal_id=row["signal_id"],
        broker_order_id=row["broker_order_id"],
        filled_quantity=row["filled_quantity"],
        average_price=row["average_price"],
        attempts=row["attempts"],
        owner_instance_id=row["owner_instance_id"],
        leader_epoch=row["leader_epoch"],
        sent_at=row["sent_at"],
        last_error=row["last_error"],
        broker_mode=row["broker_mode"],
        version=row["version"],
    )
