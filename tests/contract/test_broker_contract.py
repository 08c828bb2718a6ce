"""The Broker port contract (openalgo.md 3), one suite for every broker.

Parametrised over the PaperBroker, the OpenAlgoBroker against the OpenAlgo simulator served
by uvicorn on a free port, and (opt-in marker ``openalgo_live``) a real OpenAlgo in analyze
mode. Simulator-only cases cover the rule effects of openalgo.md 9, rate-limit emulation and
connection faults through the TCP fault proxy.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, Protocol

import httpx
import pytest

from pm_adapters.openalgo import OpenAlgoBroker, OpenAlgoSettings
from pm_adapters.openalgo.simulator import RunningSimulator, start_in_thread
from pm_adapters.paper import PaperBroker
from pm_core.model import Quote
from pm_core.ports import (
    Accepted,
    Broker,
    Definitive,
    Ok,
    OrderRequest,
    OrderStatus,
    ReadError,
    Unknown,
)
from tests.kit.faultproxy import FaultProxy

SIM_KEY = "contract-key"
OPTION = "BANKNIFTY30DEC2552000CE"
GOLD = "GOLDM05JAN26FUT"


class Harness(Protocol):
    broker: Broker

    def set_quote(self, exchange: str, symbol: str, ltp: str, bid: str, ask: str) -> None: ...


class PaperHarness:
    def __init__(self) -> None:
        self.paper = PaperBroker()
        self.broker: Broker = self.paper

    def set_quote(self, exchange: str, symbol: str, ltp: str, bid: str, ask: str) -> None:
        self.paper.set_quote(exchange, symbol, Quote(Decimal(ltp), Decimal(bid), Decimal(ask)))


def fast_settings(url: str, **overrides: Any) -> OpenAlgoSettings:
    values: dict[str, Any] = {
        "url": url,
        "api_key": SIM_KEY,
        "connect_timeout_s": 0.5,
        "read_timeout_s": 1.0,
        "order_timeout_s": 1.0,
        "read_retries": 2,
        "read_backoff_s": (0.01,),
    }
    values.update(overrides)
    return OpenAlgoSettings(**values)


class SimulatorHarness:
    def __init__(self, server: RunningSimulator, **settings: Any) -> None:
        self.server = server
        self.control = httpx.Client(base_url=server.url + "/_simulator/", timeout=5)
        self.post("reset", {})
        self.openalgo = OpenAlgoBroker(fast_settings(server.url, **settings))
        self.broker: Broker = self.openalgo

    def post(self, action: str, body: dict[str, Any]) -> httpx.Response:
        response = self.control.post(action, json=body)
        assert response.status_code == 200, response.text
        return response

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.control.get("state").json()
        return state

    def rules(self, *rules: dict[str, Any]) -> None:
        self.post("rules", {"rules": list(rules)})

    def manual_clock(self) -> None:
        self.post("clock", {"manual": True, "now": "2025-11-28T10:30:00+05:30"})

    def advance(self, ms: float) -> None:
        self.post("clock", {"advance_ms": ms})

    def set_quote(self, exchange: str, symbol: str, ltp: str, bid: str, ask: str) -> None:
        row = {"exchange": exchange, "symbol": symbol, "ltp": ltp, "bid": bid, "ask": ask}
        self.post("quotes", {"quotes": [row]})

    def close(self) -> None:
        self.openalgo.close()
        self.control.close()


class LiveHarness:
    """A real OpenAlgo in analyze mode: quotes cannot be set, so those cases skip."""

    def __init__(self, url: str, key: str) -> None:
        self.openalgo = OpenAlgoBroker(OpenAlgoSettings(url=url, api_key=key))
        self.broker: Broker = self.openalgo

    def set_quote(self, exchange: str, symbol: str, ltp: str, bid: str, ask: str) -> None:
        pytest.skip("quotes cannot be set on a real OpenAlgo")


@pytest.fixture(scope="module")
def simulator_server() -> Iterator[RunningSimulator]:
    with start_in_thread(api_keys=[SIM_KEY], seed=7) as server:
        yield server


@pytest.fixture
def sim(simulator_server: RunningSimulator) -> Iterator[SimulatorHarness]:
    harness = SimulatorHarness(simulator_server)
    yield harness
    harness.close()


@pytest.fixture(
    params=[
        "paper",
        "simulator",
        pytest.param("live", marks=pytest.mark.openalgo_live),
    ]
)
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "paper":
        yield PaperHarness()
    elif request.param == "simulator":
        server = request.getfixturevalue("simulator_server")
        simulated = SimulatorHarness(server)
        yield simulated
        simulated.close()
    else:
        url = os.environ.get("PM_OPENALGO_LIVE_URL")
        key = os.environ.get("PM_OPENALGO_LIVE_API_KEY")
        if not url or not key:
            pytest.skip("set PM_OPENALGO_LIVE_URL and PM_OPENALGO_LIVE_API_KEY to run")
        live = LiveHarness(url, key)
        yield live
        live.openalgo.close()


def order(
    action: str = "BUY",
    quantity: int = 30,
    pricetype: str = "MARKET",
    price: str = "0",
    symbol: str = OPTION,
    exchange: str = "NFO",
    tag: str = "pm-test-1-CE-1",
) -> OrderRequest:
    return OrderRequest(
        symbol=symbol,
        exchange=exchange,
        action=action,  # type: ignore[arg-type]
        product="NRML",
        pricetype=pricetype,  # type: ignore[arg-type]
        quantity=quantity,
        price=Decimal(price),
        tag=tag,
    )


def accepted(result: object) -> str:
    assert isinstance(result, Accepted), result
    return result.order_id


def status_of(broker: Broker, order_id: str) -> OrderStatus:
    result = broker.order_status(order_id)
    assert isinstance(result, Ok), result
    return result.value


# --------------------------------------------------------------------------- contract


def test_ping_and_mode(harness: Harness) -> None:
    assert isinstance(harness.broker.ping(), Ok)
    assert harness.broker.mode() == Ok("analyze")


def test_funds_are_readable(harness: Harness) -> None:
    funds = harness.broker.funds()
    assert isinstance(funds, Ok)
    assert funds.value.availablecash > 0


def test_market_buy_fills_at_the_ask_and_shows_in_every_book(harness: Harness) -> None:
    harness.set_quote("NFO", OPTION, "612.35", "612.30", "612.40")
    order_id = accepted(harness.broker.place(order("BUY", 60)))
    status = status_of(harness.broker, order_id)
    assert (status.status, status.quantity, status.average_price) == (
        "COMPLETE",
        60,
        Decimal("612.40"),
    )
    assert (status.symbol, status.exchange, status.action) == (OPTION, "NFO", "BUY")
    book = harness.broker.order_book()
    assert isinstance(book, Ok)
    assert [row.order_id for row in book.value] == [order_id]
    trades = harness.broker.trade_book()
    assert isinstance(trades, Ok)
    assert sum(t.quantity for t in trades.value if t.order_id == order_id) == 60
    positions = harness.broker.positions()
    assert isinstance(positions, Ok)
    assert [(p.symbol, p.quantity) for p in positions.value] == [(OPTION, 60)]


def test_round_trip_nets_out_and_realises_the_spread(harness: Harness) -> None:
    harness.set_quote("MCX", GOLD, "57890", "57889", "57891")
    accepted(harness.broker.place(order("BUY", 2, symbol=GOLD, exchange="MCX")))
    accepted(harness.broker.place(order("SELL", 2, symbol=GOLD, exchange="MCX")))
    positions = harness.broker.positions()
    assert positions == Ok([])
    funds = harness.broker.funds()
    assert isinstance(funds, Ok)
    assert funds.value.m2mrealized == Decimal(-4)  # bought at 57891, sold at 57889


def test_short_position_is_negative(harness: Harness) -> None:
    harness.set_quote("NFO", "BANKNIFTY30DEC2552000PE", "400", "399.95", "400.05")
    accepted(harness.broker.place(order("SELL", 30, symbol="BANKNIFTY30DEC2552000PE")))
    positions = harness.broker.positions()
    assert isinstance(positions, Ok)
    assert [(p.quantity, p.average_price) for p in positions.value] == [(-30, Decimal("399.95"))]


def test_marketable_limit_fills_no_worse_than_its_limit(harness: Harness) -> None:
    harness.set_quote("NFO", OPTION, "612.35", "612.30", "612.40")
    order_id = accepted(harness.broker.place(order("BUY", 30, "LIMIT", "615")))
    status = status_of(harness.broker, order_id)
    assert status.status == "COMPLETE"
    assert status.average_price is not None and status.average_price <= Decimal(615)


def test_resting_limit_can_be_modified_into_a_fill(harness: Harness) -> None:
    harness.set_quote("NFO", OPTION, "612.35", "612.30", "612.40")
    order_id = accepted(harness.broker.place(order("BUY", 30, "LIMIT", "600")))
    resting = status_of(harness.broker, order_id)
    assert (resting.status, resting.price) == ("OPEN", Decimal(600))
    assert harness.broker.trade_book() == Ok([])
    modified = harness.broker.modify(order_id, order("BUY", 30, "LIMIT", "612.40"))
    assert accepted(modified) == order_id
    filled = status_of(harness.broker, order_id)
    assert (filled.status, filled.average_price) == ("COMPLETE", Decimal("612.40"))


def test_cancel_is_retry_safe_and_final(harness: Harness) -> None:
    harness.set_quote("NFO", OPTION, "612.35", "612.30", "612.40")
    order_id = accepted(harness.broker.place(order("SELL", 30, "LIMIT", "650")))
    assert accepted(harness.broker.cancel(order_id)) == order_id
    assert accepted(harness.broker.cancel(order_id)) == order_id  # already cancelled = success
    assert status_of(harness.broker, order_id).status == "CANCELLED"
    refused = harness.broker.modify(order_id, order("SELL", 30, "LIMIT", "612"))
    assert isinstance(refused, Definitive) and refused.reason_code == "broker_rejected"


def test_a_filled_order_cannot_be_cancelled_or_modified(harness: Harness) -> None:
    harness.set_quote("NFO", OPTION, "612.35", "612.30", "612.40")
    order_id = accepted(harness.broker.place(order("BUY", 30)))
    for result in (
        harness.broker.cancel(order_id),
        harness.broker.modify(order_id, order("BUY", 30, "LIMIT", "600")),
    ):
        assert isinstance(result, Definitive)
        assert result.reason_code == "broker_rejected" and not result.resend_allowed


def test_unknown_order_ids(harness: Harness) -> None:
    result = harness.broker.order_status("999999999")
    assert isinstance(result, ReadError) and result.kind == "not_found"
    cancelled = harness.broker.cancel("999999999")
    assert isinstance(cancelled, Definitive) and cancelled.reason_code == "broker_rejected"


def test_quote_returns_ltp_bid_ask(harness: Harness) -> None:
    harness.set_quote("NFO", OPTION, "612.35", "612.30", "612.40")
    assert harness.broker.quote(OPTION, "NFO") == Ok(
        Quote(Decimal("612.35"), Decimal("612.30"), Decimal("612.40"))
    )


def test_invalid_orders_are_rejected_without_an_order(harness: Harness) -> None:
    harness.set_quote("NFO", OPTION, "612.35", "612.30", "612.40")
    result = harness.broker.place(order("BUY", 30, "LIMIT", "0"))
    assert isinstance(result, Definitive) and result.reason_code == "broker_rejected"
    assert harness.broker.order_book() == Ok([])


# --------------------------------------------------------------------------- paper only


def test_paper_market_order_without_quote_fills_at_the_order_price() -> None:
    paper = PaperBroker()
    order_id = accepted(paper.place(order("BUY", 30, "MARKET", "612.35")))
    assert status_of(paper, order_id).average_price == Decimal("612.35")
    # An at-the-money option's intrinsic value is 0: the paper synthetic still fills.
    zero_id = accepted(paper.place(order("BUY", 30, "MARKET", "0")))
    assert status_of(paper, zero_id).average_price == Decimal("0")


def test_paper_slippage_moves_fills_against_the_order() -> None:
    paper = PaperBroker(slippage_ticks=2)
    paper.set_quote("MCX", GOLD, Quote(Decimal(57890)))
    buy = accepted(paper.place(order("BUY", 1, symbol=GOLD, exchange="MCX")))
    sell = accepted(paper.place(order("SELL", 1, symbol=GOLD, exchange="MCX")))
    assert status_of(paper, buy).average_price == Decimal(57892)  # MCX tick 1.0
    assert status_of(paper, sell).average_price == Decimal(57888)


def test_paper_reject_next_rejects_once_and_only_the_named_symbol() -> None:
    paper = PaperBroker()
    paper.reject_next(symbol=GOLD, message="RMS: margin")
    other = paper.place(order("BUY", 30, "MARKET", "100"))
    assert isinstance(other, Accepted)
    rejected = paper.place(order("BUY", 1, "MARKET", "100", symbol=GOLD, exchange="MCX"))
    assert rejected == Definitive("broker_rejected", "RMS: margin")
    again = paper.place(order("BUY", 1, "MARKET", "100", symbol=GOLD, exchange="MCX"))
    assert isinstance(again, Accepted)
    assert len(paper.order_book().value) == 2  # type: ignore[union-attr]


def test_paper_resting_limit_fills_when_the_quote_crosses() -> None:
    paper = PaperBroker()
    paper.set_quote("NFO", OPTION, Quote(Decimal(612), Decimal("611.95"), Decimal("612.05")))
    order_id = accepted(paper.place(order("BUY", 30, "LIMIT", "600")))
    assert status_of(paper, order_id).status == "OPEN"
    paper.set_quote("NFO", OPTION, Quote(Decimal(599), Decimal("598.95"), Decimal("599.05")))
    assert status_of(paper, order_id).average_price == Decimal("599.05")


# --------------------------------------------------------------------------- simulator only


def test_simulator_rejects_quantities_off_the_lot_grid(sim: SimulatorHarness) -> None:
    result = sim.broker.place(order("BUY", 31))
    assert isinstance(result, Definitive) and result.reason_code == "broker_rejected"
    assert "lot size 30" in result.message
    sim.post("mode", {"lot_sizes": {"BANKNIFTY": 35}})
    assert isinstance(sim.broker.place(order("BUY", 35)), Accepted)
    assert sim.state()["orders"][0]["quantity"] == 35


def test_simulator_refuses_unknown_keys(sim: SimulatorHarness) -> None:
    with OpenAlgoBroker(fast_settings(sim.server.url, api_key="wrong")) as stranger:
        place = stranger.place(order())
        assert isinstance(place, Definitive) and place.reason_code == "broker_auth"
        ping = stranger.ping()
        assert isinstance(ping, ReadError) and ping.kind == "auth"
    assert sim.state()["orders"] == []


def test_simulator_logs_each_strategy_and_never_the_key(sim: SimulatorHarness) -> None:
    accepted(sim.broker.place(order(tag="pm-abc-1-CE-1")))
    accepted(sim.broker.place(order("SELL", tag="pm-abc-1-PE-1")))
    state = sim.state()
    places = [c for c in state["calls"] if c["endpoint"] == "placeorder"]
    assert [c["strategy"] for c in places] == ["pm:pm-abc-1-CE-1", "pm:pm-abc-1-PE-1"]
    assert [o["strategy"] for o in state["orders"]] == ["pm:pm-abc-1-CE-1", "pm:pm-abc-1-PE-1"]
    assert SIM_KEY not in str(state)


def test_effect_delayed_fill_at_a_price(sim: SimulatorHarness) -> None:
    sim.manual_clock()
    sim.rules({"match": {"endpoint": "placeorder"}, "effect": {"type": "fill", "after_ms": 500,
                                                               "price": "610.5"}})  # fmt: skip
    order_id = accepted(sim.broker.place(order()))
    assert status_of(sim.broker, order_id).status == "OPEN"
    sim.advance(499)
    assert status_of(sim.broker, order_id).status == "OPEN"
    sim.advance(1)
    filled = status_of(sim.broker, order_id)
    assert (filled.status, filled.average_price) == ("COMPLETE", Decimal("610.5"))


def test_effect_partial_fill_rest_open_in_several_trades(sim: SimulatorHarness) -> None:
    sim.rules({"match": {"symbol": OPTION}, "effect": {"partial": {"fraction": 0.5}}})
    order_id = accepted(sim.broker.place(order("BUY", 120)))
    assert status_of(sim.broker, order_id).status == "OPEN"
    trades = sim.broker.trade_book()
    assert isinstance(trades, Ok)
    assert [t.quantity for t in trades.value] == [30, 30]
    assert accepted(sim.broker.cancel(order_id)) == order_id


def test_effect_partial_fill_rest_cancelled(sim: SimulatorHarness) -> None:
    sim.manual_clock()
    sim.rules({"match": {}, "effect": {"type": "partial", "fraction": 0.25, "rest": "cancel",
                                       "ms": 200}})  # fmt: skip
    order_id = accepted(sim.broker.place(order("BUY", 120)))
    assert status_of(sim.broker, order_id).status == "OPEN"
    sim.advance(200)
    assert status_of(sim.broker, order_id).status == "CANCELLED"
    positions = sim.broker.positions()
    assert isinstance(positions, Ok) and positions.value[0].quantity == 30


def test_effect_reject_sync_records_no_order(sim: SimulatorHarness) -> None:
    sim.rules({"match": {"endpoint": "placeorder"}, "effect": {"reject_sync": {"message": "RMS"}}})
    result = sim.broker.place(order())
    assert result == Definitive("broker_rejected", "placeorder: HTTP 400: RMS")
    assert sim.state()["orders"] == []


def test_effect_reject_async(sim: SimulatorHarness) -> None:
    sim.manual_clock()
    sim.rules({"match": {}, "effect": {"type": "reject_async", "after_ms": 100}})
    order_id = accepted(sim.broker.place(order("BUY", 30, "LIMIT", "1")))
    assert status_of(sim.broker, order_id).status == "OPEN"
    sim.advance(100)
    assert status_of(sim.broker, order_id).status == "REJECTED"


def test_effect_latency_slows_the_reply(sim: SimulatorHarness) -> None:
    sim.rules({"match": {"endpoint": "funds"}, "effect": {"latency_ms": 150}})
    started = time.monotonic()
    assert isinstance(sim.broker.funds(), Ok)
    assert time.monotonic() - started >= 0.15


def test_effect_accept_then_timeout_is_unknown_with_the_order_recorded(
    simulator_server: RunningSimulator,
) -> None:
    sim = SimulatorHarness(simulator_server, order_timeout_s=0.2)
    try:
        sim.rules({"match": {"endpoint": "placeorder"},
                   "effect": {"type": "accept_then_timeout", "delay_ms": 600}})  # fmt: skip
        result = sim.broker.place(order())
        assert isinstance(result, Unknown) and result.reason_code == "timeout"
        book = sim.broker.order_book()
        assert isinstance(book, Ok) and [row.status for row in book.value] == ["COMPLETE"]
    finally:
        sim.close()


@pytest.mark.parametrize(
    ("effect", "outcome", "recorded"),
    [
        ({"type": "http_error", "status": 500, "record_order": True}, Unknown("http_500", ""), 1),
        ({"type": "http_error", "status": 500}, Unknown("http_500", ""), 0),
        ({"type": "http_error", "status": 403}, Definitive("broker_auth", ""), 0),
        ({"type": "http_error", "status": 429}, Definitive("rate_limited", "", True), 0),
        ({"type": "http_error", "status": 200, "body": "<html>"}, Unknown("unparseable", ""), 0),
    ],
)
def test_effect_http_error(
    sim: SimulatorHarness, effect: dict[str, Any], outcome: Unknown | Definitive, recorded: int
) -> None:
    sim.rules({"match": {"endpoint": "placeorder"}, "effect": effect})
    result = sim.broker.place(order())
    assert type(result) is type(outcome)
    assert result.reason_code == outcome.reason_code
    if isinstance(outcome, Definitive):
        assert isinstance(result, Definitive) and result.resend_allowed == outcome.resend_allowed
    assert len(sim.state()["orders"]) == recorded


def test_effect_book_lag_hides_the_order_from_the_books_for_a_while(sim: SimulatorHarness) -> None:
    sim.manual_clock()
    sim.rules({"match": {"endpoint": "placeorder"}, "effect": {"book_lag_ms": 300}})
    order_id = accepted(sim.broker.place(order()))
    assert sim.broker.order_book() == Ok([])
    assert sim.broker.trade_book() == Ok([])
    assert status_of(sim.broker, order_id).status == "COMPLETE"
    sim.advance(300)
    book = sim.broker.order_book()
    assert isinstance(book, Ok) and [row.order_id for row in book.value] == [order_id]


def test_effect_semi_auto_queues_without_an_order(sim: SimulatorHarness) -> None:
    sim.rules({"match": {"endpoint": "placeorder"}, "effect": "semi_auto"})
    result = sim.broker.place(order())
    assert isinstance(result, Unknown) and result.reason_code == "queued_for_approval"
    assert sim.state()["orders"] == []


def test_rules_match_nth_call_symbol_and_action(sim: SimulatorHarness) -> None:
    sim.rules(
        {"match": {"endpoint": "placeorder", "action": "SELL", "nth": 2}, "effect": "reject_sync"}
    )
    outcomes = [
        type(sim.broker.place(order(action))).__name__ for action in ("SELL", "BUY", "SELL", "SELL")
    ]
    assert outcomes == ["Accepted", "Accepted", "Definitive", "Accepted"]


def test_probability_is_reproducible_from_the_seed(sim: SimulatorHarness) -> None:
    def run() -> list[str]:
        sim.post("reset", {"seed": 99})
        sim.rules({"match": {"probability": 0.5}, "effect": "reject_sync"})
        return [type(sim.broker.place(order())).__name__ for _ in range(12)]

    first = run()
    assert run() == first
    assert set(first) == {"Accepted", "Definitive"}


def test_scripted_quotes_step_per_call(sim: SimulatorHarness) -> None:
    script = [{"ltp": "101", "bid": "100.95", "ask": "101.05"}, {"ltp": "102"}]
    sim.post(
        "quotes",
        {"quotes": [{"exchange": "NSE", "symbol": "SBIN", "ltp": "100", "script": script}]},
    )
    first, second = (sim.broker.quote("SBIN", "NSE") for _ in range(2))
    assert isinstance(first, Ok) and first.value.ltp == Decimal(101)
    assert isinstance(second, Ok) and second.value.ltp == Decimal(102)


def test_simulator_mode_switch_shows_in_writes_and_analyzer(sim: SimulatorHarness) -> None:
    sim.post("mode", {"mode": "live"})
    assert sim.broker.mode() == Ok("live")
    result = sim.broker.place(order())
    assert isinstance(result, Accepted) and result.mode == "live"


def test_control_api_rejects_bad_input(sim: SimulatorHarness) -> None:
    for action, body in (
        ("rules", {"rules": [{"match": {}, "effect": "explode"}]}),
        ("rules", {"rules": [{"match": {"nth": 0}, "effect": "fill"}]}),
        ("mode", {"mode": "paper"}),
        ("clock", {"now": "yesterday"}),
        ("quotes", {"quotes": [{"exchange": "NSE", "symbol": "X", "ltp": "abc"}]}),
    ):
        response = sim.control.post(action, json=body)
        assert response.status_code == 400, (action, response.text)
    bad_json = sim.control.post("rules", content=b"{not json")
    assert bad_json.status_code == 400


def test_rate_limit_emulation_returns_openalgos_429(simulator_server: RunningSimulator) -> None:
    sim = SimulatorHarness(simulator_server, read_retries=1)
    try:
        sim.manual_clock()
        sim.post("mode", {"rate_limit": True})
        results = [sim.broker.place(order()) for _ in range(12)]
        assert all(isinstance(r, Accepted) for r in results[:10])
        for limited in results[10:]:
            assert isinstance(limited, Definitive)
            assert (limited.reason_code, limited.resend_allowed) == ("rate_limited", True)
            assert "Rate limit exceeded" in limited.message
        reads = [sim.broker.funds() for _ in range(51)]
        assert all(isinstance(r, Ok) for r in reads[:50])
        assert isinstance(reads[50], ReadError) and reads[50].kind == "rate_limited"
        sim.advance(1000)
        assert isinstance(sim.broker.place(order()), Accepted)
        assert len(sim.state()["orders"]) == 11
    finally:
        sim.close()


# --------------------------------------------------------------------------- connection faults


@pytest.fixture
def proxied(simulator_server: RunningSimulator) -> Iterator[tuple[SimulatorHarness, FaultProxy]]:
    with FaultProxy("127.0.0.1", simulator_server.port) as proxy:
        harness = SimulatorHarness(simulator_server)
        harness.openalgo.close()
        harness.openalgo = OpenAlgoBroker(
            fast_settings(proxy.url, order_timeout_s=0.2, read_timeout_s=0.2, read_retries=2)
        )
        harness.broker = harness.openalgo
        yield harness, proxy
        harness.close()


def test_fault_refused_is_definitive_not_sent_and_resend_works(
    proxied: tuple[SimulatorHarness, FaultProxy],
) -> None:
    sim, proxy = proxied
    assert isinstance(sim.broker.ping(), Ok)  # a pooled keep-alive connection exists
    proxy.set_mode("refuse")
    result = sim.broker.place(order())
    assert isinstance(result, Definitive)
    assert (result.reason_code, result.resend_allowed) == ("not_sent", True)
    read = sim.broker.funds()
    assert isinstance(read, ReadError) and read.kind == "connect"
    assert sim.state()["orders"] == []
    proxy.set_mode("pass")
    accepted(sim.broker.place(order()))
    assert len(sim.state()["orders"]) == 1


def test_fault_accepted_then_dropped_is_unknown_with_exactly_one_order(
    proxied: tuple[SimulatorHarness, FaultProxy],
) -> None:
    sim, proxy = proxied
    proxy.set_mode("drop_after_request")
    result = sim.broker.place(order(tag="pm-drop-1-CE-1"))
    assert isinstance(result, Unknown) and result.reason_code == "reset"
    state = sim.state()
    assert len(state["orders"]) == 1
    places = [c for c in state["calls"] if c["endpoint"] == "placeorder"]
    assert [c["strategy"] for c in places] == ["pm:pm-drop-1-CE-1"]
    proxy.set_mode("pass")
    book = sim.broker.order_book()  # resolution reads the books, never re-sends
    assert isinstance(book, Ok) and len(book.value) == 1


def test_fault_reset_mid_response_is_unknown(proxied: tuple[SimulatorHarness, FaultProxy]) -> None:
    sim, proxy = proxied
    proxy.set_mode("reset_mid_response")
    result = sim.broker.place(order())
    assert isinstance(result, Unknown)
    assert result.reason_code in ("reset", "unparseable")
    assert len(sim.state()["orders"]) == 1
    read = sim.broker.funds()
    assert isinstance(read, ReadError)
    assert proxy.requests_forwarded >= 3  # the read was retried


def test_fault_latency_beyond_the_order_timeout_is_unknown(
    proxied: tuple[SimulatorHarness, FaultProxy],
) -> None:
    sim, proxy = proxied
    proxy.set_mode("pass", latency_ms=400)
    result = sim.broker.place(order())
    assert isinstance(result, Unknown) and result.reason_code == "timeout"
    assert len(sim.state()["orders"]) == 1


def test_quote_walk_is_reproducible_from_the_seed(sim: SimulatorHarness) -> None:
    def walk() -> list[Decimal]:
        sim.post("reset", {"seed": 5})
        row = {"exchange": "NSE", "symbol": "SBIN", "ltp": "100", "walk_step": "0.05"}
        sim.post("quotes", {"quotes": [row]})
        prices = []
        for _ in range(8):
            result = sim.broker.quote("SBIN", "NSE")
            assert isinstance(result, Ok)
            prices.append(result.value.ltp)
        return prices

    first = walk()
    assert walk() == first
    assert len(set(first)) > 1


def test_pm_simulate_broker_is_registered() -> None:
    from click.testing import CliRunner

    from pm_cli.main import cli

    result = CliRunner().invoke(cli, ["simulate-broker", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--seed", "--api-key"):
        assert option in result.output


def test_default_quotes_depend_only_on_seed_and_symbol(sim: SimulatorHarness) -> None:
    def quotes(order_of_symbols: list[str]) -> dict[str, Decimal]:
        sim.post("reset", {"seed": 11})
        seen = {}
        for symbol in order_of_symbols:
            result = sim.broker.quote(symbol, "NSE")
            assert isinstance(result, Ok)
            seen[symbol] = result.value.ltp
        return seen

    assert quotes(["A", "B", "C"]) == quotes(["C", "A", "B"])


def test_openalgo_follows_many_orders_through_one_shared_orderbook_read(
    sim: SimulatorHarness,
) -> None:
    """openalgo.md 6: with over three orders followed, one orderbook read per
    PM_OPENALGO_BOOK_POLL_MS answers their status instead of one orderstatus each."""
    broker = sim.openalgo
    sim.set_quote("MCX", GOLD, "78500", "78490", "78510")
    ids = []
    for n in range(6):
        request = order("BUY", 1, "LIMIT", "78000", GOLD, "MCX", f"pm-book-{n}-FUT-1")
        placed = broker.place(request)
        assert isinstance(placed, Accepted)
        ids.append(placed.order_id)
    calls_before = len(sim.state()["calls"])
    for _ in range(3):  # three poll rounds within one interval (the default 500 ms)
        for order_id in ids:
            status = broker.order_status(order_id)
            assert isinstance(status, Ok) and status.value.status == "OPEN"
    calls = [c["endpoint"] for c in sim.state()["calls"][calls_before:]]
    # Each order's first question is asked alone, as are the next three; from the fourth
    # polled order on, one book read serves them all.
    assert calls.count("orderbook") == 1, calls
    assert calls.count("orderstatus") == 6 + 3, calls
    # A fill shows in the shared book once the interval has passed.
    sim.set_quote("MCX", GOLD, "77990", "77980", "78000")  # the limits are marketable now
    time.sleep(0.55)
    for order_id in ids:
        status = broker.order_status(order_id)
        assert isinstance(status, Ok) and status.value.status == "COMPLETE"
    calls = [c["endpoint"] for c in sim.state()["calls"][calls_before:]]
    assert (calls.count("orderbook"), calls.count("orderstatus")) == (2, 9), calls
