"""Broker mode guard (openalgo.md 8): a broker in another mode gets no order."""

from __future__ import annotations

from pm_adapters.paper import PaperBroker
from pm_core.ports import Ok
from pm_core.service.mode import mismatch_message, parse_mismatch
from tests.unit.service_kit import gold_entry, memory_service, send


def test_mode_mismatch_fails_the_signal_without_an_order() -> None:
    broker = PaperBroker(mode="live")
    body = send(memory_service(broker, expected_broker_mode="analyze"), gold_entry()).body
    assert body["status"] == "failed"
    assert body["reason_codes"] == ["broker_mode_mismatch"]
    assert body["message"] == "Broker mode live, expected analyze"
    book = broker.order_book()
    assert isinstance(book, Ok) and list(book.value) == []


def test_matching_mode_sends_orders() -> None:
    broker = PaperBroker(mode="analyze")
    body = send(memory_service(broker, expected_broker_mode="analyze"), gold_entry()).body
    assert body["status"] == "executed"
    book = broker.order_book()
    assert isinstance(book, Ok) and len(book.value) == 1


def test_mismatch_message_round_trips() -> None:
    assert parse_mismatch(mismatch_message("live", "analyze")) == ("live", "analyze")
    assert parse_mismatch("RMS: circuit limit") is None
