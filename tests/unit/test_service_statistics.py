"""Trading statistics the service writes (service.md 11)."""

from __future__ import annotations

from pm_adapters.paper import PaperBroker
from pm_core.ports import Ok
from tests.kit.serve import bn_payload
from tests.unit.service_kit import memory_service, send


def test_orders_placed_counts_every_order_the_broker_took() -> None:
    broker = PaperBroker()
    service = memory_service(broker)
    # The PE leg is refused: the filled CE leg is sold back (an unwind order).
    broker.reject_next(symbol="BANKNIFTY30DEC2552000PE", message="RMS: circuit limit")
    body = bn_payload("BASE_ENTRY", timestamp="2025-12-01T10:30:00")
    assert send(service, body).body["status"] == "failed"
    book = broker.order_book()
    assert isinstance(book, Ok) and len(book.value) == 2  # the CE buy and its unwind
    with service.ports.uow.begin("signal", read_only=True) as unit:
        assert unit.statistics.read()["orders_placed"] == 2
