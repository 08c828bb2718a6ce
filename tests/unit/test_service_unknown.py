"""Orders pm must wait on: unknown sends and refused rate tokens (service.md 2.4, openalgo.md 5/7).

An order whose reply was lost may be at the broker. Declaring it ``not_found`` lets an entry
send its lots again, so that needs two readable look-ups that found nothing; while the books
cannot be read the signal is held (202, instrument barriered) and the instance's resolver
looks again until the order is found, proven absent, or its exchange day ends (ambiguous).
An entry is completed only while its alert is younger than PM_MAX_RESUME_AGE_S, and an order
refused a rate token stays pending and asks again while its alert is that young.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Sequence
from typing import Literal

from pm_adapters.clock import ManualClock
from pm_adapters.paper import PaperBroker
from pm_core.errors import RateBudgetExceeded
from pm_core.model import ReceivedSignal
from pm_core.ports import (
    Ok,
    OrderRequest,
    OrderStatus,
    ReadError,
    ReadResult,
    StoredIntent,
    SubmitResult,
    TradeRow,
    Unknown,
)
from pm_core.service.pipeline import SignalService
from pm_core.signal import fingerprint, validate
from tests.unit.service_kit import gold_entry, lookup_service, send
from tests.unit.test_service_ambiguous import UnknownOnce


class BlindBooks(UnknownOnce):
    """The lost reply of UnknownOnce, while the order and trade books cannot be read."""

    def __init__(self) -> None:
        super().__init__()
        self.blind = threading.Event()
        self.blind.set()
        self.book_reads = 0

    def order_book(self) -> ReadResult[Sequence[OrderStatus]]:
        self.book_reads += 1
        if self.blind.is_set():
            return ReadError("http_503", "orderbook: HTTP 503: Service Unavailable")
        return super().order_book()

    def trade_book(self) -> ReadResult[Sequence[TradeRow]]:
        if self.blind.is_set():
            return ReadError("http_503", "tradebook: HTTP 503: Service Unavailable")
        return super().trade_book()


def intents_of(service: SignalService, signal_id: int = 1) -> list[StoredIntent]:
    with service.ports.uow.begin("signal", read_only=True) as unit:
        return sorted(unit.intents.for_signal(signal_id), key=lambda s: s.id)


def status_of(service: SignalService, signal_id: int) -> str:
    with service.ports.uow.begin("signal", read_only=True) as unit:
        row = unit.signals.get(signal_id)
    assert row is not None
    return row.status


def test_unreadable_books_hold_the_signal_and_the_resolver_binds_the_order_later() -> None:
    broker = BlindBooks()
    service = lookup_service(broker, held_result_retry_ms=20)
    try:
        first = send(service, gold_entry(lots=1))
        assert (first.http_status, first.body["state"]) == (202, "processing")
        signal_id = first.body["signal_id"]
        # Long past PM_NOT_FOUND_AFTER_S, with the books still unreadable: nothing concluded.
        time.sleep(0.3)
        (intent,) = intents_of(service, signal_id)
        assert intent.state == "unknown"
        assert broker.book_reads > 5  # the resolver kept looking
        assert status_of(service, signal_id) == "processing"
        # The broker's books come back: the resolver finds the order and settles the signal.
        broker.blind.clear()
        deadline = time.monotonic() + 5
        while status_of(service, signal_id) != "executed" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert status_of(service, signal_id) == "executed"
        with service.ports.uow.begin("signal", read_only=True) as unit:
            (stored,) = unit.intents.for_signal(signal_id)
            (position,) = unit.portfolio.read().positions
        assert (stored.state, stored.broker_order_id) == ("filled", broker.lost)
        assert (position.lots, position.status) == (1, "open")
        assert [t for t in broker.tags if t.startswith("pm-")] == [stored.intent.client_order_id]
    finally:
        service.shutdown()


class NeverReached(BlindBooks):
    """The first order never reached the broker, and its reply was lost all the same."""

    def place(self, order: OrderRequest) -> SubmitResult:
        if self.lost is None and order.tag:
            self.lost = "never placed"
            self.tags.append(order.tag)
            return Unknown("timeout", "read timeout after the request was sent")
        return super().place(order)


def test_two_readable_lookups_without_the_order_conclude_not_found_and_the_entry_completes() -> (
    None
):
    broker = NeverReached()
    broker.blind.clear()
    service = lookup_service(broker)
    try:
        answer = send(service, gold_entry(lots=1))
        assert (answer.http_status, answer.body["status"]) == (200, "executed")
        lost, retry = intents_of(service)
        assert (lost.state, lost.broker_order_id) == ("not_found", None)
        assert (retry.state, retry.intent.attempt) == ("filled", 2)
        assert broker.book_reads >= 2
        placed = broker.order_book()
        assert isinstance(placed, Ok) and len(placed.value) == 1  # the retry only
    finally:
        service.shutdown()


def test_a_send_still_unknown_when_its_exchange_day_ends_turns_ambiguous() -> None:
    # 23:20 IST on a Monday: Gold Mini trades until 23:30.
    clock = ManualClock(dt.datetime(2026, 1, 5, 17, 50, tzinfo=dt.UTC))
    broker = BlindBooks()
    service = lookup_service(
        broker, clock=clock, not_found_after_s=7200, lookup_spacing_s=600, held_result_max_s=1
    )
    try:
        signal = validate(gold_entry(lots=1, timestamp="2026-01-05T23:20:00"), service.config)
        assert not isinstance(signal, tuple), signal
        result = service.handle(ReceivedSignal(signal, fingerprint(signal), clock.now()), "r1")
        assert result.http_status == 202
        with service.ports.uow.begin("signal", read_only=True) as unit:
            (intent,) = unit.intents.unresolved()
            block = unit.blocks.get("GOLD_MINI")
        assert intent.state == "ambiguous"
        assert "exchange day" in (intent.last_error or "")
        assert block is not None and block.reason == "ambiguous_order"
        # Each look-up waited 10 minutes of simulated time: midnight IST ended the day.
        local = clock.now().astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30)))
        assert local.date() == dt.date(2026, 1, 6)
        assert len([t for t in broker.tags if t.startswith("pm-")]) == 1
    finally:
        service.shutdown()


def test_an_entry_is_completed_only_while_younger_than_max_resume_age_from_its_receipt() -> None:
    broker = NeverReached()
    broker.blind.clear()
    service = lookup_service(broker, max_resume_age_s=60.0)
    try:
        # Received 90 s ago (it waited in the queue, say): its first send is fresh, but the
        # entry is too old to send its lots again once the first order proves never placed.
        signal = validate(gold_entry(lots=1), service.config)
        assert not isinstance(signal, tuple), signal
        received_at = service.ports.clock.now() - dt.timedelta(seconds=90)
        received = ReceivedSignal(signal, fingerprint(signal), received_at)
        answer = service.handle(received, "r1")
        assert (answer.http_status, answer.body["status"]) == (200, "failed")
        (lost,) = intents_of(service)
        assert lost.state == "not_found"
        placed = broker.order_book()
        assert isinstance(placed, Ok) and placed.value == []  # nothing re-sent
    finally:
        service.shutdown()


class Starved:
    """A rate budget that refuses the next ``refusals`` order tokens, as PM_RATE_MAX_WAIT_MS
    running out under a burst would."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.refused = 0

    def take(self, kind: Literal["order", "read"]) -> None:
        if kind == "order" and self.refused < self.refusals:
            self.refused += 1
            raise RateBudgetExceeded(f"no {kind} token within 2000 ms")


def test_no_order_token_keeps_the_intent_pending_until_one_is_granted() -> None:
    broker = PaperBroker()
    rate = Starved(refusals=3)
    service = lookup_service(broker, rate)
    try:
        answer = send(service, gold_entry(lots=1))
        assert (answer.http_status, answer.body["status"]) == (200, "executed"), answer.body
        assert rate.refused == 3
        (leg,) = intents_of(service)
        assert (leg.state, leg.attempts) == ("filled", 1)  # claimed once, after the refusals
    finally:
        service.shutdown()


def test_an_alert_too_old_to_act_on_fails_its_unsent_leg_when_no_token_comes() -> None:
    broker = PaperBroker()
    rate = Starved(refusals=1_000_000)
    service = lookup_service(broker, rate, max_resume_age_s=0.2)
    try:
        answer = send(service, gold_entry(lots=1))
        assert (answer.http_status, answer.body["status"]) == (200, "failed"), answer.body
        assert rate.refused > 1  # it asked again while the alert was young
        (leg,) = intents_of(service)
        assert (leg.state, leg.attempts) == ("failed", 0)  # never claimed, never sent
        assert "rate budget" in (leg.last_error or "")
        placed = broker.order_book()
        assert isinstance(placed, Ok) and placed.value == []
    finally:
        service.shutdown()
