"""OpenAlgo adapter against httpx.MockTransport: request shape, every response variant and
every row of the outcome classification table (openalgo.md 2-3, 6)."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pm_adapters.openalgo import OpenAlgoBroker, OpenAlgoSettings
from pm_adapters.openalgo.parsing import normalise_status, parse_timestamp
from pm_core.errors import ConfigError, RateBudgetExceeded
from pm_core.model import Quote
from pm_core.ports import (
    Accepted,
    Definitive,
    Ok,
    OrderRequest,
    ReadError,
    SubmitResult,
    Unknown,
)

KEY = "sekret-api-key-7f3a"
TODAY = dt.date(2025, 11, 28)
IST_OFFSET = dt.timedelta(hours=5, minutes=30)

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """Collects requests, sleeps and rate tokens a broker used."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.sleeps: list[float] = []
        self.tokens: list[str] = []


class Budget:
    def __init__(self, recorder: Recorder, fail: bool = False) -> None:
        self.recorder = recorder
        self.fail = fail

    def take(self, kind: str) -> None:
        if self.fail:
            raise RateBudgetExceeded("no read token within 2000 ms")
        self.recorder.tokens.append(kind)


def make_broker(
    handler: Handler | list[Handler], fail_budget: bool = False, **settings: Any
) -> tuple[OpenAlgoBroker, Recorder]:
    recorder = Recorder()
    handlers = handler if isinstance(handler, list) else None

    def transport(request: httpx.Request) -> httpx.Response:
        endpoint = request.url.path.rsplit("/", 1)[-1]
        recorder.requests.append((endpoint, json.loads(request.content)))
        if handlers is not None:
            return handlers[min(len(recorder.requests), len(handlers)) - 1](request)
        assert callable(handler)
        return handler(request)

    config = OpenAlgoSettings(url="http://openalgo.test", api_key=KEY, **settings)
    broker = OpenAlgoBroker(
        config,
        Budget(recorder, fail_budget),
        transport=httpx.MockTransport(transport),
        sleep=recorder.sleeps.append,
        rng=random.Random(1),
        today=lambda: TODAY,
    )
    return broker, recorder


def reply(status: int = 200, body: Any = None, text: str | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if text is not None:
            return httpx.Response(status, text=text)
        return httpx.Response(status, json=body)

    return handler


def raising(error: type[httpx.TransportError], message: str = "boom") -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error(message, request=request)

    return handler


ORDER = OrderRequest(
    symbol="BANKNIFTY30DEC2552000CE",
    exchange="NFO",
    action="BUY",
    product="NRML",
    pricetype="LIMIT",
    quantity=120,
    price=Decimal("612.350"),
    tag="pm-fb6ca43d510c08d5-1-CE-1",
)


def submit(broker: OpenAlgoBroker, endpoint: str) -> SubmitResult:
    if endpoint == "placeorder":
        return broker.place(ORDER)
    return broker.modify("251128000123456", ORDER)


# --------------------------------------------------------------------------- requests


def test_placeorder_sends_every_field_as_text_with_key_and_strategy() -> None:
    broker, seen = make_broker(reply(body={"status": "success", "orderid": "1"}))
    broker.place(ORDER)
    endpoint, body = seen.requests[0]
    assert endpoint == "placeorder"
    assert body == {
        "apikey": KEY,
        "strategy": "pm:pm-fb6ca43d510c08d5-1-CE-1",
        "symbol": "BANKNIFTY30DEC2552000CE",
        "exchange": "NFO",
        "action": "BUY",
        "product": "NRML",
        "pricetype": "LIMIT",
        "quantity": "120",
        "price": "612.35",
        "trigger_price": "0",
        "disclosed_quantity": "0",
    }


def test_every_call_is_a_json_post_under_api_v1() -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json={"status": "success", "data": {"message": "pong"}})

    broker, _ = make_broker(handler)
    broker.ping()
    (request,) = requests
    assert request.method == "POST"
    assert str(request.url) == "http://openalgo.test/api/v1/ping"
    assert request.headers["content-type"] == "application/json"
    assert KEY not in str(request.headers)


def test_market_order_sends_price_zero_and_modify_sends_orderid_plus_all_fields() -> None:
    broker, seen = make_broker(reply(body={"status": "success", "orderid": "9"}))
    market = OrderRequest("GOLDM05JAN26FUT", "MCX", "SELL", "NRML", "MARKET", 2, Decimal("7"))
    broker.modify("9", market)
    endpoint, body = seen.requests[0]
    assert endpoint == "modifyorder"
    assert body["orderid"] == "9"
    assert body["price"] == "0"
    assert body["quantity"] == "2"
    assert body["strategy"] == "pm"
    assert {"symbol", "exchange", "action", "product", "pricetype", "trigger_price"} <= set(body)


def test_cancel_and_orderstatus_carry_the_strategy() -> None:
    broker, seen = make_broker(reply(body={"status": "success", "orderid": "5"}))
    broker.cancel("5", tag="t-1")
    assert seen.requests[0] == (
        "cancelorder",
        {"apikey": KEY, "orderid": "5", "strategy": "pm:t-1"},
    )


def test_forbidden_endpoints_are_never_called() -> None:
    broker, seen = make_broker(reply(body={"status": "success", "orderid": "5", "data": {}}))
    broker.place(ORDER)
    broker.modify("5", ORDER)
    broker.cancel("5")
    for read in (broker.order_book, broker.trade_book, broker.positions, broker.funds):
        read()
    called = {endpoint for endpoint, _ in seen.requests}
    assert not called & {"closeposition", "cancelallorder", "placesmartorder", "toggle"}


# --------------------------------------------------------------------------- classification


@pytest.mark.parametrize("endpoint", ["placeorder", "modifyorder"])
@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (
            reply(body={"status": "success", "orderid": "251128000123456"}),
            Accepted("251128000123456"),
        ),
        (
            reply(body={"status": "success", "orderid": "42", "mode": "analyze"}),
            Accepted("42", "analyze"),
        ),
        (reply(body={"status": "success", "data": {"orderid": "77"}}), Accepted("77")),
        (reply(body={"status": "SUCCESS", "orderid": 251128}), Accepted("251128")),
    ],
)
def test_success_with_an_order_id_is_accepted(
    endpoint: str, handler: Handler, expected: Accepted
) -> None:
    broker, _ = make_broker(handler)
    assert submit(broker, endpoint) == expected


@pytest.mark.parametrize("endpoint", ["placeorder", "modifyorder", "cancelorder"])
def test_semi_auto_queue_is_unknown_queued_for_approval(endpoint: str) -> None:
    body = {"status": "success", "mode": "semi_auto", "pending_order_id": "P1", "message": "q"}
    broker, seen = make_broker(reply(body=body))
    result = broker.cancel("1") if endpoint == "cancelorder" else submit(broker, endpoint)
    assert isinstance(result, Unknown)
    assert result.reason_code == "queued_for_approval"
    assert len(seen.requests) == 1


REJECTED = {"status": "error", "message": "RMS:Margin Exceeds"}


@pytest.mark.parametrize("endpoint", ["placeorder", "modifyorder"])
@pytest.mark.parametrize(
    ("handler", "reason", "resend"),
    [
        (reply(200, REJECTED), "broker_rejected", False),
        (reply(400, REJECTED), "broker_rejected", False),
        (
            reply(400, {"status": "error", "message": {"quantity": ["bad"]}}),
            "broker_rejected",
            False,
        ),
        (reply(404, {"status": "error", "message": "Symbol not found"}), "broker_rejected", False),
        (
            reply(401, {"status": "error", "message": "Invalid openalgo apikey"}),
            "broker_auth",
            False,
        ),
        (
            reply(403, {"status": "error", "message": "Invalid openalgo apikey"}),
            "broker_auth",
            False,
        ),
        (
            reply(429, {"status": "error", "message": "Rate limit exceeded."}),
            "rate_limited",
            True,
        ),
        (raising(httpx.ConnectError, "[Errno 111] Connection refused"), "not_sent", True),
        (raising(httpx.ConnectError, "Name or service not known"), "not_sent", True),
        (raising(httpx.ConnectTimeout), "not_sent", True),
        (raising(httpx.PoolTimeout), "not_sent", True),
    ],
)
def test_definitive_outcomes(endpoint: str, handler: Handler, reason: str, resend: bool) -> None:
    broker, seen = make_broker(handler)
    result = submit(broker, endpoint)
    assert isinstance(result, Definitive)
    assert (result.reason_code, result.resend_allowed) == (reason, resend)
    assert len(seen.requests) == 1  # order writes are never retried by the adapter


@pytest.mark.parametrize("endpoint", ["placeorder", "modifyorder"])
@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        (reply(500, {"status": "error", "message": "broker error"}), "http_500"),
        (reply(502, text="<html>Bad Gateway</html>"), "http_502"),
        (reply(503, text=""), "http_503"),
        (reply(504, text="gateway timeout"), "http_504"),
        (reply(507, text="insufficient storage"), "http_507"),
        (reply(302, text="moved"), "http_302"),
        (raising(httpx.ReadTimeout), "timeout"),
        (raising(httpx.WriteTimeout), "timeout"),
        (raising(httpx.ReadError, "Connection reset by peer"), "reset"),
        (raising(httpx.RemoteProtocolError, "Server disconnected"), "reset"),
        (reply(200, text="<html>not json</html>"), "unparseable"),
        (reply(200, body=["a", "list"]), "unparseable"),
        (reply(200, body={"status": "success"}), "unparseable"),
        (reply(200, body={"status": "weird", "orderid": "1"}), "unparseable"),
    ],
)
def test_unknown_outcomes(endpoint: str, handler: Handler, reason: str) -> None:
    broker, seen = make_broker(handler)
    result = submit(broker, endpoint)
    assert isinstance(result, Unknown)
    assert result.reason_code == reason
    assert len(seen.requests) == 1


def test_error_bodies_are_preserved_in_the_message() -> None:
    broker, _ = make_broker(reply(400, {"status": "error", "message": {"price": ["too far"]}}))
    result = broker.place(ORDER)
    assert isinstance(result, Definitive)
    assert "HTTP 400" in result.message
    assert "too far" in result.message


@pytest.mark.parametrize(
    "handler",
    [
        reply(429, {"status": "error", "message": "Rate limit exceeded."}),
        reply(500, {"status": "error", "message": "x"}),
        raising(httpx.ConnectError),
        raising(httpx.ReadTimeout),
    ],
)
def test_cancel_retries_transient_failures_then_succeeds(handler: Handler) -> None:
    done = reply(body={"status": "success", "orderid": "5"})
    broker, seen = make_broker([handler, handler, done], read_backoff_s=(0.2, 0.5))
    assert broker.cancel("5") == Accepted("5")
    assert len(seen.requests) == 3
    assert seen.tokens == ["order", "order"]  # the caller took the first token
    assert 0.2 <= seen.sleeps[0] <= 0.25 and 0.5 <= seen.sleeps[1] <= 0.625


def test_cancel_gives_up_after_the_configured_attempts() -> None:
    broker, seen = make_broker(reply(503, text="down"), read_retries=2)
    result = broker.cancel("5")
    assert isinstance(result, Unknown) and result.reason_code == "http_503"
    assert len(seen.requests) == 2


@pytest.mark.parametrize("status", [400, 403, 404])
def test_cancel_does_not_retry_definitive_rejections(status: int) -> None:
    broker, seen = make_broker(reply(status, {"status": "error", "message": "no"}))
    assert isinstance(broker.cancel("5"), Definitive)
    assert len(seen.requests) == 1


def test_modifications_are_capped_per_order() -> None:
    broker, seen = make_broker(
        reply(body={"status": "success", "orderid": "1"}), max_modifications=2
    )
    assert isinstance(broker.modify("1", ORDER), Accepted)
    assert isinstance(broker.modify("1", ORDER), Accepted)
    capped = broker.modify("1", ORDER)
    assert isinstance(capped, Definitive) and capped.reason_code == "max_modifications"
    assert isinstance(broker.modify("2", ORDER), Accepted)
    assert len(seen.requests) == 3


# --------------------------------------------------------------------------- secrecy


@pytest.mark.parametrize(
    "handler",
    [
        reply(400, {"status": "error", "message": f"bad key {KEY}"}),
        reply(500, text=f"Traceback: apikey={KEY}"),
        reply(200, text=f"<html>{KEY}</html>"),
        raising(httpx.ConnectError, f"cannot connect with {KEY}"),
        raising(httpx.ReadTimeout, f"timed out {KEY}"),
    ],
)
def test_the_api_key_never_appears_in_results(handler: Handler) -> None:
    broker, _ = make_broker(handler, read_retries=1)
    results: list[object] = [
        broker.place(ORDER),
        broker.modify("1", ORDER),
        broker.cancel("1"),
        broker.order_book(),
        broker.funds(),
    ]
    for result in results:
        assert KEY not in repr(result)
    assert KEY not in repr(broker)
    assert KEY not in repr(broker.settings)


# --------------------------------------------------------------------------- reads


ORDER_ROW = {
    "action": "BUY",
    "exchange": "NFO",
    "order_status": "complete",
    "orderid": "251128000123456",
    "price": 612.35,
    "pricetype": "LIMIT",
    "product": "NRML",
    "quantity": "120",
    "symbol": "BANKNIFTY30DEC2552000CE",
    "timestamp": "28-Nov-2025 10:30:01",
    "trigger_price": 0,
}


def ist(hour: int, minute: int, second: int, day: dt.date = TODAY) -> dt.datetime:
    local = dt.datetime.combine(day, dt.time(hour, minute, second))
    return (local - IST_OFFSET).replace(tzinfo=dt.UTC)


def test_orderstatus_parses_numbers_strings_and_ist_timestamp() -> None:
    data = {**ORDER_ROW, "average_price": "612.40"}
    broker, _ = make_broker(reply(body={"status": "success", "data": data}))
    result = broker.order_status("251128000123456")
    assert isinstance(result, Ok)
    status = result.value
    assert status.quantity == 120
    assert status.price == Decimal("612.35")
    assert status.average_price == Decimal("612.40")
    assert status.status == "COMPLETE"
    assert status.timestamp == ist(10, 30, 1)


def test_zero_average_price_means_none() -> None:
    data = {**ORDER_ROW, "order_status": "open", "average_price": 0}
    broker, _ = make_broker(reply(body={"status": "success", "data": data}))
    result = broker.order_status("1")
    assert isinstance(result, Ok)
    assert result.value.average_price is None
    assert result.value.status == "OPEN"


@pytest.mark.parametrize(
    "data",
    [
        {"orders": [ORDER_ROW, {**ORDER_ROW, "orderid": "2", "quantity": 30}], "statistics": {}},
        [ORDER_ROW, {**ORDER_ROW, "orderid": "2", "quantity": 30}],
    ],
)
def test_orderbook_wrapped_or_bare(data: object) -> None:
    broker, _ = make_broker(reply(body={"status": "success", "data": data}))
    result = broker.order_book()
    assert isinstance(result, Ok)
    assert [(row.order_id, row.quantity) for row in result.value] == [
        ("251128000123456", 120),
        ("2", 30),
    ]


def test_empty_orderbook() -> None:
    broker, _ = make_broker(reply(body={"status": "success", "data": {"orders": []}}))
    assert broker.order_book() == Ok([])


TRADE = {
    "action": "SELL",
    "average_price": "57890.5",
    "exchange": "MCX",
    "orderid": "9",
    "product": "NRML",
    "quantity": 2,
    "symbol": "GOLDM05JAN26FUT",
    "timestamp": "10:31:05",
    "trade_value": 115781.0,
}


@pytest.mark.parametrize(
    "data", [[TRADE, {**TRADE, "tradeid": 17}], {"trades": [TRADE, {**TRADE, "tradeid": 17}]}]
)
def test_tradebook_list_or_wrapped_with_time_only_timestamps(data: object) -> None:
    broker, _ = make_broker(reply(body={"status": "success", "data": data}))
    result = broker.trade_book()
    assert isinstance(result, Ok)
    first, second = result.value
    assert first.average_price == Decimal("57890.5")
    assert first.quantity == 2
    assert first.timestamp == ist(10, 31, 5)  # time only = today, IST
    assert (first.trade_id, second.trade_id) == (None, "17")


def test_tradebook_rows_without_quantity_or_price_are_ignored() -> None:
    rows = [TRADE, {**TRADE, "quantity": "0"}, {**TRADE, "average_price": 0}]
    broker, _ = make_broker(reply(body={"status": "success", "data": rows}))
    result = broker.trade_book()
    assert isinstance(result, Ok)
    assert len(result.value) == 1


def test_positionbook_signed_strings_and_closed_rows_dropped() -> None:
    rows = [
        {"symbol": "A", "exchange": "NFO", "product": "NRML", "quantity": "-30",
         "average_price": "101.50", "ltp": "100", "pnl": "45"},
        {"symbol": "B", "exchange": "NFO", "product": "NRML", "quantity": "0",
         "average_price": "0.00", "ltp": "1", "pnl": "0"},
        {"symbol": "C", "exchange": "MCX", "product": "NRML", "quantity": 3,
         "average_price": 57000, "ltp": 1, "pnl": 0},
    ]  # fmt: skip
    broker, _ = make_broker(reply(body={"status": "success", "data": rows}))
    result = broker.positions()
    assert isinstance(result, Ok)
    assert [(p.symbol, p.quantity, p.average_price) for p in result.value] == [
        ("A", -30, Decimal("101.50")),
        ("C", 3, Decimal(57000)),
    ]


def test_funds_strings_to_decimals() -> None:
    data = {
        "availablecash": "1000000.50",
        "collateral": "0.00",
        "m2mrealized": "-1200.25",
        "m2munrealized": 300,
        "utiliseddebits": "15000.00",
    }
    broker, _ = make_broker(reply(body={"status": "success", "data": data}))
    result = broker.funds()
    assert isinstance(result, Ok)
    assert result.value.availablecash == Decimal("1000000.50")
    assert result.value.m2mrealized == Decimal("-1200.25")
    assert result.value.m2munrealized == Decimal(300)
    assert result.value.utiliseddebits == Decimal("15000.00")


def test_quote_and_its_request() -> None:
    data = {"ltp": 612.35, "bid": "612.30", "ask": 612.4, "open": 1, "volume": 5}
    broker, seen = make_broker(reply(body={"status": "success", "data": data}))
    result = broker.quote("BANKNIFTY30DEC2552000CE", "NFO")
    assert isinstance(result, Ok)
    assert (result.value.ltp, result.value.bid, result.value.ask) == (
        Decimal("612.35"),
        Decimal("612.30"),
        Decimal("612.4"),
    )
    assert seen.requests[0][1]["symbol"] == "BANKNIFTY30DEC2552000CE"


def test_quote_with_zero_depth_has_no_bid_or_ask() -> None:
    data = {"ltp": "612.35", "bid": 0, "ask": "0"}
    broker, _ = make_broker(reply(body={"status": "success", "data": data}))
    assert broker.quote("X", "NSE") == Ok(Quote(Decimal("612.35")))


def test_ping_and_mode() -> None:
    ping = {"status": "success", "data": {"message": "pong", "broker": "zerodha"}}
    broker, _ = make_broker(reply(body=ping))
    assert broker.ping() == Ok("zerodha")
    for data, expected in (
        ({"analyze_mode": True, "mode": "analyze", "total_logs": 2}, "analyze"),
        ({"analyze_mode": False, "mode": "Live"}, "live"),
        ({"analyze_mode": True}, "analyze"),
    ):
        broker, _ = make_broker(reply(body={"status": "success", "data": data}))
        assert broker.mode() == Ok(expected)


@pytest.mark.parametrize(
    ("handler", "kind"),
    [
        (reply(403, {"status": "error", "message": "Invalid openalgo apikey"}), "auth"),
        (reply(401, {"status": "error", "message": "x"}), "auth"),
        (reply(404, {"status": "error", "message": "Order not found"}), "not_found"),
        (reply(400, {"status": "error", "message": "bad"}), "rejected"),
        (reply(200, {"status": "error", "message": "Broker not logged in"}), "error"),
        (reply(200, text="not json"), "parse"),
        (reply(200, {"status": "success", "data": {**ORDER_ROW, "quantity": "1.5"}}), "parse"),
        (reply(200, {"status": "success", "data": {**ORDER_ROW, "price": "abc"}}), "parse"),
        (reply(200, {"status": "success", "data": {**ORDER_ROW, "timestamp": "yday"}}), "parse"),
        (reply(200, {"status": "success", "data": "nope"}), "parse"),
    ],
)
def test_read_errors_that_are_not_retried(handler: Handler, kind: str) -> None:
    broker, seen = make_broker(handler)
    result = broker.order_status("1")
    assert isinstance(result, ReadError)
    assert result.kind == kind
    assert len(seen.requests) == 1
    assert seen.sleeps == []


@pytest.mark.parametrize(
    ("handler", "kind"),
    [
        (reply(500, {"status": "error", "message": "x"}), "http_500"),
        (reply(502, text="bad gateway"), "http_502"),
        (reply(429, {"status": "error", "message": "Rate limit exceeded."}), "rate_limited"),
        (raising(httpx.ConnectError), "connect"),
        (raising(httpx.ReadTimeout), "timeout"),
        (raising(httpx.RemoteProtocolError), "reset"),
    ],
)
def test_reads_retry_transient_failures_with_backoff_and_a_token_each(
    handler: Handler, kind: str
) -> None:
    broker, seen = make_broker(handler, read_retries=3, read_backoff_s=(0.2, 0.5, 1.0))
    result = broker.funds()
    assert isinstance(result, ReadError) and result.kind == kind
    assert len(seen.requests) == 3
    assert seen.tokens == ["read", "read", "read"]
    assert len(seen.sleeps) == 2
    assert 0.2 <= seen.sleeps[0] <= 0.25 and 0.5 <= seen.sleeps[1] <= 0.625


def test_a_read_succeeds_after_a_transient_failure() -> None:
    funds = {"status": "success", "data": {"availablecash": "5"}}
    broker, seen = make_broker([reply(503, text="busy"), reply(body=funds)])
    result = broker.funds()
    assert isinstance(result, Ok) and result.value.availablecash == Decimal(5)
    assert len(seen.requests) == 2


def test_no_read_token_is_an_error_without_a_request() -> None:
    broker, seen = make_broker(reply(body={"status": "success", "data": {}}), fail_budget=True)
    result = broker.order_book()
    assert isinstance(result, ReadError) and result.kind == "rate_budget"
    assert seen.requests == []


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("complete", "COMPLETE"),
        ("COMPLETE", "COMPLETE"),
        ("open", "OPEN"),
        ("Pending", "OPEN"),
        ("trigger pending", "OPEN"),
        ("open pending", "OPEN"),
        ("rejected", "REJECTED"),
        ("cancelled", "CANCELLED"),
        ("Canceled", "CANCELLED"),
        ("", "UNKNOWN"),
        ("something else", "UNKNOWN"),
    ],
)
def test_status_normalisation(raw: str, expected: str) -> None:
    assert normalise_status(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("28-Nov-2025 10:30:01", ist(10, 30, 1)),
        ("28-NOV-2025 10:30:01", ist(10, 30, 1)),
        ("10:30:01", ist(10, 30, 1)),
        ("2025-11-28 10:30:01", ist(10, 30, 1)),
        ("2025-11-28T10:30:01", ist(10, 30, 1)),
        ("2025-11-28T05:00:01+00:00", ist(10, 30, 1)),
        (None, None),
    ],
)
def test_timestamp_formats(raw: str | None, expected: dt.datetime | None) -> None:
    assert parse_timestamp(raw, lambda: TODAY) == expected


def test_settings_from_environment() -> None:
    settings = OpenAlgoSettings.from_env(
        {
            "PM_OPENALGO_URL": "http://broker:5000/",
            "PM_OPENALGO_API_KEY": KEY,
            "PM_OPENALGO_STRATEGY": "desk",
            "PM_OPENALGO_EXPECTED_MODE": "LIVE",
            "PM_OPENALGO_ORDER_TIMEOUT_S": "0.2",
            "PM_OPENALGO_READ_RETRIES": "5",
            "PM_OPENALGO_READ_BACKOFF": "0.1,0.3",
            "PM_OPENALGO_MAX_MODIFICATIONS": "7",
        }
    )
    assert settings.url == "http://broker:5000"
    assert settings.expected_mode == "live"
    assert settings.order_timeout_s == 0.2
    assert settings.read_backoff_s == (0.1, 0.3)
    assert (settings.read_retries, settings.max_modifications) == (5, 7)
    assert OpenAlgoSettings.from_env({}) == OpenAlgoSettings()


def test_bad_settings_name_every_field_and_hide_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        OpenAlgoSettings.from_env(
            {
                "PM_OPENALGO_API_KEY": KEY,
                "PM_OPENALGO_EXPECTED_MODE": "paper",
                "PM_OPENALGO_READ_TIMEOUT_S": "soon",
                "PM_OPENALGO_READ_BACKOFF": "0.1,-1",
            }
        )
    fields = {field for field, _ in caught.value.errors}
    assert fields == {
        "PM_OPENALGO_EXPECTED_MODE",
        "PM_OPENALGO_READ_TIMEOUT_S",
        "PM_OPENALGO_READ_BACKOFF",
    }
    assert KEY not in str(caught.value)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(
        st.sampled_from(["status", "data", "orderid", "orders", "trades", "quantity", "price",
                         "ltp", "availablecash", "mode", "message", "symbol", "timestamp"]),
        inner,
        max_size=5,
    ),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(status=st.sampled_from([200, 400, 403, 429, 500]), body=JSON)
def test_any_json_body_gives_a_result_never_an_exception(status: int, body: object) -> None:
    broker, _ = make_broker(reply(status, body), read_retries=1)
    assert isinstance(broker.place(ORDER), Accepted | Definitive | Unknown)
    for read in (broker.order_book, broker.trade_book, broker.positions, broker.funds):
        assert isinstance(read(), Ok | ReadError)
    assert isinstance(broker.quote("X", "NSE"), Ok | ReadError)
    assert isinstance(broker.order_status("1"), Ok | ReadError)


def test_unsent_modifications_do_not_count_against_the_cap() -> None:
    done = reply(body={"status": "success", "orderid": "1"})
    broker, seen = make_broker(
        [raising(httpx.ConnectError), raising(httpx.ConnectError), done], max_modifications=1
    )
    first, second = broker.modify("1", ORDER), broker.modify("1", ORDER)
    assert isinstance(first, Definitive) and first.reason_code == "not_sent"
    assert isinstance(second, Definitive) and second.reason_code == "not_sent"
    assert isinstance(broker.modify("1", ORDER), Accepted)
    capped = broker.modify("1", ORDER)
    assert isinstance(capped, Definitive) and capped.reason_code == "max_modifications"
    assert len(seen.requests) == 3


def test_every_attempt_is_observed_and_a_failing_observer_changes_nothing() -> None:
    observed: list[tuple[str, str]] = []

    def observe(endpoint: str, outcome: str, seconds: float) -> None:
        assert seconds >= 0
        observed.append((endpoint, outcome))
        raise RuntimeError("metrics backend down")

    recorder = Recorder()
    handlers = [raising(httpx.ReadTimeout), reply(body={"status": "success", "data": {}})]

    def transport(request: httpx.Request) -> httpx.Response:
        recorder.requests.append(("x", {}))
        return handlers[len(recorder.requests) - 1](request)

    broker = OpenAlgoBroker(
        OpenAlgoSettings(url="http://openalgo.test", api_key=KEY, read_backoff_s=(0,)),
        transport=httpx.MockTransport(transport),
        observe=observe,
    )
    assert broker.order_book() == Ok([])
    assert observed == [("orderbook", "timeout"), ("orderbook", "http_200")]


def test_cancel_retry_without_an_order_token_stops_with_resend_allowed() -> None:
    broker, seen = make_broker(reply(500, text="x"), fail_budget=True)
    result = broker.cancel("5")
    assert isinstance(result, Definitive)
    assert (result.reason_code, result.resend_allowed) == ("rate_budget", True)
    assert len(seen.requests) == 1
