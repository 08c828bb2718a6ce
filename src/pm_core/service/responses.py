"""Response bodies of signal processing (webhook.md 1.3), built once and stored for replays."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from pm_core.model import UTC, Decision, Signal
from pm_core.ports import StoredIntent


def utc_text(ts: dt.datetime) -> str:
    """ISO 8601 in UTC with ``Z``; microseconds only when non-zero."""
    text = ts.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


def signal_summary(signal: Signal) -> dict[str, Any]:
    """The normalised type, instrument, position and UTC timestamp of a signal."""
    return {
        "type": signal.type,
        "instrument": signal.instrument,
        "position": signal.position,
        "timestamp": utc_text(signal.timestamp),
    }


def order_rows(intents: Sequence[StoredIntent]) -> list[dict[str, Any]]:
    """The ``orders`` list: one row per intent that was sent."""
    rows = []
    for stored in intents:
        if stored.state in ("pending", "abandoned") and stored.attempts == 0:
            continue
        intent = stored.intent
        filled = stored.state in ("filled", "partially_filled", "cancelled")
        average = stored.average_price if filled and stored.filled_quantity else None
        rows.append(
            {
                "client_order_id": intent.client_order_id,
                "symbol": intent.symbol,
                "action": intent.action,
                "quantity": intent.quantity,
                "state": stored.state,
                "broker_order_id": stored.broker_order_id,
                "average_price": float(average) if average is not None else None,
            }
        )
    return rows


def decided_body(
    request_id: str,
    signal_id: int,
    fingerprint: str,
    signal: Signal,
    decision: Decision,
    orders: Sequence[Mapping[str, Any]],
    processing_ms: int,
) -> dict[str, Any]:
    """200 body of a decided signal: executed, partially_executed, blocked, rejected, failed."""
    record = decision.record()
    body: dict[str, Any] = {
        "status": decision.outcome,
        "request_id": request_id,
        "signal_id": signal_id,
        "fingerprint": fingerprint,
        "signal": signal_summary(signal),
        "reason_codes": [c.code for c in decision.codes],
        "message": " | ".join(decision.messages),
        "decision": record,
    }
    if orders:
        body["orders"] = list(orders)
    body["processing_ms"] = processing_ms
    return body


def duplicate_body(
    request_id: str,
    layer: str,
    code: str,
    message: str,
    signal_id: int,
    fingerprint: str,
    original: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """200 body of a duplicate, carrying the original's stored response."""
    return {
        "status": "duplicate",
        "request_id": request_id,
        "duplicate_layer": layer,
        "reason_codes": [code],
        "message": message,
        "signal_id": signal_id,
        "fingerprint": fingerprint,
        "original": original,
    }


def in_progress_body(
    request_id: str, signal_id: int | None, fingerprint: str, state: str
) -> dict[str, Any]:
    """202 body while the signal is queued or processing."""
    body: dict[str, Any] = {"status": "in_progress", "request_id": request_id}
    if signal_id is not None:
        body["signal_id"] = signal_id
    body["fingerprint"] = fingerprint
    body["state"] = state
    return body


def original_of(
    http_status: int | None, completed_at: dt.datetime | None, body: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The ``original`` object of a duplicate answer."""
    completed = None
    if completed_at is not None:
        completed = utc_text(
            completed_at.replace(microsecond=completed_at.microsecond // 1000 * 1000)
        )
    return {"http_status": http_status, "completed_at": completed, "body": body}
