"""Reconciliation in the service: fail-closed blocks, clean runs and acknowledgements."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal

from pm_adapters.bootstrap import build, load_settings
from pm_adapters.bootstrap.app import App
from pm_adapters.paper import PaperBroker
from pm_core.model import ReceivedSignal
from pm_core.ports import BrokerPosition, OrderRequest, ReadError, ReadResult
from pm_core.service.api import NullObserver
from pm_core.service.reconciliation import ReconciliationRun, acknowledge, reconcile
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


class ReconcileAtFill(NullObserver):
    """Runs a reconciliation the moment an intent is recorded filled: its signal is not
    settled yet (T2 follows), as when the database fails right after the fill."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.runs: list[ReconciliationRun] = []

    def intent_state(self, state: str, delta: int) -> None:
        if state == "filled" and delta > 0:
            self.runs.append(reconcile(self.app.ports, self.app.config))


def test_a_signal_filled_but_not_yet_settled_is_not_a_difference() -> None:
    broker = PaperBroker()
    app = _app(broker)
    try:
        observer = ReconcileAtFill(app)
        app.service.set_observer(observer)
        assert _entry(app, 78500, "2025-11-28T10:30:00")["status"] == "executed"
        (run,) = observer.runs
        # The broker holds the fill, the database still the reservation: skipped, not blocked.
        assert run.skipped == ("GOLD_MINI",)
        assert run.blocked == ()
        assert app.status()["blocked_instruments"] == {}
        settled = reconcile(app.ports, app.config)
        assert settled.report is not None and settled.report.clean and settled.skipped == ()
    finally:
        app.close()


class SignalDuringBookRead(PaperBroker):
    """Answers ``positions`` with the book as it was when asked, after a whole signal ran."""

    def __init__(self) -> None:
        super().__init__()
        self.during: Callable[[], object] | None = None

    def positions(self) -> ReadResult[Sequence[BrokerPosition]]:
        book = super().positions()
        if self.during is not None:
            run, self.during = self.during, None
            run()
        return book


def test_a_signal_that_ran_while_the_book_was_read_is_not_a_difference() -> None:
    broker = SignalDuringBookRead()
    app = _app(broker)
    try:
        broker.during = lambda: _entry(app, 78500, "2025-11-28T10:30:00")
        run = reconcile(app.ports, app.config)
        # The book predates the entry, the database holds it: its legs moved, so skipped.
        assert run.skipped == ("GOLD_MINI",)
        assert run.blocked == ()
        again = reconcile(app.ports, app.config)
        assert again.report is not None and again.report.clean and again.blocked == ()
    finally:
        app.close()
