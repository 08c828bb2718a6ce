"""PaperBroker: the Broker port in memory, filling each order at once (PM_BROKER=paper).

Reference price choice: OrderRequest carries no ``ref_price``, so the service tells the paper
broker prices in one of two ways. A quote set with ``set_quote`` wins (BUY fills at the ask,
SELL at the bid, falling back to the last price); without a quote a MARKET order fills at
``OrderRequest.price`` when it is above zero (the service sends the intent's ``ref_price``
there), and is rejected otherwise (``no_reference_price``), never filled at a made-up price.
Slippage moves the fill ``slippage_ticks`` ticks against the order (domain 11.3).

LIMIT orders fill at once at the better of quote and limit when marketable, rest ``OPEN``
when a quote shows they are not (later ``set_quote`` calls may fill them), and fill at the
limit price when no quote is known.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections.abc import Mapping, Sequence
from decimal import Decimal

import attrs

from pm_core.model import Funds, Quote
from pm_core.ports import (
    Accepted,
    BrokerPosition,
    Clock,
    Definitive,
    Ok,
    OrderRequest,
    OrderStatus,
    ReadError,
    ReadResult,
    SubmitResult,
    TradeRow,
)

DEFAULT_TICK_SIZES: Mapping[str, Decimal] = {"MCX": Decimal(1)}


@attrs.define
class _Order:
    order_id: str
    request: OrderRequest
    status: str
    placed_at: dt.datetime
    average_price: Decimal | None = None


@attrs.define
class _Net:
    quantity: int = 0
    average_price: Decimal = Decimal(0)


@attrs.frozen
class _RejectRule:
    symbol: str | None
    message: str


class PaperBroker:
    """In-memory broker: order book, trade book, net positions and funds; thread-safe."""

    def __init__(
        self,
        clock: Clock | None = None,
        slippage_ticks: int = 0,
        *,
        tick_sizes: Mapping[str, Decimal] | None = None,
        default_tick: Decimal = Decimal("0.05"),
        cash: Decimal = Decimal(10_000_000),
        mode: str = "analyze",
    ) -> None:
        self._clock = clock
        self._slippage_ticks = slippage_ticks
        self._tick_sizes = dict(DEFAULT_TICK_SIZES if tick_sizes is None else tick_sizes)
        self._default_tick = default_tick
        self._cash = cash
        self._mode = mode
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._trade_ids = itertools.count(1)
        self._quotes: dict[tuple[str, str], Quote] = {}
        self._orders: dict[str, _Order] = {}
        self._trades: list[TradeRow] = []
        self._nets: dict[tuple[str, str, str], _Net] = {}
        self._realized = Decimal(0)
        self._rejects: list[_RejectRule] = []

    # ------------------------------------------------------------------ controls

    def set_quote(self, exchange: str, symbol: str, quote: Quote) -> None:
        """Set the reference quote of a symbol; resting LIMIT orders it crosses fill."""
        with self._lock:
            self._quotes[(exchange, symbol)] = quote
            for order in self._orders.values():
                if order.status == "OPEN" and (order.request.exchange, order.request.symbol) == (
                    exchange,
                    symbol,
                ):
                    self._try_fill(order)

    def reject_next(self, symbol: str | None = None, message: str = "rejected by paper") -> None:
        """Reject the next order (of ``symbol``, or any) with ``message``; no order is kept."""
        with self._lock:
            self._rejects.append(_RejectRule(symbol, message))

    # ------------------------------------------------------------------ writes

    def place(self, order: OrderRequest) -> SubmitResult:
        """Fill at once (or rest a non-marketable LIMIT order)."""
        problem = _validate(order)
        if problem:
            return Definitive("broker_rejected", problem)
        with self._lock:
            for rule in self._rejects:
                if rule.symbol is None or rule.symbol == order.symbol:
                    self._rejects.remove(rule)
                    return Definitive("broker_rejected", rule.message)
            if order.pricetype == "MARKET" and self._market_price(order) is None:
                return Definitive(
                    "broker_rejected",
                    f"no_reference_price: no quote for {order.exchange}:{order.symbol} "
                    "and no price on the order",
                )
            order_id = f"PAPER{next(self._ids):09d}"
            record = _Order(order_id, order, "OPEN", self._now())
            self._orders[order_id] = record
            self._try_fill(record)
            return Accepted(order_id, self._mode)

    def modify(self, order_id: str, order: OrderRequest) -> SubmitResult:
        """Replace an open order's quantity, price and type."""
        problem = _validate(order)
        if problem:
            return Definitive("broker_rejected", problem)
        with self._lock:
            record = self._orders.get(order_id)
            if record is None:
                return Definitive("broker_rejected", f"order {order_id} not found")
            if record.status != "OPEN":
                return Definitive(
                    "broker_rejected", f"order {order_id} is {record.status}, cannot modify"
                )
            if order.pricetype == "MARKET" and self._market_price(order) is None:
                return Definitive("broker_rejected", "no_reference_price")
            record.request = order
            self._try_fill(record)
            return Accepted(order_id, self._mode)

    def cancel(self, order_id: str, tag: str = "") -> SubmitResult:
        """Cancel an open order; cancelling a cancelled order succeeds again."""
        with self._lock:
            record = self._orders.get(order_id)
            if record is None:
                return Definitive("broker_rejected", f"order {order_id} not found")
            if record.status == "OPEN":
                record.status = "CANCELLED"
            if record.status != "CANCELLED":
                return Definitive(
                    "broker_rejected", f"order {order_id} is {record.status}, cannot cancel"
                )
            return Accepted(order_id, self._mode)

    # ------------------------------------------------------------------ reads

    def order_status(self, order_id: str, tag: str = "") -> ReadResult[OrderStatus]:
        """One order's status."""
        with self._lock:
            record = self._orders.get(order_id)
            if record is None:
                return ReadError("not_found", f"order {order_id} not found")
            return Ok(_status(record))

    def order_book(self) -> ReadResult[Sequence[OrderStatus]]:
        """Every order placed."""
        with self._lock:
            return Ok([_status(record) for record in self._orders.values()])

    def trade_book(self) -> ReadResult[Sequence[TradeRow]]:
        """Every fill."""
        with self._lock:
            return Ok(list(self._trades))

    def positions(self) -> ReadResult[Sequence[BrokerPosition]]:
        """Open net positions (signed quantity)."""
        with self._lock:
            return Ok(
                [
                    BrokerPosition(symbol, exchange, product, net.quantity, net.average_price)
                    for (exchange, symbol, product), net in self._nets.items()
                    if net.quantity
                ]
            )

    def funds(self) -> ReadResult[Funds]:
        """Starting cash plus realized P&L; unrealized P&L at the known last prices."""
        with self._lock:
            unrealized = Decimal(0)
            for (exchange, symbol, _product), net in self._nets.items():
                known = self._quotes.get((exchange, symbol))
                if net.quantity and known is not None:
                    unrealized += (known.ltp - net.average_price) * net.quantity
            return Ok(
                Funds(
                    availablecash=self._cash + self._realized,
                    m2mrealized=self._realized,
                    m2munrealized=unrealized,
                )
            )

    def quote(self, symbol: str, exchange: str) -> ReadResult[Quote]:
        """The quote given with ``set_quote``."""
        with self._lock:
            known = self._quotes.get((exchange, symbol))
        if known is None:
            return ReadError("not_found", f"no quote for {exchange}:{symbol}")
        return Ok(known)

    def ping(self) -> ReadResult[str]:
        """Always reachable."""
        return Ok("paper")

    def mode(self) -> ReadResult[str]:
        """The mode given at construction (``analyze`` by default)."""
        return Ok(self._mode)

    # ------------------------------------------------------------------ internals

    def _now(self) -> dt.datetime:
        return self._clock.now() if self._clock is not None else dt.datetime.now(dt.UTC)

    def _tick(self, exchange: str) -> Decimal:
        return self._tick_sizes.get(exchange, self._default_tick)

    def _market_price(self, order: OrderRequest) -> Decimal | None:
        known = self._quotes.get((order.exchange, order.symbol))
        if known is not None:
            side = known.ask if order.action == "BUY" else known.bid
            return side if side else known.ltp
        # No quote: the order's own price is the reference, zero included: an at-the-money
        # option's intrinsic value is 0, and the synthetic still fills at the signal price.
        return order.price if order.price >= 0 else None

    def _try_fill(self, record: _Order) -> None:
        order = record.request
        slip = self._tick(order.exchange) * self._slippage_ticks
        sign = 1 if order.action == "BUY" else -1
        price: Decimal | None
        if order.pricetype == "MARKET":
            price = self._market_price(order)
            if price is not None:
                price += sign * slip
        else:
            known = self._quotes.get((order.exchange, order.symbol))
            if known is None:
                price = order.price
            else:
                market = self._market_price(order)
                assert market is not None
                marketable = market <= order.price if sign > 0 else market >= order.price
                if not marketable:
                    return
                worse = market + sign * slip
                price = min(worse, order.price) if sign > 0 else max(worse, order.price)
        if price is None:
            return
        self._fill(record, price)

    def _fill(self, record: _Order, price: Decimal) -> None:
        order = record.request
        record.status = "COMPLETE"
        record.average_price = price
        self._trades.append(
            TradeRow(
                order_id=record.order_id,
                symbol=order.symbol,
                exchange=order.exchange,
                action=order.action,
                quantity=order.quantity,
                average_price=price,
                product=order.product,
                timestamp=self._now(),
                trade_id=f"PT{next(self._trade_ids):09d}",
            )
        )
        net = self._nets.setdefault((order.exchange, order.symbol, order.product), _Net())
        delta = order.quantity if order.action == "BUY" else -order.quantity
        net.quantity, net.average_price, realized = net_fill(
            net.quantity, net.average_price, delta, price
        )
        self._realized += realized


def net_fill(
    quantity: int, average_price: Decimal, delta: int, price: Decimal
) -> tuple[int, Decimal, Decimal]:
    """Net a signed fill into a position: (new quantity, new average, realized P&L)."""
    if quantity == 0 or (quantity > 0) == (delta > 0):
        total = quantity + delta
        average = (average_price * abs(quantity) + price * abs(delta)) / abs(total)
        return total, average, Decimal(0)
    closing = min(abs(delta), abs(quantity))
    direction = 1 if quantity > 0 else -1
    realized = (price - average_price) * closing * direction
    remaining = quantity + delta
    if remaining == 0:
        average_price = Decimal(0)
    elif (remaining > 0) != (quantity > 0):
        average_price = price  # flipped: the rest opened at this fill
    return remaining, average_price, realized


def _validate(order: OrderRequest) -> str | None:
    if order.quantity <= 0:
        return "quantity must be positive"
    if order.pricetype == "LIMIT" and order.price <= 0:
        return "a LIMIT order needs a positive price"
    if not order.symbol or not order.exchange:
        return "symbol and exchange are required"
    return None


def _status(record: _Order) -> OrderStatus:
    order = record.request
    return OrderStatus(
        order_id=record.order_id,
        symbol=order.symbol,
        exchange=order.exchange,
        action=order.action,
        quantity=order.quantity,
        price=order.price,
        pricetype=order.pricetype,
        product=order.product,
        status=record.status,
        average_price=record.average_price,
        timestamp=record.placed_at,
    )
