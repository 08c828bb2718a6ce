"""A fake OpenAlgo server for tests, demos and benchmarks (openalgo.md 9).

Production code never imports this module. It serves the REST v1 endpoints of openalgo.md 2
in their documented forms, plus a control API under ``/_simulator/``:

- ``POST /_simulator/rules`` ``{"rules": [{"match": {...}, "effect": {...}}], "append": false}``
  installs ordered rules; the first rule whose ``match`` (``endpoint``, ``symbol``, ``action``,
  ``nth`` = the nth matching call, 1-based, ``probability``) fits a call applies its effect.
  Effects (``effect`` is ``{"type": name, ...params}``, ``{name: {...params}}`` or a bare name):
  ``fill`` (after_ms, price), ``partial`` (fraction, rest ``open``|``cancel``, ms),
  ``reject_sync`` (message), ``reject_async`` (after_ms), ``latency_ms`` (ms),
  ``accept_then_timeout`` (delay_ms), ``http_error`` (status, body, record_order),
  ``book_lag_ms`` (ms), ``semi_auto``.
- ``POST /_simulator/reset`` ``{"seed"?, "lot_sizes"?}``: forget orders, trades, calls, rules.
- ``POST /_simulator/quotes`` ``{"quotes": [{"exchange", "symbol", "ltp", "bid"?, "ask"?,
  "script"?: [{ltp, bid, ask}, ...], "walk_step"?}]}``: static, scripted (one step per
  ``quotes`` call) or a seeded random walk; resting LIMIT orders are re-checked.
- ``POST /_simulator/mode`` ``{"mode"?: "analyze"|"live", "rate_limit"?: bool,
  "lot_sizes"?: {root: size}}``.
- ``POST /_simulator/clock`` ``{"manual": true, "now"?: ISO}`` / ``{"advance_ms": n}`` /
  ``{"manual": false}``: delayed effects run when the (manual or real) clock passes them.
- ``GET /_simulator/state``: orders (with ``strategy``), trades, positions, funds, the call log
  (endpoint, strategy, symbol, action, quantity, order id, response status) and rules.

Connection faults (refused, dropped, reset) come from ``tests/kit/faultproxy.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import heapq
import itertools
import json
import random
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

import attrs
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pm_adapters.openalgo.parsing import IST
from pm_adapters.paper import net_fill

DEFAULT_LOT_SIZES: Mapping[str, int] = {"BANKNIFTY": 30, "NIFTY": 75, "FINNIFTY": 65}
ORDER_ENDPOINTS = frozenset({"placeorder", "modifyorder", "cancelorder"})
RATE_LIMIT_BODY = {"status": "error", "message": "Rate limit exceeded. Please try again later."}
EFFECTS = frozenset(
    {
        "fill",
        "partial",
        "reject_sync",
        "reject_async",
        "latency_ms",
        "accept_then_timeout",
        "http_error",
        "book_lag_ms",
        "semi_auto",
    }
)
_DEFAULT_ERROR_BODIES: Mapping[int, Mapping[str, str]] = {
    403: {"status": "error", "message": "Invalid openalgo apikey"},
    429: RATE_LIMIT_BODY,
}
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_ROOT = re.compile(r"^([A-Z&-]+?)(?=\d)")
_TICK = Decimal("0.05")


class SimulatorInputError(ValueError):
    """A control or API request the simulator cannot read (answered with 400)."""


# --------------------------------------------------------------------------- state values


@attrs.define
class SimOrder:
    order_id: str
    strategy: str
    symbol: str
    exchange: str
    action: str
    product: str
    pricetype: str
    quantity: int
    price: Decimal
    status: str  # open, complete, rejected, cancelled
    placed_ms: float
    visible_ms: float
    filled: int = 0
    value: Decimal = Decimal(0)
    modifications: int = 0

    @property
    def average_price(self) -> Decimal:
        return self.value / self.filled if self.filled else Decimal(0)


@attrs.define
class SimTrade:
    trade_id: str
    order_id: str
    symbol: str
    exchange: str
    action: str
    product: str
    quantity: int
    price: Decimal
    at_ms: float
    visible_ms: float


@attrs.define
class SimQuote:
    ltp: Decimal
    bid: Decimal
    ask: Decimal
    script: list[tuple[Decimal, Decimal, Decimal]] = attrs.field(factory=list)
    walk_step: Decimal = Decimal(0)


@attrs.define
class Rule:
    endpoint: str | None
    symbol: str | None
    action: str | None
    nth: int | None
    probability: float | None
    effect: dict[str, Any]
    seen: int = 0
    applied: int = 0


@attrs.define
class SimClock:
    manual: bool = False
    manual_ms: float = 0.0

    def now_ms(self) -> float:
        return self.manual_ms if self.manual else time.time() * 1000


# --------------------------------------------------------------------------- the simulator


class Simulator:
    """The fake OpenAlgo's state and rules; every random choice comes from ``seed``."""

    def __init__(
        self,
        seed: int = 42,
        api_keys: Iterable[str] = ("test-key",),
        *,
        mode: str = "analyze",
        lot_sizes: Mapping[str, int] | None = None,
        rate_limit: bool = False,
        order_rate_limit: int = 10,
        read_rate_limit: int = 50,
        cash: Decimal = Decimal(10_000_000),
    ) -> None:
        self.api_keys = frozenset(api_keys)
        self.lock = threading.RLock()
        self.order_rate_limit = order_rate_limit
        self.read_rate_limit = read_rate_limit
        self.cash = cash
        self._initial = (
            mode,
            rate_limit,
            dict(DEFAULT_LOT_SIZES if lot_sizes is None else lot_sizes),
        )
        self.seed = seed
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        """Back to the start: orders, trades, calls, rules, quotes, mode, clock all forgotten."""
        with self.lock:
            if seed is not None:
                self.seed = seed
            self.mode, self.rate_limit, lot_sizes = self._initial
            self.lot_sizes = dict(lot_sizes)
            self.clock = SimClock()
            self.rng = random.Random(self.seed)
            self.orders: dict[str, SimOrder] = {}
            self.trades: list[SimTrade] = []
            self.nets: dict[tuple[str, str, str], tuple[int, Decimal]] = {}
            self.realized = Decimal(0)
            self.calls: list[dict[str, Any]] = []
            self.rules: list[Rule] = []
            self.quotes: dict[tuple[str, str], SimQuote] = {}
            self.events: list[tuple[float, int, Callable[[], None]]] = []
            self.event_seq = itertools.count()
            self.order_seq = itertools.count(1)
            self.trade_seq = itertools.count(1)
            self.windows: dict[tuple[str, str], deque[float]] = {}

    # ------------------------------------------------------------------ time and events

    def now_ms(self) -> float:
        return self.clock.now_ms()

    def schedule(self, after_ms: float, action: Callable[[], None]) -> None:
        if after_ms <= 0:
            action()
            return
        heapq.heappush(self.events, (self.now_ms() + after_ms, next(self.event_seq), action))

    def run_due(self) -> None:
        now = self.now_ms()
        while self.events and self.events[0][0] <= now:
            _, _, action = heapq.heappop(self.events)
            action()

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - whole seconds repeat; the cache is tiny
    def stamp(self, second: int) -> str:
        """A whole-second instant as OpenAlgo prints it: ``28-Nov-2025 10:30:01`` (IST)."""
        local = dt.datetime.fromtimestamp(second, dt.UTC).astimezone(IST)
        month = _MONTHS[local.month - 1].title()
        return f"{local.day:02d}-{month}-{local.year} {local:%H:%M:%S}"

    # ------------------------------------------------------------------ quotes

    def quote_of(self, exchange: str, symbol: str) -> SimQuote:
        """The symbol's quote; unknown symbols get a seeded one on first use."""
        key = (exchange, symbol)
        if key not in self.quotes:
            # Seeded per symbol, not from the shared generator, so that reading state or
            # quoting in another order never changes the prices a run sees.
            symbol_rng = random.Random(f"{self.seed}:{exchange}:{symbol}")
            ltp = (Decimal(symbol_rng.randrange(2000, 1_000_000)) * _TICK).quantize(_TICK)
            self.quotes[key] = SimQuote(ltp, ltp - _TICK, ltp + _TICK)
        return self.quotes[key]

    def step_quote(self, quote: SimQuote) -> None:
        if quote.script:
            quote.ltp, quote.bid, quote.ask = quote.script.pop(0)
        elif quote.walk_step:
            move = quote.walk_step * self.rng.choice((-1, 0, 1))
            quote.ltp, quote.bid, quote.ask = quote.ltp + move, quote.bid + move, quote.ask + move

    def set_quotes(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            exchange, symbol = _text(row, "exchange"), _text(row, "symbol")
            ltp = _decimal(row, "ltp")
            bid = _decimal(row, "bid", ltp)
            ask = _decimal(row, "ask", ltp)
            script = [
                (
                    _decimal(step, "ltp"),
                    _decimal(step, "bid", _decimal(step, "ltp")),
                    _decimal(step, "ask", _decimal(step, "ltp")),
                )
                for step in row.get("script") or []
            ]
            walk = _decimal(row, "walk_step", Decimal(0))
            self.quotes[(exchange, symbol)] = SimQuote(ltp, bid, ask, script, walk)
        for order in list(self.orders.values()):
            if order.status == "open" and order.pricetype == "LIMIT":
                self.fill_if_marketable(order)

    def market_price(self, order: SimOrder) -> Decimal:
        quote = self.quote_of(order.exchange, order.symbol)
        return quote.ask if order.action == "BUY" else quote.bid

    # ------------------------------------------------------------------ fills

    def lot_of(self, exchange: str, symbol: str) -> int:
        if exchange != "NFO":
            return 1
        match = _ROOT.match(symbol)
        return self.lot_sizes.get(match.group(1), 1) if match else 1

    def fill(self, order: SimOrder, quantity: int, price: Decimal, trades: int = 1) -> None:
        """Record ``quantity`` filled at ``price`` in ``trades`` trade rows."""
        quantity = min(quantity, order.quantity - order.filled)
        if quantity <= 0 or order.status != "open":
            return
        lot = self.lot_of(order.exchange, order.symbol)
        parts = _split(quantity, lot, trades)
        now = self.now_ms()
        for part in parts:
            self.trades.append(
                SimTrade(
                    trade_id=f"T{next(self.trade_seq):09d}",
                    order_id=order.order_id,
                    symbol=order.symbol,
                    exchange=order.exchange,
                    action=order.action,
                    product=order.product,
                    quantity=part,
                    price=price,
                    at_ms=now,
                    visible_ms=max(now, order.visible_ms),
                )
            )
        order.filled += quantity
        order.value += price * quantity
        if order.filled >= order.quantity:
            order.status = "complete"
        key = (order.exchange, order.symbol, order.product)
        held, average = self.nets.get(key, (0, Decimal(0)))
        delta = quantity if order.action == "BUY" else -quantity
        held, average, realized = net_fill(held, average, delta, price)
        self.nets[key] = (held, average)
        self.realized += realized

    def fill_if_marketable(self, order: SimOrder) -> None:
        market = self.market_price(order)
        if order.pricetype == "MARKET":
            self.fill(order, order.quantity, market)
            return
        buy = order.action == "BUY"
        if (buy and market <= order.price) or (not buy and market >= order.price):
            self.fill(order, order.quantity, market)

    def apply_order_effect(self, order: SimOrder, effect: Mapping[str, Any] | None) -> None:
        kind = effect.get("type") if effect else None
        if kind == "fill":
            price = _decimal(effect or {}, "price", Decimal(0))
            self.schedule(
                _number(effect, "after_ms", 0),
                lambda: self.fill(order, order.quantity, price or self.market_price(order)),
            )
        elif kind == "partial":
            assert effect is not None
            fraction = Decimal(str(_number(effect, "fraction", 0.5)))
            lot = self.lot_of(order.exchange, order.symbol)
            lots = (Decimal(order.quantity // lot) * fraction).to_integral_value(ROUND_FLOOR)
            price = _decimal(effect, "price", Decimal(0)) or self.market_price(order)
            self.fill(order, int(lots) * lot, price, trades=2)
            if str(effect.get("rest", "open")) == "cancel":
                self.schedule(_number(effect, "ms", 0), lambda: _close(order, "cancelled"))
        elif kind == "reject_async":
            self.schedule(_number(effect, "after_ms", 0), lambda: _close(order, "rejected"))
        else:
            self.fill_if_marketable(order)

    # ------------------------------------------------------------------ rules

    def install_rules(self, rows: Iterable[Mapping[str, Any]], append: bool) -> None:
        rules = [_rule(row) for row in rows]
        if not append:
            self.rules = []
        self.rules.extend(rules)

    def match_rule(self, endpoint: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        for rule in self.rules:
            if rule.endpoint not in (None, endpoint):
                continue
            if rule.symbol not in (None, body.get("symbol")):
                continue
            if rule.action not in (None, str(body.get("action", "")).upper()):
                continue
            rule.seen += 1
            if rule.nth is not None and rule.seen != rule.nth:
                continue
            if rule.probability is not None and self.rng.random() >= rule.probability:
                continue
            rule.applied += 1
            return rule.effect
        return None

    def rate_limited(self, endpoint: str, client: str) -> bool:
        if not self.rate_limit:
            return False
        group = "order" if endpoint in ORDER_ENDPOINTS else "read"
        limit = self.order_rate_limit if group == "order" else self.read_rate_limit
        window = self.windows.setdefault((client, group), deque())
        now = self.now_ms()
        while window and window[0] <= now - 1000:
            window.popleft()
        if len(window) >= limit:
            return True
        window.append(now)
        return False

    # ------------------------------------------------------------------ endpoints

    def handle(
        self, endpoint: str, body: Mapping[str, Any], effect: Mapping[str, Any] | None
    ) -> tuple[int, Any]:
        handler = _HANDLERS.get(endpoint)
        if handler is None:
            return 404, {"status": "error", "message": f"Unknown endpoint {endpoint}"}
        try:
            return handler(self, body, effect)
        except SimulatorInputError as exc:
            return 400, {"status": "error", "message": str(exc)}

    def _order_fields(self, body: Mapping[str, Any]) -> dict[str, Any]:
        errors: dict[str, list[str]] = {}
        for field in ("strategy", "symbol", "exchange", "action", "product", "pricetype"):
            if not isinstance(body.get(field), str) or not body.get(field):
                errors[field] = ["Missing data for required field."]
        action = str(body.get("action", "")).upper()
        if "action" not in errors and action not in ("BUY", "SELL"):
            errors["action"] = ["Must be one of: BUY, SELL."]
        pricetype = str(body.get("pricetype", "")).upper()
        if "pricetype" not in errors and pricetype not in ("MARKET", "LIMIT"):
            errors["pricetype"] = ["Must be one of: MARKET, LIMIT."]
        quantity = _positive_int(body.get("quantity"))
        if quantity is None:
            errors["quantity"] = ["Must be a positive whole number."]
        try:
            price = Decimal(str(body.get("price", "0")))
            if not price.is_finite() or price < 0:
                raise InvalidOperation
        except InvalidOperation:
            errors["price"] = ["Not a valid number."]
            price = Decimal(0)
        if pricetype == "LIMIT" and price <= 0 and "price" not in errors:
            errors["price"] = ["A LIMIT order needs a positive price."]
        if errors:
            raise SimulatorInputError(str(errors))
        assert quantity is not None
        lot = self.lot_of(str(body["exchange"]), str(body["symbol"]))
        if quantity % lot:
            raise SimulatorInputError(
                f"Quantity {quantity} is not a multiple of the lot size {lot} of {body['symbol']}"
            )
        return {
            "strategy": body["strategy"],
            "symbol": body["symbol"],
            "exchange": body["exchange"],
            "action": action,
            "product": str(body["product"]).upper(),
            "pricetype": pricetype,
            "quantity": quantity,
            "price": price if pricetype == "LIMIT" else Decimal(0),
        }

    def place(self, body: Mapping[str, Any], effect: Mapping[str, Any] | None) -> tuple[int, Any]:
        fields = self._order_fields(body)
        now = self.now_ms()
        local = dt.datetime.fromtimestamp(now / 1000, dt.UTC).astimezone(IST)
        order_id = f"{local:%y%m%d}{next(self.order_seq):09d}"
        lag = _number(effect, "ms", 0) if effect and effect.get("type") == "book_lag_ms" else 0
        order = SimOrder(
            order_id=order_id,
            status="open",
            placed_ms=now,
            visible_ms=now + lag,
            **fields,
        )
        self.orders[order_id] = order
        self.apply_order_effect(order, effect)
        return 200, {"status": "success", "orderid": order_id, "mode": self.mode}

    def modify(self, body: Mapping[str, Any], effect: Mapping[str, Any] | None) -> tuple[int, Any]:
        order = self.orders.get(str(body.get("orderid", "")))
        fields = self._order_fields(body)
        if order is None:
            return 404, {"status": "error", "message": "Order not found"}
        if order.status != "open":
            return 400, {"status": "error", "message": f"Order is {order.status}, cannot modify"}
        if fields["quantity"] < order.filled:
            raise SimulatorInputError("Quantity below the filled quantity")
        order.quantity = fields["quantity"]
        order.price = fields["price"]
        order.pricetype = fields["pricetype"]
        order.modifications += 1
        self.apply_order_effect(order, effect)
        return 200, {"status": "success", "orderid": order.order_id, "mode": self.mode}

    def cancel(self, body: Mapping[str, Any], effect: Mapping[str, Any] | None) -> tuple[int, Any]:
        if not body.get("strategy"):
            raise SimulatorInputError(str({"strategy": ["Missing data for required field."]}))
        order = self.orders.get(str(body.get("orderid", "")))
        if order is None:
            return 404, {"status": "error", "message": "Order not found"}
        if order.status == "open":
            order.status = "cancelled"
        if order.status != "cancelled":
            return 400, {"status": "error", "message": f"Order is {order.status}, cannot cancel"}
        return 200, {"status": "success", "orderid": order.order_id, "mode": self.mode}

    def order_row(self, order: SimOrder, with_average: bool) -> dict[str, Any]:
        row: dict[str, Any] = {
            "action": order.action,
            "exchange": order.exchange,
            "order_status": order.status,
            "orderid": order.order_id,
            "price": float(order.price),
            "pricetype": order.pricetype,
            "product": order.product,
            "quantity": str(order.quantity),
            "symbol": order.symbol,
            "timestamp": self.stamp(int(order.placed_ms // 1000)),
            "trigger_price": 0,
        }
        if with_average:
            row["average_price"] = float(order.average_price)
        return row

    def order_status(
        self, body: Mapping[str, Any], effect: Mapping[str, Any] | None
    ) -> tuple[int, Any]:
        order = self.orders.get(str(body.get("orderid", "")))
        if order is None:
            return 404, {"status": "error", "message": "Order not found"}
        return 200, {"status": "success", "data": self.order_row(order, True), "mode": self.mode}

    def order_book(
        self, body: Mapping[str, Any], effect: Mapping[str, Any] | None
    ) -> tuple[int, Any]:
        now = self.now_ms()
        orders = [self.order_row(o, False) for o in self.orders.values() if o.visible_ms <= now]
        statistics = {
            "total_buy_orders": sum(1 for o in orders if o["action"] == "BUY"),
            "total_sell_orders": sum(1 for o in orders if o["action"] == "SELL"),
            "total_completed_orders": sum(1 for o in orders if o["order_status"] == "complete"),
            "total_open_orders": sum(1 for o in orders if o["order_status"] == "open"),
            "total_rejected_orders": sum(1 for o in orders if o["order_status"] == "rejected"),
        }
        data = {"orders": orders, "statistics": statistics}
        return 200, {"status": "success", "data": data, "mode": self.mode}

    def trade_book(
        self, body: Mapping[str, Any], effect: Mapping[str, Any] | None
    ) -> tuple[int, Any]:
        now = self.now_ms()
        rows = [
            {
                "action": t.action,
                "average_price": float(t.price),
                "exchange": t.exchange,
                "orderid": t.order_id,
                "product": t.product,
                "quantity": t.quantity,
                "symbol": t.symbol,
                "timestamp": self.stamp(int(t.at_ms // 1000)),
                "trade_value": float(t.price * t.quantity),
                "tradeid": t.trade_id,
            }
            for t in self.trades
            if t.visible_ms <= now
        ]
        return 200, {"status": "success", "data": rows, "mode": self.mode}

    def position_rows(self) -> list[dict[str, str]]:
        rows = []
        for (exchange, symbol, product), (quantity, average) in self.nets.items():
            ltp = self.quote_of(exchange, symbol).ltp
            rows.append(
                {
                    "symbol": symbol,
                    "exchange": exchange,
                    "product": product,
                    "quantity": str(quantity),
                    "average_price": f"{average:.2f}",
                    "ltp": f"{ltp:.2f}",
                    "pnl": f"{(ltp - average) * quantity:.2f}",
                }
            )
        return rows

    def position_book(
        self, body: Mapping[str, Any], effect: Mapping[str, Any] | None
    ) -> tuple[int, Any]:
        return 200, {"status": "success", "data": self.position_rows(), "mode": self.mode}

    def funds_data(self) -> dict[str, str]:
        unrealized = sum((Decimal(row["pnl"]) for row in self.position_rows()), start=Decimal(0))
        return {
            "availablecash": f"{self.cash + self.realized:.2f}",
            "collateral": "0.00",
            "m2mrealized": f"{self.realized:.2f}",
            "m2munrealized": f"{unrealized:.2f}",
            "utiliseddebits": "0.00",
        }

    def funds(self, body: Mapping[str, Any], effect: Mapping[str, Any] | None) -> tuple[int, Any]:
        return 200, {"status": "success", "data": self.funds_data(), "mode": self.mode}

    def quotes_endpoint(
        self, body: Mapping[str, Any], effect: Mapping[str, Any] | None
    ) -> tuple[int, Any]:
        symbol, exchange = body.get("symbol"), body.get("exchange")
        if not isinstance(symbol, str) or not isinstance(exchange, str) or not symbol:
            raise SimulatorInputError(str({"symbol": ["Missing data for required field."]}))
        quote = self.quote_of(exchange, symbol)
        self.step_quote(quote)
        data = {
            "open": float(quote.ltp),
            "high": float(quote.ask),
            "low": float(quote.bid),
            "ltp": float(quote.ltp),
            "ask": float(quote.ask),
            "bid": float(quote.bid),
            "prev_close": float(quote.ltp),
            "volume": 0,
        }
        return 200, {"status": "success", "data": data, "mode": self.mode}

    def ping(self, body: Mapping[str, Any], effect: Mapping[str, Any] | None) -> tuple[int, Any]:
        data = {"message": "pong", "broker": "simulator"}
        return 200, {"status": "success", "data": data, "mode": self.mode}

    def analyzer(
        self, body: Mapping[str, Any], effect: Mapping[str, Any] | None
    ) -> tuple[int, Any]:
        data = {
            "analyze_mode": self.mode == "analyze",
            "mode": self.mode,
            "total_logs": len(self.calls),
        }
        return 200, {"status": "success", "data": data}

    # ------------------------------------------------------------------ state view

    def state(self) -> dict[str, Any]:
        return {
            "now": self.now_ms(),
            "mode": self.mode,
            "rate_limit": self.rate_limit,
            "orders": [
                {
                    "orderid": o.order_id,
                    "strategy": o.strategy,
                    "symbol": o.symbol,
                    "exchange": o.exchange,
                    "action": o.action,
                    "product": o.product,
                    "pricetype": o.pricetype,
                    "quantity": o.quantity,
                    "price": str(o.price),
                    "status": o.status,
                    "filled_quantity": o.filled,
                    "average_price": str(o.average_price),
                    "modifications": o.modifications,
                }
                for o in self.orders.values()
            ],
            "trades": [
                {
                    "tradeid": t.trade_id,
                    "orderid": t.order_id,
                    "symbol": t.symbol,
                    "action": t.action,
                    "quantity": t.quantity,
                    "price": str(t.price),
                }
                for t in self.trades
            ],
            "positions": self.position_rows(),
            "funds": self.funds_data(),
            "calls": self.calls,
            "rules": [
                {"effect": r.effect, "seen": r.seen, "applied": r.applied} for r in self.rules
            ],
        }


_Handler = Callable[[Simulator, Mapping[str, Any], Mapping[str, Any] | None], tuple[int, Any]]
_HANDLERS: dict[str, _Handler] = {
    "placeorder": Simulator.place,
    "modifyorder": Simulator.modify,
    "cancelorder": Simulator.cancel,
    "orderstatus": Simulator.order_status,
    "orderbook": Simulator.order_book,
    "tradebook": Simulator.trade_book,
    "positionbook": Simulator.position_book,
    "funds": Simulator.funds,
    "quotes": Simulator.quotes_endpoint,
    "ping": Simulator.ping,
    "analyzer": Simulator.analyzer,
}


# --------------------------------------------------------------------------- helpers


def _close(order: SimOrder, status: str) -> None:
    if order.status == "open":
        order.status = status


def _split(quantity: int, lot: int, parts: int) -> list[int]:
    """Split a fill into up to ``parts`` lot-sized trade rows."""
    lots = quantity // lot
    if parts <= 1 or lots < 2:
        return [quantity]
    first = lots // 2
    return [first * lot, quantity - first * lot]


def _positive_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    if not number.is_finite() or number <= 0 or number != number.to_integral_value():
        return None
    return int(number)


def _text(row: Mapping[str, Any], field: str) -> str:
    value = row.get(field)
    if not isinstance(value, str) or not value:
        raise SimulatorInputError(f"{field}: required text")
    return value


def _decimal(row: Mapping[str, Any], field: str, default: Decimal | None = None) -> Decimal:
    value = row.get(field)
    if value is None:
        if default is None:
            raise SimulatorInputError(f"{field}: required number")
        return default
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise SimulatorInputError(f"{field}: not a number") from None
    if not number.is_finite():
        raise SimulatorInputError(f"{field}: not a finite number")
    return number


def _number(row: Mapping[str, Any] | None, field: str, default: float) -> float:
    value = (row or {}).get(field, default)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SimulatorInputError(f"{field}: not a number")
    try:
        return float(value)
    except ValueError:
        raise SimulatorInputError(f"{field}: not a number") from None


def _effect(raw: object) -> dict[str, Any]:
    """Normalise an effect to ``{"type": name, ...params}``."""
    if isinstance(raw, str):
        effect: dict[str, Any] = {"type": raw}
    elif isinstance(raw, Mapping) and "type" in raw:
        effect = dict(raw)
    elif isinstance(raw, Mapping) and len(raw) == 1:
        ((name, params),) = raw.items()
        if isinstance(params, Mapping):
            effect = {"type": name, **params}
        else:  # {"latency_ms": 300}
            effect = {"type": name, "ms": params}
    else:
        raise SimulatorInputError("effect: expected a name or an object with a type")
    if effect["type"] not in EFFECTS:
        raise SimulatorInputError(f"effect: unknown type {effect['type']!r}")
    if effect["type"] == "http_error":
        status = effect.get("status", 500)
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise SimulatorInputError("effect.status: an HTTP status code")
    return effect


def _rule(row: object) -> Rule:
    if not isinstance(row, Mapping):
        raise SimulatorInputError("rule: expected an object")
    match = row.get("match") or {}
    if not isinstance(match, Mapping):
        raise SimulatorInputError("rule.match: expected an object")
    nth = match.get("nth")
    if nth is not None and (isinstance(nth, bool) or not isinstance(nth, int) or nth < 1):
        raise SimulatorInputError("match.nth: a positive whole number")
    probability = match.get("probability")
    if probability is not None and (
        isinstance(probability, bool)
        or not isinstance(probability, int | float)
        or not 0 <= probability <= 1
    ):
        raise SimulatorInputError("match.probability: a number from 0 to 1")
    return Rule(
        endpoint=match.get("endpoint"),
        symbol=match.get("symbol"),
        action=str(match["action"]).upper() if match.get("action") else None,
        nth=nth,
        probability=None if probability is None else float(probability),
        effect=_effect(row.get("effect")),
    )


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SimulatorInputError("Invalid JSON body") from None
    if not isinstance(body, dict):
        raise SimulatorInputError("Body must be a JSON object")
    return body


def _error_response(effect: Mapping[str, Any]) -> Response:
    status = int(effect.get("status", 500))
    body = effect.get("body")
    if isinstance(body, str):
        return Response(body, status_code=status, media_type="text/plain")
    if body is None:
        body = _DEFAULT_ERROR_BODIES.get(
            status, {"status": "error", "message": f"Simulated HTTP {status}"}
        )
    return JSONResponse(body, status_code=status)


# --------------------------------------------------------------------------- the app


def create_app(
    seed: int = 42,
    api_keys: Iterable[str] = ("test-key",),
    *,
    mode: str = "analyze",
    lot_sizes: Mapping[str, int] | None = None,
    rate_limit: bool = False,
    order_rate_limit: int = 10,
    read_rate_limit: int = 50,
) -> Starlette:
    """The simulator as a Starlette app; its state is ``app.state.simulator``."""
    sim = Simulator(
        seed,
        api_keys,
        mode=mode,
        lot_sizes=lot_sizes,
        rate_limit=rate_limit,
        order_rate_limit=order_rate_limit,
        read_rate_limit=read_rate_limit,
    )

    async def api(request: Request) -> Response:
        endpoint = str(request.path_params["endpoint"])
        try:
            body = await _json_body(request)
        except SimulatorInputError as exc:
            return JSONResponse({"status": "error", "message": str(exc)}, status_code=400)
        client = request.client.host if request.client else "?"
        with sim.lock:
            sim.run_due()
            call: dict[str, Any] = {
                "seq": len(sim.calls) + 1,
                "at": sim.now_ms(),
                "endpoint": endpoint,
                "strategy": body.get("strategy"),
                "symbol": body.get("symbol"),
                "action": body.get("action"),
                "quantity": body.get("quantity"),
                "price": body.get("price"),
                "orderid": body.get("orderid"),
                "status_code": None,
            }
            sim.calls.append(call)
            if sim.rate_limited(endpoint, client):
                call["status_code"] = 429
                return JSONResponse(RATE_LIMIT_BODY, status_code=429)
            if body.get("apikey") not in sim.api_keys:
                call["status_code"] = 403
                return JSONResponse(_DEFAULT_ERROR_BODIES[403], status_code=403)
            effect = sim.match_rule(endpoint, body)
        kind = effect.get("type") if effect else None
        if effect and kind == "latency_ms":
            await asyncio.sleep(_number(effect, "ms", 0) / 1000)
            effect = None
        with sim.lock:
            sim.run_due()
            if effect and kind == "http_error":
                if effect.get("record_order") and endpoint in ORDER_ENDPOINTS:
                    sim.handle(endpoint, body, None)
                response = _error_response(effect)
                call["status_code"] = response.status_code
                return response
            if effect and kind == "reject_sync" and endpoint in ORDER_ENDPOINTS:
                message = str(effect.get("message", "Order rejected by the broker"))
                call["status_code"] = 400
                return JSONResponse({"status": "error", "message": message}, status_code=400)
            if effect and kind == "semi_auto" and endpoint in ORDER_ENDPOINTS:
                call["status_code"] = 200
                pending = f"P{next(sim.order_seq):09d}"
                queued = {
                    "status": "success",
                    "mode": "semi_auto",
                    "pending_order_id": pending,
                    "message": "Order queued for approval",
                }
                return JSONResponse(queued)
            status, payload = sim.handle(endpoint, body, effect)
            call["status_code"] = status
            call["response_orderid"] = payload.get("orderid") if isinstance(payload, dict) else None
        if effect and kind == "accept_then_timeout":
            await asyncio.sleep(_number(effect, "delay_ms", 1000) / 1000)
        return JSONResponse(payload, status_code=status)

    async def control(request: Request) -> Response:
        action = str(request.path_params["action"])
        try:
            body = await _json_body(request)
            with sim.lock:
                if action == "rules":
                    rules = body.get("rules", [])
                    if not isinstance(rules, list):
                        raise SimulatorInputError("rules: expected a list")
                    sim.install_rules(rules, bool(body.get("append", False)))
                elif action == "reset":
                    seed_value = body.get("seed")
                    if seed_value is not None and not isinstance(seed_value, int):
                        raise SimulatorInputError("seed: a whole number")
                    sim.reset(seed_value)
                    if "lot_sizes" in body:
                        sim.lot_sizes = _lot_sizes(body["lot_sizes"])
                elif action == "quotes":
                    rows = body.get("quotes", [])
                    if not isinstance(rows, list):
                        raise SimulatorInputError("quotes: expected a list")
                    sim.set_quotes(rows)
                elif action == "mode":
                    if "mode" in body:
                        if body["mode"] not in ("analyze", "live"):
                            raise SimulatorInputError("mode: analyze or live")
                        sim.mode = body["mode"]
                    if "rate_limit" in body:
                        sim.rate_limit = bool(body["rate_limit"])
                    if "lot_sizes" in body:
                        sim.lot_sizes = _lot_sizes(body["lot_sizes"])
                elif action == "clock":
                    _set_clock(sim, body)
                    sim.run_due()
                else:
                    return JSONResponse({"status": "error", "message": "unknown"}, 404)
                return JSONResponse({"status": "success"})
        except SimulatorInputError as exc:
            return JSONResponse({"status": "error", "message": str(exc)}, status_code=400)

    async def state(request: Request) -> Response:
        with sim.lock:
            sim.run_due()
            return JSONResponse(sim.state())

    app = Starlette(
        routes=[
            Route("/api/v1/{endpoint:path}", api, methods=["POST"]),
            Route("/_simulator/state", state, methods=["GET"]),
            Route("/_simulator/{action}", control, methods=["POST"]),
        ]
    )
    app.state.simulator = sim
    return app


def _lot_sizes(raw: object) -> dict[str, int]:
    if not isinstance(raw, Mapping) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v > 0
        for k, v in raw.items()
    ):
        raise SimulatorInputError("lot_sizes: {root: positive whole number}")
    return dict(raw)


def _set_clock(sim: Simulator, body: Mapping[str, Any]) -> None:
    if "manual" in body:
        manual = bool(body["manual"])
        if manual and not sim.clock.manual:
            sim.clock.manual_ms = time.time() * 1000
        sim.clock.manual = manual
    if "now" in body:
        try:
            instant = dt.datetime.fromisoformat(str(body["now"]))
        except ValueError:
            raise SimulatorInputError("now: an ISO 8601 instant") from None
        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=IST)
        sim.clock.manual = True
        sim.clock.manual_ms = instant.timestamp() * 1000
    if "advance_ms" in body:
        if not sim.clock.manual:
            raise SimulatorInputError("advance_ms: only with a manual clock")
        sim.clock.manual_ms += _number(body, "advance_ms", 0)


# --------------------------------------------------------------------------- serving


@attrs.define
class RunningSimulator:
    """A simulator served by uvicorn in a background thread (tests)."""

    url: str
    port: int
    app: Starlette
    _server: Any
    _thread: threading.Thread

    @property
    def simulator(self) -> Simulator:
        sim: Simulator = self.app.state.simulator
        return sim

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)

    def __enter__(self) -> RunningSimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_thread(host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> RunningSimulator:
    """Serve ``create_app(**kwargs)`` on ``port`` (0 = a free one) until ``stop()``."""
    import uvicorn

    app = create_app(**kwargs)
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto
    # says TCP, and without it every response waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="openalgo-simulator", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the OpenAlgo simulator did not start")
        time.sleep(0.01)
    return RunningSimulator(f"http://{host}:{bound}", bound, app, server, thread)


def run_simulator(
    host: str = "127.0.0.1",
    port: int = 5099,
    seed: int = 42,
    api_keys: Iterable[str] = (),
    *,
    rate_limit: bool = False,
    access_log: bool = False,
) -> None:
    """Serve the simulator in the foreground (``pm simulate-broker``)."""
    import uvicorn

    keys = tuple(api_keys) or ("test-key",)
    app = create_app(seed=seed, api_keys=keys, rate_limit=rate_limit)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=access_log)
