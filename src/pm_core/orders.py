"""Order intents: client order ids, intent states, leg groups, unknown-order matching."""

from __future__ import annotations

import re

_HEX16 = re.compile(r"[0-9a-f]{16}")
_NON_SIGNAL = re.compile(r"r\d+\.\d+|m[0-9A-Za-z_]+")
MAX_CLIENT_ORDER_ID = 40
LEGS = ("CE", "PE", "FUT")


def _fingerprint_part(fingerprint_part: str) -> str:
    if _NON_SIGNAL.fullmatch(fingerprint_part):
        return fingerprint_part
    head = fingerprint_part[:16].lower()
    if len(fingerprint_part) < 16 or not _HEX16.fullmatch(head):
        raise ValueError(
            "client order ids need a hex fingerprint (>= 16 hex), r<position>.<roll> or "
            f"m<group>, got {fingerprint_part!r}"
        )
    return head


def client_order_id(fingerprint_part: str, label_number: int, leg: str, attempt: int) -> str:
    """pm-<16 hex of the fingerprint>-<label n>-<leg>-<attempt> (architecture 4.1), <= 40 chars.

    ``fingerprint_part`` is the full fingerprint (its first 16 hex are used) or, without a
    signal, ``r<position id>.<roll no>`` / ``m<group id>``.
    """
    if leg not in LEGS:
        raise ValueError(f"leg must be one of {', '.join(LEGS)}, got {leg!r}")
    if label_number < 0 or attempt < 1:
        raise ValueError("label number must be >= 0 and attempt >= 1")
    cid = f"pm-{_fingerprint_part(fingerprint_part)}-{label_number}-{leg}-{attempt}"
    if len(cid) > MAX_CLIENT_ORDER_ID:
        raise ValueError(f"client order id {cid!r} is longer than {MAX_CLIENT_ORDER_ID} characters")
    return cid


def child_order_id(parent_id: str, child: int) -> str:
    """Client id of the ``child``-th (1-based) freeze-quantity slice: ``<parent>.<child>``."""
    if child < 1:
        raise ValueError("freeze children are numbered from 1")
    cid = f"{parent_id}.{child}"
    if len(cid) > MAX_CLIENT_ORDER_ID:
        raise ValueError(f"client order id {cid!r} is longer than {MAX_CLIENT_ORDER_ID} characters")
    return cid
