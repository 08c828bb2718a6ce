"""Order intents: client order ids, intent states, leg groups, unknown-order matching."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import attrs

from pm_core.calendar import Contract, futures_symbol, option_symbol
from pm_core.config import InstrumentConfig
from pm_core.model import Action, IntentOrigin, Leg, OrderIntent, Position
from pm_core.ports import TERMINAL_INTENT_STATES, IntentState, OrderStatus, TradeRow

_HEX16 = re.compile(r"[0-9a-f]{16}")
_NON_SIGNAL = re.compile(r"r\d+\.\d+|m[0-9A-Za-z_]+")
_NON_SIGNAL_FIRST = ("r", "m")  # a hex fingerprint never starts so: skip that regex
MAX_CLIENT_ORDER_ID = 40
LEGS = ("CE", "PE", "FUT")


def _fingerprint_part(fingerprint_part: str) -> str:
    if fingerprint_part[:1] in _NON_SIGNAL_FIRST and _NON_SIGNAL.fullmatch(fingerprint_part):
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
    return _client_order_id(_fingerprint_part(fingerprint_part), label_number, leg, attempt)


def _client_order_id(part: str, label_number: int, leg: str, attempt: int) -> str:
    """client_order_id with the fingerprint part already checked (once per intent group)."""
    if leg not in LEGS:
        raise ValueError(f"leg must be one of {', '.join(LEGS)}, got {leg!r}")
    if label_number < 0 or attempt < 1:
        raise ValueError("label number must be >= 0 and attempt >= 1")
    cid = f"pm-{part}-{label_number}-{leg}-{attempt}"
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


# --------------------------------------------------------------------------- legs


@attrs.frozen(slots=False)  # built per signal: see "Slots or not" in pm_core.model
class LegSpec:
    """One leg to send: direction, symbol, broker quantity (split above the freeze quantity)."""

    leg: Leg
    action: Action
    symbol: str
    exchange: str
    product: str
    quantity: int  # broker units, whole leg
    lots: int
    ref_price: float
    slices: tuple[int, ...]  # broker quantities of the orders; one entry unless frozen


def ref_price(leg: Leg, signal_price: float, strike: float | None) -> float:
    """Reference fill price: signal price for futures, intrinsic value at the strike for options.

    So a paper synthetic fills at the signal price: K + CE - PE = price.
    """
    if leg == "FUT":
        return signal_price
    if strike is None:
        raise ValueError("option legs need a strike")
    if leg == "CE":
        return max(0.0, signal_price - strike)
    return max(0.0, strike - signal_price)


def split_quantity(quantity: int, freeze_quantity: int | None, step: int) -> tuple[int, ...]:
    """Broker quantities of one leg's orders: at most ``freeze_quantity`` each, on the lot grid."""
    if quantity <= 0:
        raise ValueError(f"order quantity must be > 0, got {quantity}")
    if freeze_quantity is None or quantity <= freeze_quantity:
        return (quantity,)
    chunk = (freeze_quantity // step) * step
    if chunk <= 0:
        raise ValueError(f"freeze quantity {freeze_quantity} is below one lot ({step})")
    full, rest = divmod(quantity, chunk)
    return (chunk,) * full + ((rest,) if rest else ())


def _unit(inst: InstrumentConfig, lot_size: int) -> int:
    return lot_size if inst.order_quantity_unit == "units" else 1


def _spec(
    inst: InstrumentConfig,
    leg: Leg,
    action: Action,
    symbol: str,
    lots: int,
    lot_size: int,
    price: float,
    strike: float | None,
) -> LegSpec:
    if lots <= 0:
        raise ValueError(f"lots must be > 0, got {lots}")
    quantity = inst.broker_quantity(lots, lot_size)
    freeze = inst.freeze_quantity
    if quantity > 0 and (freeze is None or quantity <= freeze):
        slices: tuple[int, ...] = (quantity,)  # split_quantity's answer, without the call
    else:
        slices = split_quantity(quantity, freeze, _unit(inst, lot_size))
    return LegSpec(  # positional, in field order
        leg,
        action,
        symbol,
        inst.exchange,
        inst.product,
        quantity,
        lots,
        price if leg == "FUT" else ref_price(leg, price, strike),
        slices,
    )


def entry_legs(
    inst: InstrumentConfig, contract: Contract, strike: float | None, lots: int, price: float
) -> tuple[LegSpec, ...]:
    """Legs that open ``lots`` long, hedge first: BUY CE then SELL PE, or BUY the future."""
    if inst.kind == "future":
        symbol = futures_symbol(inst.symbol_root, contract.expiry)
        return (_spec(inst, "FUT", "BUY", symbol, lots, contract.lot_size, price, None),)
    if strike is None:
        raise ValueError(f"{inst.id} entries need a strike")
    ce = option_symbol(inst.symbol_root, contract.expiry, strike, "CE")
    pe = option_symbol(inst.symbol_root, contract.expiry, strike, "PE")
    return (
        _spec(inst, "CE", "BUY", ce, lots, contract.lot_size, price, strike),
        _spec(inst, "PE", "SELL", pe, lots, contract.lot_size, price, strike),
    )


def position_entry_legs(
    inst: InstrumentConfig, position: Position, lots: int, price: float
) -> tuple[LegSpec, ...]:
    """``entry_legs`` of a reserved position, reusing the symbols it was given.

    A new position carries the symbols ``entry_legs`` would name from its expiry and strike;
    without them they are named here, as ``entry_legs`` would (no expiry: ``date.min``).
    """
    expiry = position.expiry or dt.date.min
    if inst.kind == "future":
        symbol = position.futures_symbol or futures_symbol(inst.symbol_root, expiry)
        return (_spec(inst, "FUT", "BUY", symbol, lots, position.lot_size, price, None),)
    strike = position.strike
    if strike is None:
        raise ValueError(f"{inst.id} entries need a strike")
    ce = position.ce_symbol or option_symbol(inst.symbol_root, expiry, strike, "CE")
    pe = position.pe_symbol or option_symbol(inst.symbol_root, expiry, strike, "PE")
    return (
        _spec(inst, "CE", "BUY", ce, lots, position.lot_size, price, strike),
        _spec(inst, "PE", "SELL", pe, lots, position.lot_size, price, strike),
    )


def exit_legs(
    inst: InstrumentConfig, position: Position, lots: int, price: float
) -> tuple[LegSpec, ...]:
    """Legs that close ``lots`` of a position, hedge first: BUY PE then SELL CE, or SELL."""
    if position.expiry is None:
        raise ValueError(f"{position.key} has no contract to close")
    if lots > position.lots:
        raise ValueError(f"cannot close {lots} lots of {position.key}: it holds {position.lots}")
    if inst.kind == "future":
        symbol = position.futures_symbol or futures_symbol(inst.symbol_root, position.expiry)
        return (_spec(inst, "FUT", "SELL", symbol, lots, position.lot_size, price, None),)
    strike = position.strike
    if strike is None:
        raise ValueError(f"{position.key} has no strike")
    pe = position.pe_symbol or option_symbol(inst.symbol_root, position.expiry, strike, "PE")
    ce = position.ce_symbol or option_symbol(inst.symbol_root, position.expiry, strike, "CE")
    return (
        _spec(inst, "PE", "BUY", pe, lots, position.lot_size, price, strike),
        _spec(inst, "CE", "SELL", ce, lots, position.lot_size, price, strike),
    )


def intents_for(
    legs: Sequence[LegSpec],
    *,
    fingerprint_part: str,
    label_number: int,
    origin: IntentOrigin,
    position_id: int,
    group_id: str,
    instrument: str,
    attempt: int = 1,
    first_seq: int = 1,
) -> tuple[OrderIntent, ...]:
    """Market intents in send order; a frozen leg becomes children ``<id>.1``, ``<id>.2``, ..."""
    return make_intents(
        legs, fingerprint_part, label_number, origin, position_id, group_id, instrument,
        attempt, first_seq,
    )  # fmt: skip


def make_intents(
    legs: Sequence[LegSpec],
    fingerprint_part: str,
    label_number: int,
    origin: IntentOrigin,
    position_id: int,
    group_id: str,
    instrument: str,
    attempt: int,
    first_seq: int,
) -> tuple[OrderIntent, ...]:
    """``intents_for`` with positional arguments (decide calls it for every position it trades)."""
    intents: list[OrderIntent] = []
    seq = first_seq
    part = _fingerprint_part(fingerprint_part) if legs else ""
    for spec in legs:
        parent = _client_order_id(part, label_number, spec.leg, attempt)
        per_lot = spec.quantity // spec.lots
        slices = spec.slices
        single = len(slices) == 1
        for n, qty in enumerate(slices, start=1):
            cid = parent if single else child_order_id(parent, n)
            # Positional (field order): a keyword call costs twice as much, once per leg.
            intents.append(
                OrderIntent(
                    cid,  # client_order_id
                    origin,
                    position_id,
                    spec.leg,
                    seq,
                    attempt,
                    spec.symbol,
                    spec.exchange,
                    spec.action,
                    spec.product,
                    "MARKET",  # pricetype
                    qty,  # quantity
                    qty // per_lot,  # lots
                    spec.ref_price,
                    group_id,
                    None,  # limit_price
                    instrument,
                )
            )
            seq += 1
    return tuple(intents)


# --------------------------------------------------------------------------- intent states

ALLOWED_TRANSITIONS: Mapping[IntentState, frozenset[IntentState]] = {
    "pending": frozenset({"sending", "failed", "abandoned"}),
    # back to pending when the send deadline lapsed before the request started
    "sending": frozenset(
        {"pending", "accepted", "unknown", "ambiguous", "rejected", "failed", "filled"}
    ),
    "accepted": frozenset(
        {"partially_filled", "filled", "cancelled", "rejected", "failed", "unknown"}
    ),
    "partially_filled": frozenset({"filled", "cancelled", "failed"}),
    "unknown": frozenset(
        {
            "accepted",
            "partially_filled",
            "filled",
            "cancelled",
            "rejected",
            "not_found",
            "ambiguous",
            "abandoned",
        }
    ),
    # an operator resolves it: bind an order id, or declare it never placed
    "ambiguous": frozenset(
        {
            "accepted",
            "partially_filled",
            "filled",
            "cancelled",
            "rejected",
            "not_found",
            "abandoned",
        }
    ),
    "filled": frozenset(),
    "cancelled": frozenset(),
    "rejected": frozenset(),
    "failed": frozenset(),
    "not_found": frozenset(),
    "abandoned": frozenset(),
}


def is_terminal(state: IntentState) -> bool:
    """Whether an intent in ``state`` will never change again."""
    return state in TERMINAL_INTENT_STATES


def can_transition(from_state: IntentState, to_state: IntentState) -> bool:
    """Whether an intent may move from ``from_state`` to ``to_state`` (service.md 2.4)."""
    return to_state in ALLOWED_TRANSITIONS.get(from_state, frozenset())


# --------------------------------------------------------------------------- unknown orders


@attrs.frozen
class MatchResult:
    """Outcome of matching an unknown intent against the books: bind, ambiguous or none."""

    kind: Literal["bind", "ambiguous", "none"]
    order_id: str | None = None
    candidates: tuple[str, ...] = ()
    source: str | None = None  # "orderbook" or "tradebook" for a bind


def _same(a: str, b: str) -> bool:
    return a.strip().upper() == b.strip().upper()


def _recent(ts: dt.datetime | None, earliest: dt.datetime) -> bool:
    if ts is None:
        # A book row without a time cannot be excluded; ambiguity still protects us.
        return True
    if (ts.tzinfo is None) != (earliest.tzinfo is None):
        ts = ts.replace(tzinfo=earliest.tzinfo)
    return ts >= earliest


def match_unknown(
    intent: OrderIntent,
    sent_at: dt.datetime,
    order_book: Iterable[OrderStatus],
    trade_book: Iterable[TradeRow],
    bound_order_ids: Iterable[str],
    window_s: float,
) -> MatchResult:
    """Find the broker order of an unknown intent by its parameters (openalgo.md 5).

    One candidate binds, several are ambiguous (never guess), none means look again later.
    """
    bound = set(bound_order_ids)
    earliest = sent_at - dt.timedelta(seconds=window_s)

    def params_match(symbol: str, exchange: str, action: str, product: str) -> bool:
        return (
            _same(symbol, intent.symbol)
            and _same(exchange, intent.exchange)
            and _same(action, intent.action)
            and _same(product, intent.product)
        )

    book = list(order_book)
    in_book = {o.order_id for o in book}
    candidates: dict[str, str] = {}
    for order in book:
        if order.order_id in bound or not params_match(
            order.symbol, order.exchange, order.action, order.product
        ):
            continue
        if order.quantity != intent.quantity:
            continue
        if order.pricetype and not _same(order.pricetype, intent.pricetype):
            continue
        if _recent(order.timestamp, earliest):
            candidates.setdefault(order.order_id, "orderbook")
    grouped: dict[str, list[TradeRow]] = {}
    for trade in trade_book:
        if trade.order_id in in_book or trade.order_id in bound:
            continue
        grouped.setdefault(trade.order_id, []).append(trade)
    for order_id, rows in grouped.items():
        if not all(params_match(r.symbol, r.exchange, r.action, r.product) for r in rows):
            continue
        if sum(r.quantity for r in rows) > intent.quantity:
            continue
        times = [r.timestamp for r in rows if r.timestamp is not None]
        if _recent(min(times) if times else None, earliest):
            candidates.setdefault(order_id, "tradebook")
    ids = tuple(sorted(candidates))
    if len(ids) == 1:
        return MatchResult("bind", ids[0], ids, candidates[ids[0]])
    if ids:
        return MatchResult("ambiguous", None, ids)
    return MatchResult("none")
