"""Reconciliation in the service: fail-closed blocks, clean runs and acknowledgements."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from pm_adapters.bootstrap import build, load_settings
from pm_adapters.bootstrap.app import App
from pm_adapters.paper import PaperBroker
from pm_core.model import ReceivedSignal
from pm_core.ports import BrokerPosition, OrderRequest, ReadError, ReadResult
from pm_core.service.reconciliation import acknowledge, reconcile
from pm_core.signal import fingerprint, validate


def _app(broker: PaperBroker) -> App:
    settings = load_settings({"PM_DATABASE_URL": "memory://", "PM_FILL_POLL_MS": "1,5"})
    app = build(settings, broker=broker)
    app.start()
    return app


def _entry(app: App, price: float, ts: str) -> dict[str, object]:
    body = {
        "type": "BASE_ENTRY",
        "instrument": "GOLD_MINI",
        "position": "Long_1",
        "price": price,
        "stop": price - 700,
        "lots": 0,
        "atr": 450,
        "er": 0.85,
        "supertrend": price - 700,
        "timestamp": ts,
    }
    signal = validate(body, app.config)
    assert not isinstance(signal, tuple)
    received = ReceivedSignal(signal, fingerprint(signal), app.now())
    return dict(app.handle(received, "r").body)


def test_clean_book_blocks_nothing_and_foreign_position_blocks_entries() -> None:
    broker = PaperBroker()
    app = _app(broker)
    try:
        assert _entry(app, 78500, "2025-11-28T10:30:00")["status"] == "executed"
        clean = reconcile(app.ports, app.config)
        assert clean.report is not None and clean.report.clean
        assert clean.blocked == ()
        # Someone trades the same contract by hand: the broker holds more than pm expects.
        broker.place(
            OrderRequest("GOLDM05JAN26FUT", "MCX", "BUY", "NRML", "MARKET", 1, Decimal("78500"))
        )
        dirty = reconcile(app.ports, app.config)
        assert dirty.report is not None and not dirty.report.clean
        assert dirty.blocked == ("GOLD_MINI",)
        assert app.status()["blocked_instruments"] == {"GOLD_MINI": "reconciliation"}
        # A new entry on the blocked instrument is rejected; nothing is sent.
        refused = _entry(app, 79500, "2025-12-02T10:30:00")
        assert refused["reason_codes"] == ["instrument_blocked"]
        assert acknowledge(app.ports, "GOLD_MINI")
        assert app.status()["blocked_instruments"] == {}
    finally:
        app.close()


def test_broker_outage_changes_nothing() -> None:
    class Down(PaperBroker):
        def positions(self) -> ReadResult[Sequence[BrokerPosition]]:
            return ReadError("connect", "refused")

    app = _app(Down())
    try:
        run = reconcile(app.ports, app.config)
        assert run.report is None and run.error == "connect: refused"
        assert app.status()["blocked_instruments"] == {}
    finally:
        app.close()
