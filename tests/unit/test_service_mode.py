"""Broker mode guard (openalgo.md 8): a broker in another mode gets no order."""

from __future__ import annotations

from pm_adapters.clock import SystemClock
from pm_adapters.memory.coordination import MemoryCoordination
from pm_adapters.memory.uow import MemoryUnitOfWorkFactory
from pm_adapters.paper import PaperBroker
from pm_adapters.ratebudget import LocalRateBudget
from pm_core.config import default_config
from pm_core.model import ReceivedSignal
from pm_core.ports import Ok, Ports
from pm_core.service.limits import ServiceLimits
from pm_core.service.mode import mismatch_message, parse_mismatch
from pm_core.service.pipeline import SignalService
from pm_core.signal import fingerprint, validate

GOLD_ENTRY = {
    "type": "BASE_ENTRY",
    "instrument": "GOLD_MINI",
    "position": "Long_1",
    "price": 78500,
    "stop": 77800,
    "lots": 0,
    "atr": 450,
    "er": 0.85,
    "supertrend": 77800,
    "timestamp": "2025-11-28T10:30:00",
}


def _service(broker: PaperBroker, expected: str | None) -> SignalService:
    clock = SystemClock()
    uow = MemoryUnitOfWorkFactory()
    uow.initialise(5_000_000.0)
    coordination = MemoryCoordination(clock)
    ports = Ports(
        clock=clock,
        uow=uow,
        lock=coordination.signal_lock("i1"),
        leader=coordination.leader("i1"),
        registry=coordination.registry(),
        broker=broker,
        rate=LocalRateBudget(100, 100, 1000, live_instances=lambda: 1),
    )
    limits = ServiceLimits(instance_id="i1", fill_poll_first_ms=1, expected_broker_mode=expected)
    return SignalService(ports, default_config(), limits)


def _send(service: SignalService) -> dict[str, object]:
    signal = validate(GOLD_ENTRY, service.config)
    assert not isinstance(signal, tuple)
    received = ReceivedSignal(signal, fingerprint(signal), service.ports.clock.now())
    return dict(service.handle(received, "r1").body)


def test_mode_mismatch_fails_the_signal_without_an_order() -> None:
    broker = PaperBroker(mode="live")
    body = _send(_service(broker, "analyze"))
    assert body["status"] == "failed"
    assert body["reason_codes"] == ["broker_mode_mismatch"]
    assert body["message"] == "Broker mode live, expected analyze"
    book = broker.order_book()
    assert isinstance(book, Ok) and list(book.value) == []


def test_matching_mode_sends_orders() -> None:
    broker = PaperBroker(mode="analyze")
    body = _send(_service(broker, "analyze"))
    assert body["status"] == "executed"
    book = broker.order_book()
    assert isinstance(book, Ok) and len(book.value) == 1


def test_mismatch_message_round_trips() -> None:
    assert parse_mismatch(mismatch_message("live", "analyze")) == ("live", "analyze")
    assert parse_mismatch("RMS: circuit limit") is None
