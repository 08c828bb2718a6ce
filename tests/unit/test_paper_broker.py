"""PaperBroker behaviour beyond the shared contract: concurrency and netting."""

from __future__ import annotations

import threading
from decimal import Decimal

from pm_adapters.paper import PaperBroker, net_fill
from pm_core.model import Quote
from pm_core.ports import Accepted, Ok, OrderRequest


def test_concurrent_orders_get_unique_ids_and_net_exactly() -> None:
    paper = PaperBroker()
    paper.set_quote("MCX", "GOLDM05JAN26FUT", Quote(Decimal(57890)))
    ids: list[str] = []
    lock = threading.Lock()

    def trader(action: str) -> None:
        for _ in range(50):
            request = OrderRequest("GOLDM05JAN26FUT", "MCX", action, "NRML", "MARKET", 1)  # type: ignore[arg-type]
            result = paper.place(request)
            assert isinstance(result, Accepted)
            with lock:
                ids.append(result.order_id)

    threads = [threading.Thread(target=trader, args=(a,)) for a in ["BUY"] * 5 + ["SELL"] * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 400
    positions = paper.positions()
    assert isinstance(positions, Ok)
    assert [p.quantity for p in positions.value] == [100]
    trades = paper.trade_book()
    assert isinstance(trades, Ok) and len(trades.value) == 400


def test_net_fill_adds_reduces_and_flips() -> None:
    quantity, average, realized = net_fill(0, Decimal(0), 2, Decimal(100))
    assert (quantity, average, realized) == (2, Decimal(100), Decimal(0))
    quantity, average, realized = net_fill(quantity, average, 2, Decimal(110))
    assert (quantity, average) == (4, Decimal(105))
    quantity, average, realized = net_fill(quantity, average, -1, Decimal(120))
    assert (quantity, average, realized) == (3, Decimal(105), Decimal(15))
    quantity, average, realized = net_fill(quantity, average, -5, Decimal(100))
    assert (quantity, average, realized) == (-2, Decimal(100), Decimal(-15))
    quantity, average, realized = net_fill(quantity, average, 2, Decimal(90))
    assert (quantity, average, realized) == (0, Decimal(0), Decimal(20))
