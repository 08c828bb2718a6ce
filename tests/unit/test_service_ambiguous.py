"""An ambiguous order holds its signal and blocks the instrument until an operator resolves it."""

from __future__ import annotations

from decimal import Decimal

from pm_adapters.paper import PaperBroker
from pm_core.ports import Accepted, OrderRequest, SubmitResult, Unknown
from tests.unit.service_kit import gold_entry, lookup_service, send

FUTURE = "GOLDM05JAN26FUT"


class UnknownOnce(PaperBroker):
    """Records the first order but answers as if the reply was lost."""

    def __init__(self) -> None:
        super().__init__()
        self.lost: str | None = None
        self.tags: list[str] = []  # client order ids of every order sent

    def place(self, order: OrderRequest) -> SubmitResult:
        self.tags.append(order.tag)
        result = super().place(order)
        if self.lost is None and order.tag and isinstance(result, Accepted):
            self.lost = result.order_id
            return Unknown("timeout", "read timeout after the request was sent")
        return result


def test_ambiguous_order_holds_then_operator_binding_settles() -> None:
    broker = UnknownOnce()
    service = lookup_service(broker, not_found_after_s=0.2)
    # A manual order with the same parameters: the lost reply cannot be told apart from it.
    broker.place(OrderRequest(FUTURE, "MCX", "BUY", "NRML", "MARKET", 1, Decimal("78500")))
    first = send(service, gold_entry(lots=1))
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


def test_not_placed_on_an_old_entry_fails_it_without_a_new_order() -> None:
    broker = UnknownOnce()
    # Any entry is already too old to complete.
    service = lookup_service(broker, not_found_after_s=0.2, max_resume_age_s=0.0)
    broker.place(OrderRequest(FUTURE, "MCX", "BUY", "NRML", "MARKET", 1, Decimal("78500")))
    assert send(service, gold_entry(lots=1)).http_status == 202
    with service.ports.uow.begin("signal", read_only=True) as unit:
        (intent,) = unit.intents.unresolved()
    with service.ports.uow.begin("signal") as unit:
        assert unit.intents.transition(
            intent.id, "ambiguous", "not_found", {"last_error": "operator: not placed"}
        )
        unit.commit()
    assert intent.signal_id is not None
    answer = service.resolve_signal(intent.signal_id)
    assert answer is not None and answer.result.body["status"] == "failed"
    tagged = [t for t in broker.tags if t.startswith("pm-")]
    assert len(tagged) == 1, tagged  # the lost one only: nothing re-sent
    with service.ports.uow.begin("signal", read_only=True) as unit:
        assert unit.blocks.get("GOLD_MINI") is None
        assert unit.portfolio.read().positions == ()
