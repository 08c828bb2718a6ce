"""Signal legs as limit ladders (PM_SIGNAL_ORDER_STYLE=ladder; domain 9.7, service.md 2.4).

The service runs in process on the memory adapters with the paper broker, whose LIMIT orders
rest until a quote crosses them. The quotes are chosen so that the ladder's prices are the
ones a trader can check by hand: BUY P_k = ceil_tick(ltp × (1 + (0.25 + 0.05 k) / 100)).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pm_adapters.bootstrap import App, build, load_settings
from pm_adapters.paper import PaperBroker
from pm_core.model import Quote, ReceivedSignal, Signal
from pm_core.ports import OrderRequest, StoredIntent, SubmitResult, Unknown
from pm_core.signal import fingerprint, validate
from tests.kit.serve import BN_EXPIRY, GOLD_SYMBOL, bn_payload, gold_payload

FAST = {
    "PM_DATABASE_URL": "memory://",
    "PM_FILL_POLL_MS": "1,5",
    "PM_FILL_TIMEOUT_S": "1",
    "PM_SIGNAL_ORDER_STYLE": "ladder",
}

CE = f"BANKNIFTY{BN_EXPIRY}52000CE"
PE = f"BANKNIFTY{BN_EXPIRY}52000PE"

# Gold Mini (tick 1), LTP 78500: BUY P_0..P_5 from 0.25 % + 0.05 % steps, each rounded up.
GOLD_BUY_LADDER = [
    Decimal(78697),  # 78696.25
    Decimal(78736),  # 78735.5
    Decimal(78775),  # 78774.75
    Decimal(78814),  # 78814
    Decimal(78854),  # 78853.25
    Decimal(78893),  # 78892.5
]


class LadderPaper(PaperBroker):
    """The paper broker, recording each order call; ``after_modify`` moves the market."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, OrderRequest | str]] = []
        self.after_modify: dict[int, tuple[str, str, Quote]] = {}

    def place(self, order: OrderRequest) -> SubmitResult:
        self.calls.append(("place", order))
        return super().place(order)

    def modify(self, order_id: str, order: OrderRequest) -> SubmitResult:
        self.calls.append(("modify", order))
        result = super().modify(order_id, order)
        moved = self.after_modify.get(sum(1 for kind, _ in self.calls if kind == "modify"))
        if moved is not None:
            self.set_quote(*moved)
        return result

    def cancel(self, order_id: str, tag: str = "") -> SubmitResult:
        self.calls.append(("cancel", order_id))
        return super().cancel(order_id, tag)

    def orders(self) -> list[tuple[str, str, str, str, Decimal]]:
        """(call, symbol, action, price type, price) of every place and modify."""
        return [
            (kind, r.symbol, r.action, r.pricetype, r.price)
            for kind, r in self.calls
            if isinstance(r, OrderRequest)
        ]


def quote(ltp: int | str, bid: int | str, ask: int | str) -> Quote:
    return Quote(Decimal(ltp), Decimal(bid), Decimal(ask))


def start(tmp_path: Path, broker: PaperBroker, fallback: bool = True, **env: str) -> App:
    config = tmp_path / "pm.toml"
    config.write_text(
        "[portfolio]\n"
        "rollover_retry_interval_s = 0.001\n"
        f"rollover_market_fallback = {'true' if fallback else 'false'}\n"
    )
    app = build(load_settings({**FAST, "PM_CONFIG": str(config), **env}), broker=broker)
    app.start()
    return app


@pytest.fixture
def broker() -> LadderPaper:
    return LadderPaper()


@pytest.fixture
def app(tmp_path: Path, broker: LadderPaper) -> Iterator[App]:
    built = start(tmp_path, broker)
    yield built
    built.close()


def send(app: App, payload: Mapping[str, Any]) -> dict[str, Any]:
    signal = validate(dict(payload), app.config)
    assert isinstance(signal, Signal), signal
    received = ReceivedSignal(signal, fingerprint(signal), dt.datetime.now(dt.UTC))
    result = app.service.handle(received, "req-1")
    assert result.http_status == 200, result.body
    return dict(result.body)


def intents(app: App, body: Mapping[str, Any]) -> list[StoredIntent]:
    with app.ports.uow.begin("signal", read_only=True) as unit:
        return sorted(unit.intents.for_signal(body["signal_id"]), key=lambda s: s.id)


def gold_position(app: App) -> Any:
    with app.ports.uow.begin("signal", read_only=True) as unit:
        (position,) = unit.portfolio.read().positions
    return position


def test_marketable_p0_fills_at_once_as_a_limit_order(app: App, broker: LadderPaper) -> None:
    broker.set_quote("MCX", GOLD_SYMBOL, quote(78500, 78499, 78501))
    body = send(app, gold_payload("BASE_ENTRY"))
    assert body["status"] == "executed", body
    assert broker.orders() == [("place", GOLD_SYMBOL, "BUY", "LIMIT", GOLD_BUY_LADDER[0])]
    (leg,) = intents(app, body)
    assert (leg.intent.pricetype, leg.state) == ("LIMIT", "filled")
    # The paper broker fills a marketable limit at the quote, better than the limit.
    assert leg.average_price == Decimal(78501)
    assert gold_position(app).entry_fill_price == 78501.0


def test_a_resting_leg_climbs_the_ladder_until_the_market_takes_it(
    app: App, broker: LadderPaper
) -> None:
    # The ask stays above every step: mid (78500) never beats P_k, so each modification is P_k.
    broker.set_quote("MCX", GOLD_SYMBOL, quote(78500, 78000, 79000))
    # After the second modification (78775) the ask comes down to 78770: the order fills there.
    broker.after_modify[2] = ("MCX", GOLD_SYMBOL, quote(78760, 78750, 78770))
    body = send(app, gold_payload("BASE_ENTRY"))
    assert body["status"] == "executed", body
    assert [o[4] for o in broker.orders()] == GOLD_BUY_LADDER[:3]
    assert [o[0] for o in broker.orders()] == ["place", "modify", "modify"]
    assert not [c for c in broker.calls if c[0] == "cancel"]
    (leg,) = intents(app, body)
    assert (leg.state, leg.average_price) == ("filled", Decimal(78770))
    assert gold_position(app).entry_fill_price == 78770.0


def test_a_leg_that_never_fills_is_cancelled_then_sent_at_market(
    app: App, broker: LadderPaper
) -> None:
    broker.set_quote("MCX", GOLD_SYMBOL, quote(78500, 78000, 79000))
    body = send(app, gold_payload("BASE_ENTRY"))
    assert body["status"] == "executed", body
    kinds = [c[0] for c in broker.calls]
    assert kinds == ["place"] + ["modify"] * 5 + ["cancel", "place"]
    assert [o[4] for o in broker.orders()[:6]] == GOLD_BUY_LADDER
    assert broker.orders()[-1][:4] == ("place", GOLD_SYMBOL, "BUY", "MARKET")
    ladder, market = intents(app, body)
    assert (ladder.state, ladder.filled_quantity) == ("cancelled", 0)
    assert "MARKET for the rest" in (ladder.last_error or "")
    assert (market.intent.pricetype, market.intent.attempt, market.state) == ("MARKET", 2, "filled")
    assert market.intent.quantity == ladder.intent.quantity
    # The position holds what the market order paid (the ask), under the leg's first order id.
    assert gold_position(app).entry_fill_price == 79000.0
    assert body["orders"][0]["client_order_id"] == ladder.intent.client_order_id


def test_without_market_fallback_the_leg_times_out_and_nothing_opens(
    tmp_path: Path, broker: LadderPaper
) -> None:
    app = start(tmp_path, broker, fallback=False)
    try:
        broker.set_quote("MCX", GOLD_SYMBOL, quote(78500, 78000, 79000))
        body = send(app, gold_payload("BASE_ENTRY"))
        assert [c[0] for c in broker.calls] == ["place"] + ["modify"] * 5 + ["cancel"]
        (leg,) = intents(app, body)
        assert leg.state == "failed"
        assert "leg_timeout" in (leg.last_error or "")
        with app.ports.uow.begin("signal", read_only=True) as unit:
            assert not unit.portfolio.read().positions
        assert broker.positions().value == []  # type: ignore[union-attr]
    finally:
        app.close()


def test_no_positive_last_price_fails_the_leg_before_any_order(
    app: App, broker: LadderPaper
) -> None:
    body = send(app, gold_payload("BASE_ENTRY"))  # no quote for the future at all
    assert broker.calls == []
    (leg,) = intents(app, body)
    assert leg.state == "failed"
    assert "quote_unavailable" in (leg.last_error or "")
    with app.ports.uow.begin("signal", read_only=True) as unit:
        assert not unit.portfolio.read().positions


def test_bank_nifty_legs_ladder_hedge_first_buy_up_sell_down(app: App, broker: LadderPaper) -> None:
    broker.set_quote("NFO", CE, quote(610, 609, 611))
    broker.set_quote("NFO", PE, quote(600, 599, 601))
    body = send(app, bn_payload("BASE_ENTRY"))
    assert body["status"] == "executed", body
    # CE BUY: 610 × 1.0025 = 611.525, up to the tick: 611.55. PE SELL: 600 × 0.9975 = 598.50.
    assert broker.orders() == [
        ("place", CE, "BUY", "LIMIT", Decimal("611.55")),
        ("place", PE, "SELL", "LIMIT", Decimal("598.50")),
    ]
    ce, pe = intents(app, body)
    assert (ce.average_price, pe.average_price) == (Decimal(611), Decimal(599))


def test_an_unwind_is_a_market_order_whatever_the_style(app: App, broker: LadderPaper) -> None:
    broker.set_quote("NFO", CE, quote(610, 609, 611))
    broker.set_quote("NFO", PE, quote(600, 599, 601))
    broker.reject_next(PE, "RMS: margin shortfall")
    body = send(app, bn_payload("BASE_ENTRY"))
    assert body["status"] != "executed", body
    assert [o[:4] for o in broker.orders()] == [
        ("place", CE, "BUY", "LIMIT"),
        ("place", PE, "SELL", "LIMIT"),
        ("place", CE, "SELL", "MARKET"),
    ]
    assert broker.positions().value == []  # type: ignore[union-attr]


def test_market_style_is_unchanged(tmp_path: Path, broker: LadderPaper) -> None:
    app = build(load_settings({**FAST, "PM_SIGNAL_ORDER_STYLE": "market"}), broker=broker)
    app.start()
    try:
        broker.set_quote("MCX", GOLD_SYMBOL, quote(78500, 78000, 79000))
        body = send(app, gold_payload("BASE_ENTRY"))
        assert body["status"] == "executed"
        assert [o[:4] for o in broker.orders()] == [("place", GOLD_SYMBOL, "BUY", "MARKET")]
    finally:
        app.close()


class LostCancel(LadderPaper):
    """The first cancel never reaches the broker (its reply times out): the order rests on."""

    def cancel(self, order_id: str, tag: str = "") -> SubmitResult:
        if not any(kind == "cancel" for kind, _ in self.calls):
            self.calls.append(("cancel", order_id))
            return Unknown("timeout", "cancelorder: read timeout")
        return super().cancel(order_id, tag)


def test_an_unconfirmed_cancel_sends_nothing_more_until_the_order_is_known(
    tmp_path: Path,
) -> None:
    """After the ladder the cancel is lost, so the LIMIT order may still fill: no MARKET
    order for its lots. The signal is held; when the order fills later, the resolver
    settles it with that one order."""
    broker = LostCancel()
    app = start(tmp_path, broker, PM_HELD_RESULT_RETRY_MS="20")
    try:
        broker.set_quote("MCX", GOLD_SYMBOL, quote(78500, 78000, 79000))
        signal = validate(gold_payload("BASE_ENTRY"), app.config)
        assert isinstance(signal, Signal), signal
        received = ReceivedSignal(signal, fingerprint(signal), dt.datetime.now(dt.UTC))
        held = app.service.handle(received, "req-1")
        assert (held.http_status, held.body["state"]) == (202, "processing")
        (leg,) = intents(app, held.body)
        assert leg.state == "accepted"  # the order may still fill: nothing concluded
        assert [c[0] for c in broker.calls] == ["place"] + ["modify"] * 5 + ["cancel"]
        # The market comes to the resting limit (P_5 = 78893): it fills at the ask.
        broker.set_quote("MCX", GOLD_SYMBOL, quote(78790, 78780, 78800))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with app.ports.uow.begin("signal", read_only=True) as unit:
                row = unit.signals.get(held.body["signal_id"])
            if row is not None and row.status == "executed":
                break
            time.sleep(0.02)
        assert row is not None and row.status == "executed"
        (leg,) = intents(app, held.body)
        assert (leg.state, leg.average_price) == ("filled", Decimal(78800))
        assert [o[3] for o in broker.orders() if o[0] == "place"] == ["LIMIT"]  # no MARKET
        assert gold_position(app).entry_fill_price == 78800.0
    finally:
        app.close()
