"""OpenAlgo REST v1 over one keep-alive httpx client (openalgo.md 1-3, 6-8).

Order writes are classified exactly as openalgo.md 3 says: Accepted, Definitive (the order
certainly did not happen) or Unknown (it may have: resolve from the books, never re-send).
Reads retry on connect errors, timeouts, 429 and 5xx and take a ``read`` token per attempt.
The API key is sent in the body only and is redacted from every message and repr.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal, TypeVar

import attrs
import httpx

from pm_adapters.openalgo import parsing
from pm_adapters.openalgo.bookpoll import SharedBookPoll
from pm_core.errors import ConfigError, RateBudgetExceeded
from pm_core.model import Funds, Quote
from pm_core.ports import (
    Accepted,
    BrokerPosition,
    Definitive,
    Ok,
    OrderRequest,
    OrderStatus,
    RateBudget,
    ReadError,
    ReadResult,
    SubmitResult,
    TradeRow,
    Unknown,
)

T = TypeVar("T")

_MESSAGE_LIMIT = 300


@attrs.frozen
class OpenAlgoSettings:
    """PM_OPENALGO_* settings (service.md 13, openalgo.md 6); the key never shows in repr."""

    url: str = "http://127.0.0.1:5000"
    api_key: str = attrs.field(default="", repr=False)
    strategy: str = "pm"
    expected_mode: Literal["analyze", "live"] = "analyze"
    connect_timeout_s: float = 2.0
    read_timeout_s: float = 5.0
    order_timeout_s: float = 10.0
    read_retries: int = 3
    read_backoff_s: tuple[float, ...] = (0.2, 0.5, 1.0)
    backoff_jitter: float = 0.25  # fraction of each backoff step added at random
    max_modifications: int = 20
    book_poll_ms: int = 500  # shared orderbook poll while over 3 orders are followed
    pool_size: int = 10
    # Below the server's idle keep-alive (gunicorn's default is 2 s): reusing a connection the
    # server is closing turns a clean send into an Unknown outcome.
    keepalive_expiry_s: float = 1.5

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OpenAlgoSettings:
        """Read PM_OPENALGO_* variables; ConfigError lists every bad one."""
        errors: list[tuple[str, str]] = []
        values: dict[str, Any] = {}

        def number(name: str, attr: str, kind: type[float] | type[int]) -> None:
            raw = env.get(name)
            if raw is None or raw == "":
                return
            try:
                value = kind(raw)
            except ValueError:
                errors.append((name, f"not a number: {raw!r}"))
                return
            if value < 0 or (kind is int and attr != "read_retries" and value == 0):
                errors.append((name, "must be positive"))
                return
            values[attr] = value

        if env.get("PM_OPENALGO_URL"):
            values["url"] = env["PM_OPENALGO_URL"].rstrip("/")
        if env.get("PM_OPENALGO_API_KEY"):
            values["api_key"] = env["PM_OPENALGO_API_KEY"]
        if env.get("PM_OPENALGO_STRATEGY"):
            values["strategy"] = env["PM_OPENALGO_STRATEGY"]
        mode = env.get("PM_OPENALGO_EXPECTED_MODE")
        if mode:
            if mode.lower() not in ("analyze", "live"):
                errors.append(("PM_OPENALGO_EXPECTED_MODE", "must be analyze or live"))
            else:
                values["expected_mode"] = mode.lower()
        number("PM_OPENALGO_CONNECT_TIMEOUT_S", "connect_timeout_s", float)
        number("PM_OPENALGO_READ_TIMEOUT_S", "read_timeout_s", float)
        number("PM_OPENALGO_ORDER_TIMEOUT_S", "order_timeout_s", float)
        number("PM_OPENALGO_READ_RETRIES", "read_retries", int)
        number("PM_OPENALGO_MAX_MODIFICATIONS", "max_modifications", int)
        number("PM_OPENALGO_BOOK_POLL_MS", "book_poll_ms", int)
        backoff = env.get("PM_OPENALGO_READ_BACKOFF")
        if backoff:
            try:
                steps = tuple(float(step) for step in backoff.split(","))
                if any(step < 0 for step in steps):
                    raise ValueError
                values["read_backoff_s"] = steps
            except ValueError:
                errors.append(("PM_OPENALGO_READ_BACKOFF", "comma-separated seconds, e.g. 0.2,0.5"))
        if errors:
            raise ConfigError(errors)
        return cls(**values)


class _Redactor:
    """Removes the API key from any text that may reach a log or an error value."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def __call__(self, text: str) -> str:
        if self._secret and self._secret in text:
            text = text.replace(self._secret, "***")
        return text[:_MESSAGE_LIMIT]


@attrs.frozen
class _Reply:
    """One HTTP exchange that got a response (status and parsed JSON, if any)."""

    status: int
    body: Any  # parsed JSON or None when unparseable
    text: str


@attrs.frozen
class _Failure:
    """One HTTP exchange that got no response; ``sent`` says whether it may have arrived."""

    kind: Literal["connect", "timeout", "reset", "protocol"]
    sent: bool
    message: str


class OpenAlgoBroker:
    """pm_core.ports.Broker over OpenAlgo's REST API v1."""

    def __init__(
        self,
        settings: OpenAlgoSettings,
        rate: RateBudget | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        today: Callable[[], dt.date] | None = None,
        observe: Callable[[str, str, float], None] | None = None,
    ) -> None:
        """``observe(endpoint, outcome, seconds)`` is told of every HTTP attempt (metrics)."""
        self.settings = settings
        self._observe = observe
        self._rate = rate
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._today = today or (lambda: dt.datetime.now(parsing.IST).date())
        self._redact = _Redactor(settings.api_key)
        self._modifications: dict[str, int] = {}
        self._modifications_lock = threading.Lock()
        self._book_poll = SharedBookPoll(self.order_book, settings.book_poll_ms / 1000)
        limits = httpx.Limits(
            max_connections=settings.pool_size,
            max_keepalive_connections=settings.pool_size,
            keepalive_expiry=settings.keepalive_expiry_s,
        )
        self._client = httpx.Client(
            base_url=settings.url.rstrip("/") + "/api/v1/",
            limits=limits,
            transport=transport,
            headers={"Content-Type": "application/json"},
        )

    def __repr__(self) -> str:
        return f"OpenAlgoBroker(url={self.settings.url!r}, strategy={self.settings.strategy!r})"

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> OpenAlgoBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writes

    def place(self, order: OrderRequest) -> SubmitResult:
        """``placeorder``."""
        return self._submit("placeorder", self._order_body(order))

    def modify(self, order_id: str, order: OrderRequest) -> SubmitResult:
        """``modifyorder`` (absolute: every placeorder field), capped per order."""
        with self._modifications_lock:
            count = self._modifications.get(order_id, 0)
            if count >= self.settings.max_modifications:
                return Definitive(
                    "max_modifications",
                    f"order {order_id} already modified {count} times "
                    f"(PM_OPENALGO_MAX_MODIFICATIONS={self.settings.max_modifications})",
                )
            self._modifications[order_id] = count + 1
        body = {"orderid": order_id, **self._order_body(order)}
        self._book_poll.forget(order_id)
        result = self._submit("modifyorder", body)
        if isinstance(result, Definitive) and result.reason_code == "not_sent":
            with self._modifications_lock:
                self._modifications[order_id] -= 1  # never reached the broker: not a modification
        return result

    def cancel(self, order_id: str, tag: str = "") -> SubmitResult:
        """``cancelorder``; retried like a read on 429, 5xx and transport faults (retry-safe)."""
        body = {"orderid": order_id, "strategy": self._strategy(tag)}
        attempts = max(1, self.settings.read_retries)
        self._book_poll.forget(order_id)
        result = self._submit("cancelorder", body)
        for attempt in range(1, attempts):
            retryable = (isinstance(result, Definitive) and result.resend_allowed) or (
                isinstance(result, Unknown) and result.reason_code != "queued_for_approval"
            )
            if not retryable:
                break
            # The caller took the first order token; each retry takes its own.
            try:
                self._take("order")
            except RateBudgetExceeded as exc:
                return Definitive("rate_budget", str(exc), resend_allowed=True)
            self._backoff(attempt)
            result = self._submit("cancelorder", body)
        return result

    def _order_body(self, order: OrderRequest) -> dict[str, str]:
        price = order.price if order.pricetype == "LIMIT" else Decimal(0)
        return {
            "strategy": self._strategy(order.tag),
            "symbol": order.symbol,
            "exchange": order.exchange,
            "action": order.action,
            "product": order.product,
            "pricetype": order.pricetype,
            "quantity": str(order.quantity),
            "price": _decimal_text(price),
            "trigger_price": "0",
            "disclosed_quantity": "0",
        }

    def _strategy(self, tag: str) -> str:
        return f"{self.settings.strategy}:{tag}" if tag else self.settings.strategy

    def _submit(self, endpoint: str, body: dict[str, str]) -> SubmitResult:
        outcome = self._exchange(endpoint, body, self.settings.order_timeout_s)
        if isinstance(outcome, _Failure):
            if not outcome.sent:
                return Definitive("not_sent", outcome.message, resend_allowed=True)
            return Unknown(outcome.kind if outcome.kind != "protocol" else "reset", outcome.message)
        return self._classify_write(endpoint, outcome)

    def _classify_write(self, endpoint: str, reply: _Reply) -> SubmitResult:
        status, body = reply.status, reply.body
        message = self._message(endpoint, reply)
        if status >= 500:  # 500-504 per the table; any other 5xx is no safer
            return Unknown(f"http_{status}", message)
        if status == 429:
            return Definitive("rate_limited", message, resend_allowed=True)
        if status in (401, 403):
            return Definitive("broker_auth", message)
        if 400 <= status < 500:
            return Definitive("broker_rejected", message)
        if not 200 <= status < 300:
            return Unknown(f"http_{status}", message)
        if not isinstance(body, Mapping):
            return Unknown("unparseable", message)
        envelope = str(body.get("status", "")).lower()
        mode = body.get("mode")
        mode_text = mode.lower() if isinstance(mode, str) and mode else None
        if envelope == "error":
            return Definitive("broker_rejected", message)
        if envelope != "success":
            return Unknown("unparseable", message)
        order_id = body.get("orderid")
        data = body.get("data")
        if order_id in (None, "") and isinstance(data, Mapping):
            order_id = data.get("orderid")
        if isinstance(order_id, str | int) and not isinstance(order_id, bool) and order_id != "":
            return Accepted(str(order_id), mode_text)
        if mode_text == "semi_auto":
            pending = body.get("pending_order_id")
            return Unknown(
                "queued_for_approval",
                self._redact(f"{endpoint}: queued for manual approval (pending id {pending})"),
            )
        return Unknown("unparseable", self._redact(f"{endpoint}: success without orderid"))

    # ------------------------------------------------------------------ reads

    def order_status(self, order_id: str, tag: str = "") -> ReadResult[OrderStatus]:
        """``orderstatus``, or the order's row of the shared ``orderbook`` read while more than
        three orders are followed (``bookpoll``)."""
        shared = self._book_poll.status(order_id)
        if shared is not None:
            return Ok(shared)
        body = {"orderid": order_id, "strategy": self._strategy(tag)}
        return self._read(
            "orderstatus", body, lambda data: parsing.order_status_row(data, self._today, order_id)
        )

    def order_book(self) -> ReadResult[Sequence[OrderStatus]]:
        """``orderbook`` (wrapped or bare list)."""
        return self._read("orderbook", {}, lambda data: parsing.order_book(data, self._today))

    def trade_book(self) -> ReadResult[Sequence[TradeRow]]:
        """``tradebook`` (bare or wrapped list)."""
        return self._read("tradebook", {}, lambda data: parsing.trade_book(data, self._today))

    def positions(self) -> ReadResult[Sequence[BrokerPosition]]:
        """``positionbook``; closed (quantity 0) rows dropped."""
        return self._read("positionbook", {}, parsing.position_book)

    def funds(self) -> ReadResult[Funds]:
        """``funds``."""
        return self._read("funds", {}, parsing.funds)

    def quote(self, symbol: str, exchange: str) -> ReadResult[Quote]:
        """``quotes``."""
        return self._read("quotes", {"symbol": symbol, "exchange": exchange}, parsing.quote)

    def ping(self) -> ReadResult[str]:
        """``ping``: the broker name when connected and authenticated."""
        return self._read("ping", {}, parsing.ping)

    def mode(self) -> ReadResult[str]:
        """``analyzer``: ``analyze`` or ``live``."""
        return self._read("analyzer", {}, parsing.analyzer_mode)

    def _read(
        self, endpoint: str, body: dict[str, str], parse: Callable[[Any], T]
    ) -> ReadResult[T]:
        attempts = max(1, self.settings.read_retries)
        error = ReadError("not_sent", f"{endpoint}: no attempt made")
        for attempt in range(attempts):
            if attempt:
                self._backoff(attempt)
            try:
                self._take("read")
            except RateBudgetExceeded as exc:
                return ReadError("rate_budget", f"{endpoint}: {exc}")
            outcome = self._exchange(endpoint, body, self.settings.read_timeout_s)
            if isinstance(outcome, _Failure):
                error = ReadError(
                    outcome.kind if outcome.kind != "protocol" else "reset", outcome.message
                )
                continue
            result, retry = self._classify_read(endpoint, outcome, parse)
            if not retry:
                return result
            assert isinstance(result, ReadError)
            error = result
        return error

    def _classify_read(
        self, endpoint: str, reply: _Reply, parse: Callable[[Any], T]
    ) -> tuple[ReadResult[T], bool]:
        status, body = reply.status, reply.body
        message = self._message(endpoint, reply)
        if status >= 500:
            return ReadError(f"http_{status}", message), True
        if status == 429:
            return ReadError("rate_limited", message), True
        if status in (401, 403):
            return ReadError("auth", message), False
        if status == 404:
            return ReadError("not_found", message), False
        if 400 <= status < 500:
            return ReadError("rejected", message), False
        if not isinstance(body, Mapping):
            return ReadError("parse", message), False
        if str(body.get("status", "")).lower() != "success":
            return ReadError("error", message), False
        try:
            return Ok(parse(body.get("data"))), False
        except parsing.BrokerParseError as exc:
            return ReadError("parse", self._redact(f"{endpoint}: {exc}")), False
        except (ValueError, TypeError, AttributeError, ArithmeticError) as exc:
            # A shape no parser anticipated is still a parse error, never a crash.
            message = f"{endpoint}: unreadable data: {type(exc).__name__}: {exc}"
            return ReadError("parse", self._redact(message)), False

    # ------------------------------------------------------------------ transport

    def _exchange(
        self, endpoint: str, body: dict[str, str], read_timeout: float
    ) -> _Reply | _Failure:
        payload = {"apikey": self.settings.api_key, **body}
        timeout = httpx.Timeout(
            connect=self.settings.connect_timeout_s,
            read=read_timeout,
            write=read_timeout,
            pool=self.settings.connect_timeout_s,
        )
        started = time.monotonic()
        try:
            response = self._client.post(
                endpoint, content=json.dumps(payload).encode(), timeout=timeout
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            failure = _Failure("connect", False, self._fault(endpoint, "not sent", exc))
        except httpx.UnsupportedProtocol as exc:
            failure = _Failure("connect", False, self._fault(endpoint, "bad url", exc))
        except httpx.TimeoutException as exc:
            failure = _Failure("timeout", True, self._fault(endpoint, "timed out after send", exc))
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
            failure = _Failure("reset", True, self._fault(endpoint, "connection lost", exc))
        except httpx.TransportError as exc:
            failure = _Failure("protocol", True, self._fault(endpoint, "transport error", exc))
        else:
            self._notify(endpoint, f"http_{response.status_code}", started)
            return self._reply(response)
        self._notify(endpoint, failure.kind, started)
        return failure

    def _notify(self, endpoint: str, outcome: str, started: float) -> None:
        if self._observe is not None:
            # Metrics must never break an order.
            with contextlib.suppress(Exception):
                self._observe(endpoint, outcome, time.monotonic() - started)

    @staticmethod
    def _reply(response: httpx.Response) -> _Reply:
        text = response.text
        try:
            parsed: Any = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            parsed = None
        return _Reply(response.status_code, parsed, text)

    def _fault(self, endpoint: str, what: str, exc: Exception) -> str:
        return self._redact(f"{endpoint}: {what}: {type(exc).__name__}: {exc}")

    def _message(self, endpoint: str, reply: _Reply) -> str:
        detail: str
        if isinstance(reply.body, Mapping) and reply.body.get("message") is not None:
            raw = reply.body["message"]
            detail = raw if isinstance(raw, str) else json.dumps(raw, default=str)
        else:
            detail = reply.text.strip() or "(empty body)"
        return self._redact(f"{endpoint}: HTTP {reply.status}: {detail}")

    def _take(self, kind: Literal["order", "read"]) -> None:
        if self._rate is not None:
            self._rate.take(kind)

    def _backoff(self, attempt: int) -> None:
        steps = self.settings.read_backoff_s or (0.0,)
        step = steps[min(attempt - 1, len(steps) - 1)]
        self._sleep(step + self._rng.uniform(0, step * self.settings.backoff_jitter))


def _decimal_text(value: Decimal) -> str:
    """A decimal as plain text without exponent ("612.35", "0")."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"
