"""A SignalService over the in-memory adapters, for fast service tests."""

from __future__ import annotations

from typing import Any

from pm_adapters.clock import SystemClock
from pm_adapters.memory.coordination import MemoryCoordination
from pm_adapters.memory.uow import MemoryUnitOfWorkFactory
from pm_adapters.paper import PaperBroker
from pm_adapters.ratebudget import LocalRateBudget
from pm_core.config import DomainConfig, default_config
from pm_core.model import ReceivedSignal
from pm_core.ports import Clock, Ports, RateBudget
from pm_core.service.api import SignalResult
from pm_core.service.limits import ServiceLimits
from pm_core.service.pipeline import SignalService
from pm_core.signal import fingerprint, validate


def gold_entry(**changes: Any) -> dict[str, Any]:
    """A valid GOLD_MINI BASE_ENTRY payload (2025-11-28 IST), fields overridable."""
    body: dict[str, Any] = {
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
    body.update(changes)
    return body


def memory_service(
    broker: PaperBroker,
    config: DomainConfig | None = None,
    rate: RateBudget | None = None,
    clock: Clock | None = None,
    **limits: Any,
) -> SignalService:
    """A service on one shared in-memory store, fast fill polls; ``limits`` override.

    With ``clock`` (a ManualClock, say) the store stamps its rows on that clock too.
    """
    clock = clock or SystemClock()
    uow = MemoryUnitOfWorkFactory(now=clock.now)
    uow.initialise(5_000_000.0)
    coordination = MemoryCoordination(clock)
    ports = Ports(
        clock=clock,
        uow=uow,
        lock=coordination.signal_lock("i1"),
        leader=coordination.leader("i1"),
        registry=coordination.registry(),
        broker=broker,
        rate=rate or LocalRateBudget(100, 100, 1000, live_instances=lambda: 1),
    )
    settings = ServiceLimits(**{"instance_id": "i1", "fill_poll_first_ms": 1, **limits})
    return SignalService(ports, config or default_config(), settings)


def send(service: SignalService, body: dict[str, Any], request_id: str = "r1") -> SignalResult:
    """Validate and handle one payload synchronously."""
    signal = validate(body, service.config)
    assert not isinstance(signal, tuple), signal
    received = ReceivedSignal(signal, fingerprint(signal), service.ports.clock.now())
    return service.handle(received, request_id)


def lookup_service(
    broker: PaperBroker,
    rate: RateBudget | None = None,
    clock: Clock | None = None,
    **limits: Any,
) -> SignalService:
    """memory_service sizing as signalled, with short unknown-order look-ups (overridable)."""
    quick = {"not_found_after_s": 0.05, "lookup_spacing_s": 0.01, **limits}
    return memory_service(broker, default_config(sizing_mode="as_signalled"), rate, clock, **quick)
