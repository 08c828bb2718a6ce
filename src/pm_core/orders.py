"""Order intents: client order ids, intent states, leg groups, unknown-order matching."""

from __future__ import annotations


def client_order_id(fingerprint_part: str, label_number: int, leg: str, attempt: int) -> str:
    """pm-<16 hex of the fingerprint>-<label n>-<leg>-<attempt> (architecture 4.1), <= 40 chars.

    ``fingerprint_part`` is the full fingerprint (its first 16 hex are used) or, without a
    signal, ``r<position id>.<roll no>`` / ``m<group id>``.
    """
    raise NotImplementedError
