"""An ambiguous order holds its signal and blocks the instrument until an operator resolves it."""

from __future__ import annotations

from decimal import Decimal

from pm_adapters.clock import SystemClock
from pm_adapters.memory.coordination import MemoryCoordination
from pm_adapters.memory.uow import MemoryUnitOfWorkFactory
from pm_adapters.paper import PaperBroker
from pm_adapters.ratebudget import LocalRateBudget
from pm_core.config import default_config
from pm_core.model import ReceivedSignal
from pm_core.ports import Accepted, OrderRequest, Ports, SubmitResult, Unknown
from pm_core.service.limits import ServiceLimits
from pm_core.service.pipeline import SignalService
from pm_core.signal import fingerprint, validate

FUTURE = "GOLDM05JAN26FUT"


class UnknownOnce(PaperBroker):
    """Records the first order but answers as if the reply was lost."""

    def __init__(self) -> None:
        super().__init__()
        self.lost: str | None = None

    def place(self, order: OrderRequest) -> SubmitResult:
        result = super().place(order)
        if self.lost is None and order.tag and isinstance(result, Accepted):
            self.lost = result.order_id
            return Unknown("timeout", "read timeout after the request was sent")
        return result


def _service(broker: PaperBroker) -> SignalService:
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
    limits = ServiceLimits(
        instance_id="i1", fill_poll_first_ms=1, not_found_after_s=0.2, lookup_spacing_s=0.01
    )
    return SignalService(ports, default_config(sizing_mode="as_signalled"), limits)


def test_ambiguous_order_holds_then_operator_binding_settles() -> None:
    broker = UnknownOnce()
    service = _service(broker)
    # A manual order with the same parameters: the lost reply cannot be told apart from it.
    broker.place(OrderRequest(FUTURE, "MCX", "BUY", "NRML", "MARKET", 1, Decimal("78500")))
    body = {
        "type": "BASE_ENTRY",
        "instrument": "GOLD_MINI",
        "position": "Long_1",
        "price": 78500,
        "stop": 77800,
        "lots": 1,
        "atr": 450,
        "er": 0.85,
        "supertrend": 77800,
        "timestamp": "2025-11-28T10:30:00",
    }
    signal = validate(body, service.config)
    assert not isinstance(signal, tuple)
    received = ReceivedSignal(signal, fingerprint(signal), service.ports.clock.now())
    first = service.handle(received, "r1")
    assert first.http_status == 202 and first.body["state"] == "processing"
    with service.ports.uow.begin("signal", read_only=True) as unit:
        block = unit.blocks.get("GOLD_MINI")
        (intent,) = unit.intents.unresolved()
        signal_id = intent.signal_id
    assert block is not None and block.reason == "ambiguous_order"
    assert intent.state == "ambiguous"
    assert signal_id is not None
    # The operator finds our order by its strategy tag in OpenAlgo's log and binds it.
    with service.ports.uow.begin("signal") as unit:
        assert unit.intents.transition(
            intent.id, "ambiguous", "accepted", {"broker_order_id": broker.lost}
        )
        unit.commit()
    answer = service.resolve_signal(signal_id)
    assert answer is not None and answer.terminal
    assert answer.result.body["status"] == "executed"
    with service.ports.uow.begin("signal", read_only=True) as unit:
        assert unit.blocks.get("GOLD_MINI") is None
        (position,) = unit.portfolio.read().positions
    assert (position.instrument, position.lots, position.status) == ("GOLD_MINI", 1, "open")
