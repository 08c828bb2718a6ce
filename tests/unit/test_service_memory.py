"""SignalService in process over the memory adapters and the paper broker (service.md 2).

Fast checks of the pipeline's behaviour: the duplicate layers (L1, L2, L3, near), the
per-instrument barrier (an EXIT arriving while its entry is in flight is queued, then
executed), stale_in_queue, exit retries, the unwind of a filled leg when its partner is
rejected, and the webhook.md shapes of every answer (rendered as the HTTP host renders them).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import attrs
import pytest

from pm_adapters.bootstrap import App, build, load_settings
from pm_adapters.paper import PaperBroker
from pm_core.errors import DatabaseUnavailable
from pm_core.model import ReceivedSignal, Signal
from pm_core.ports import (
    Claimed,
    Ok,
    OrderRequest,
    RateBudget,
    StoredIntent,
    StoredSignal,
    SubmitResult,
    TxKind,
    UnitOfWork,
    UnitOfWorkFactory,
)
from pm_core.recovery import recover
from pm_core.service.api import NullObserver, SignalResult
from pm_core.service.pipeline import SignalService
from pm_core.signal import fingerprint, validate
from pm_http.app import json_response
from tests.kit.openapi import assert_response_matches
from tests.kit.serve import bn_payload, bn_trade, gold_payload, gold_trade

FAST = {
    "PM_DATABASE_URL": "memory://",
    "PM_FILL_POLL_MS": "1,5",
    "PM_FILL_TIMEOUT_S": "1",
    "PM_LOCK_WAIT_MS": "50",
    "PM_LOCK_POLL_MS": "5",
    "PM_NOT_FOUND_AFTER_S": "0.2",
    "PM_LOOKUP_SPACING_S": "0.05",
    "PM_MARKET_DATA_TIMEOUT_MS": "200",
    "PM_SWEEP_INTERVAL_S": "60",
}


class GatedPaper(PaperBroker):
    """A paper broker whose order calls can be held at a gate (an order still in flight)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Event()
        self.placed: list[OrderRequest] = []

    def place(self, order: OrderRequest) -> SubmitResult:
        self.placed.append(order)
        if not self.gate.is_set():
            self.waiting.set()
            self.gate.wait(10)
        return super().place(order)


@pytest.fixture
def broker() -> GatedPaper:
    return GatedPaper()


@pytest.fixture
def app(broker: GatedPaper) -> Iterator[App]:
    built = build(load_settings(FAST), broker=broker)
    built.start()
    yield built
    broker.gate.set()
    built.close()


def received(
    app: App, payload: Mapping[str, Any], received_at: dt.datetime | None = None
) -> ReceivedSignal:
    checked = validate(dict(payload), app.config)
    assert isinstance(checked, Signal), checked
    return ReceivedSignal(checked, fingerprint(checked), received_at or dt.datetime.now(dt.UTC))


def rendered(result: SignalResult, rid: str = "req-1") -> dict[str, Any]:
    """The body exactly as the HTTP host sends it, checked against the OpenAPI document."""
    response = json_response(rid, result.http_status, result.body)
    body: dict[str, Any] = json.loads(bytes(response.body))
    assert_response_matches("/webhook", "POST", result.http_status, body)
    return body


def send(
    service: SignalService | App, payload: Mapping[str, Any], app: App | None = None
) -> dict[str, Any]:
    target = app if isinstance(service, SignalService) else service
    assert isinstance(target, App)
    result = service.handle(received(target, payload), "req-1")
    body = rendered(result)
    body["_http"] = result.http_status
    return body


def row(app: App, payload: Mapping[str, Any]) -> StoredSignal:
    fp = received(app, payload).fingerprint
    with app.ports.uow.begin("signal", read_only=True) as unit:
        found = unit.signals.by_fingerprint(fp)
    assert found is not None
    return found


def intents(app: App, signal_id: int) -> list[StoredIntent]:
    with app.ports.uow.begin("signal", read_only=True) as unit:
        return list(unit.intents.for_signal(signal_id))


def second_service(app: App) -> SignalService:
    """Another instance's pipeline on the same store and coordination (its own L1)."""
    return SignalService(app.ports, app.config, app.limits)


# --------------------------------------------------------------------------- full trades


@pytest.mark.parametrize("trade", [bn_trade, gold_trade], ids=["bank_nifty", "gold_mini"])
def test_full_trade_executes_every_step_with_webhook_shapes(app: App, trade: Any) -> None:
    for payload, expected in trade():
        body = send(app, payload)
        assert body["_http"] == 200
        assert body["status"] == "executed", body
        assert [(p["key"], p["lots"]) for p in body["decision"]["positions"]] == expected[
            "positions"
        ]
        assert len(body["orders"]) == expected["legs"]
        assert {o["state"] for o in body["orders"]} == {"filled"}
    assert app.status()["portfolio"]["open_positions"] == 0


# --------------------------------------------------------------------------- duplicates


def test_duplicate_layers_l1_l3_l2_and_near(app: App) -> None:
    base = gold_payload("BASE_ENTRY")
    first = send(app, base)
    assert first["status"] == "executed"

    l1 = send(app, base)
    assert (l1["status"], l1["duplicate_layer"]) == ("duplicate", "l1")
    assert l1["reason_codes"] == ["duplicate_fingerprint"]
    assert l1["original"]["body"]["orders"] == first["orders"]

    other = second_service(app)
    l3 = send(other, base, app)
    assert (l3["status"], l3["duplicate_layer"]) == ("duplicate", "l3")
    assert l3["signal_id"] == first["signal_id"]
    assert l3["original"]["http_status"] == 200
    assert l3["original"]["body"]["decision"] == first["decision"]

    # Another instance holds the signal lock: the third instance answers from the stored row.
    fp = received(app, base).fingerprint
    handle = app.ports.lock.acquire(fp, 10_000)
    assert handle is not None
    try:
        l2 = send(second_service(app), base, app)
    finally:
        app.ports.lock.release(handle)
    assert (l2["status"], l2["duplicate_layer"]) == ("duplicate", "l2")

    near = send(app, gold_payload("BASE_ENTRY", timestamp="2025-12-01T10:00:30"))
    assert (near["status"], near["duplicate_layer"]) == ("duplicate", "near")
    assert near["reason_codes"] == ["duplicate_near_window"]
    assert near["original"]["body"]["signal_id"] == first["signal_id"]
    assert near["signal_id"] != first["signal_id"]
    assert len(app.ports.broker.placed) == 1  # type: ignore[attr-defined]


def test_a_repeat_past_its_deadline_is_answered_duplicate_not_with_the_original(
    app: App,
) -> None:
    # Two deliveries of one alert on one instance: the first decides it; the second waited
    # for a worker past the response deadline, so the host asks in_progress for its answer.
    base = gold_payload("BASE_ENTRY")
    signal = received(app, base)
    first = app.service.handle(signal, "req-first")
    assert first.http_status == 200 and first.body["status"] == "executed"
    # The first delivery's own late answer is its outcome ...
    assert app.service.in_progress(signal, "req-first") == first
    # ... a repeat's is a duplicate carrying that outcome as its original.
    late = rendered(app.service.in_progress(signal, "req-repeat"))
    assert (late["status"], late["duplicate_layer"]) == ("duplicate", "l1")
    assert late["request_id"] == "req-repeat"
    assert late["original"]["body"]["orders"] == first.body["orders"]
    assert len(app.ports.broker.placed) == 1  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- barrier


def test_exit_arriving_while_its_entry_is_in_flight_is_queued_then_executed(
    app: App, broker: GatedPaper
) -> None:
    entry = gold_payload("BASE_ENTRY")
    exit_all = gold_payload("EXIT", position="ALL", stop=0, timestamp="2025-12-01T10:01:00")
    broker.gate.clear()
    future = app.submit(received(app, entry), "entry")
    assert broker.waiting.wait(5), "the entry's order never reached the broker"

    queued = send(app, exit_all)
    assert queued["_http"] == 202
    assert (queued["status"], queued["state"]) == ("in_progress", "queued")
    assert row(app, exit_all).status == "queued"
    assert app.status()["queued_signals"] == [queued["signal_id"]]

    broker.gate.set()
    assert rendered(future.result(10))["status"] == "executed"
    done = row(app, exit_all)
    assert done.status == "executed", done.outcome
    assert done.outcome is not None and "position_not_open" not in json.dumps(done.outcome)
    replay = send(app, exit_all)
    assert replay["status"] == "duplicate"
    assert replay["original"]["body"]["status"] == "executed"
    assert [(p["key"], p["lots"]) for p in replay["original"]["body"]["decision"]["positions"]] == [
        ("GOLD_MINI_Long_1", 3)
    ]
    assert app.status()["portfolio"]["open_positions"] == 0


class AtFill(NullObserver):
    """Calls ``then`` once, the moment an intent is recorded filled: the group's orders are
    all terminal, its T2 (settle) has not run yet."""

    def __init__(self, then: Callable[[], dict[str, Any]]) -> None:
        self.then: Callable[[], dict[str, Any]] | None = then
        self.answer: dict[str, Any] | None = None

    def intent_state(self, state: str, delta: int) -> None:
        if state == "filled" and delta > 0 and self.then is not None:
            then, self.then = self.then, None
            self.answer = then()


def test_exit_arriving_between_its_entrys_fill_and_settle_waits_for_the_settle(
    app: App,
) -> None:
    """The barrier lasts until T2: an EXIT deciding on a reservation whose fills are in but
    not yet applied would close lots the position does not record yet."""
    entry = gold_payload("BASE_ENTRY")
    exit_all = gold_payload("EXIT", position="ALL", stop=0, timestamp="2025-12-01T10:01:00")
    swept: list[StoredSignal] = []

    def exit_then_sweep() -> dict[str, Any]:
        answer = send(app, exit_all)
        # The leader's sweep runs queues whose barrier looks clear: it must leave this one.
        app.service.run_queued()
        swept.append(row(app, exit_all))
        return answer

    hook = AtFill(exit_then_sweep)
    app.service.set_observer(hook)
    assert send(app, entry)["status"] == "executed"
    assert hook.answer is not None
    assert (hook.answer["_http"], hook.answer["state"]) == (202, "queued")
    (after_sweep,) = swept
    assert after_sweep.status == "queued"
    assert after_sweep.claim_epoch <= 2  # taken once at most, not spun on
    # The entry's T2 ran the queue: the EXIT closed the position it had just recorded.
    done = row(app, exit_all)
    assert done.status == "executed", done.outcome
    assert done.outcome is not None
    assert [(p["key"], p["lots"]) for p in done.outcome["positions"]] == [("GOLD_MINI_Long_1", 3)]
    assert app.status()["portfolio"]["open_positions"] == 0


def test_entry_queued_longer_than_max_queue_age_is_rejected_stale_in_queue(
    app: App, broker: GatedPaper
) -> None:
    broker.gate.clear()
    future = app.submit(received(app, gold_payload("BASE_ENTRY")), "first")
    assert broker.waiting.wait(5)
    pyramid = gold_payload(
        "PYRAMID", position="Long_2", price=79100, stop=78900, timestamp="2025-12-01T11:00:00"
    )
    # Received two minutes ago (max queue age 60 s): it will be stale when dequeued.
    old = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=120)
    result = app.handle(received(app, pyramid, old), "late")
    assert result.http_status == 202
    assert rendered(result)["state"] == "queued"
    broker.gate.set()
    future.result(10)
    stale = row(app, pyramid)
    assert stale.status == "rejected"
    assert stale.outcome is not None
    assert [c["code"] for c in stale.outcome["codes"]] == ["stale_in_queue"]
    assert not intents(app, stale.id)
    assert len(broker.placed) == 1


# --------------------------------------------------------------------------- broker failures


def test_rejected_exit_leg_is_retried_with_a_new_attempt(app: App, broker: GatedPaper) -> None:
    assert send(app, gold_payload("BASE_ENTRY"))["status"] == "executed"
    broker.reject_next("GOLDM05JAN26FUT", "RMS: circuit limit")
    body = send(app, gold_payload("EXIT", stop=0, timestamp="2025-12-01T12:00:00"))
    assert body["status"] == "executed", body
    stored = intents(app, body["signal_id"])
    assert [(s.intent.attempt, s.state) for s in stored] == [(1, "rejected"), (2, "filled")]
    assert "RMS: circuit limit" in (stored[0].last_error or "")
    assert app.status()["portfolio"]["open_positions"] == 0


def test_exit_leg_rejected_every_attempt_stays_open_and_fails(app: App, broker: GatedPaper) -> None:
    assert send(app, gold_payload("BASE_ENTRY"))["status"] == "executed"
    for _ in range(3):
        broker.reject_next("GOLDM05JAN26FUT", "RMS: circuit limit")
    body = send(app, gold_payload("EXIT", stop=0, timestamp="2025-12-01T12:00:00"))
    assert body["status"] == "failed", body
    assert body["reason_codes"] == ["order_failed"]
    assert [s.state for s in intents(app, body["signal_id"])] == ["rejected"] * 3
    positions = app.positions("open", 10)["positions"]
    assert [(p["key"], p["lots"]) for p in positions] == [("GOLD_MINI_Long_1", 3)]


def test_second_leg_rejected_unwinds_the_filled_first_leg(app: App, broker: GatedPaper) -> None:
    pe = "BANKNIFTY30DEC2552000PE"
    broker.reject_next(pe, "RMS: margin shortfall")
    body = send(app, bn_payload("BASE_ENTRY"))
    assert body["status"] == "failed", body
    assert body["reason_codes"] == ["order_failed"]
    assert "margin shortfall" in body["message"]
    stored = intents(app, body["signal_id"])
    legs = [(s.intent.leg, s.intent.action, s.intent.origin, s.state) for s in stored]
    assert sorted(legs) == [
        ("CE", "BUY", "signal", "filled"),
        ("CE", "SELL", "unwind", "filled"),
        ("PE", "SELL", "signal", "rejected"),
    ]
    # Nothing is held: no position in the portfolio, flat at the broker.
    assert app.status()["portfolio"]["open_positions"] == 0
    nets = broker.positions()
    assert isinstance(nets, Ok)
    assert all(p.quantity == 0 for p in nets.value), nets.value
    trades = broker.trade_book()
    assert isinstance(trades, Ok)
    assert sorted((t.symbol, t.action, t.quantity) for t in trades.value) == [
        ("BANKNIFTY30DEC2552000CE", "BUY", 210),
        ("BANKNIFTY30DEC2552000CE", "SELL", 210),
    ]
    assert app.status()["portfolio"]["closed_equity"] == pytest.approx(5_000_000.0)


# --------------------------------------------------------------------------- database loss


class OutageUow:
    """The memory store behind a switch: while ``down``, every unit of work fails."""

    def __init__(self, inner: UnitOfWorkFactory) -> None:
        self.inner = inner
        self.down = threading.Event()

    def begin(self, kind: TxKind = "signal", *, read_only: bool = False) -> UnitOfWork:
        if self.down.is_set():
            raise DatabaseUnavailable("database down (test outage)")
        return self.inner.begin(kind, read_only=read_only)


class OutageAtPlace(PaperBroker):
    """Takes the database down while an order is at the broker, for ``outage_s``."""

    def __init__(self, store: OutageUow, outage_s: float) -> None:
        super().__init__()
        self.store = store
        self.outage_s = outage_s
        self.placed = 0

    def place(self, order: OrderRequest) -> SubmitResult:
        self.placed += 1
        if self.placed == 1:
            self.store.down.set()
            threading.Timer(self.outage_s, self.store.down.clear).start()
        return super().place(order)


def test_database_lost_after_t1_answers_202_and_the_signal_still_finishes(app: App) -> None:
    store = OutageUow(app.ports.uow)
    broker = OutageAtPlace(store, 0.3)
    ports = attrs.evolve(app.ports, uow=store, broker=broker)
    limits = attrs.evolve(app.limits, held_result_retry_ms=20, tx_attempts=2)
    service = SignalService(ports, app.config, limits)
    try:
        base = gold_payload("BASE_ENTRY")
        result = service.handle(received(app, base), "req-1")
        # T1 committed before the outage: never 503 now, and never stuck at 202.
        assert result.http_status == 202
        assert rendered(result)["status"] == "in_progress"
        done = wait_until(lambda: row(app, base).status == "executed", 5)
        assert done, row(app, base)
        assert broker.placed == 1
        replay = send(service, base, app)
        assert replay["status"] == "duplicate"
        assert replay["original"]["body"]["status"] == "executed"
        assert [(p["key"], p["lots"]) for p in app.positions("open", 10)["positions"]] == [
            ("GOLD_MINI_Long_1", 3)
        ]
    finally:
        service.shutdown()


def test_database_down_before_t1_answers_503_and_stores_nothing(app: App) -> None:
    store = OutageUow(app.ports.uow)
    ports = attrs.evolve(app.ports, uow=store)
    limits = attrs.evolve(app.limits, held_result_retry_ms=20, tx_attempts=2)
    service = SignalService(ports, app.config, limits)
    try:
        store.down.set()
        base = gold_payload("BASE_ENTRY")
        result = service.handle(received(app, base), "req-1")
        assert result.http_status == 503
        assert rendered(result)["reason"] == "database_unavailable"
        store.down.clear()
        time.sleep(0.1)  # the finisher looks, finds no row, and stops
        fp = received(app, base).fingerprint
        with app.ports.uow.begin("signal", read_only=True) as unit:
            assert unit.signals.by_fingerprint(fp) is None
        assert send(service, base, app)["status"] == "executed"
    finally:
        service.shutdown()


def wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_redelivered_near_duplicate_answers_200_duplicate_on_every_instance(app: App) -> None:
    first = send(app, gold_payload("BASE_ENTRY"))
    near = gold_payload("BASE_ENTRY", timestamp="2025-12-01T10:00:30")
    assert send(app, near)["duplicate_layer"] == "near"
    # Another instance (no L1 entry) gets it again: the stored row is terminal, so 200.
    again = send(second_service(app), near, app)
    assert again["_http"] == 200, again
    assert (again["status"], again["duplicate_layer"]) == ("duplicate", "l3")
    assert again["original"]["body"]["signal_id"] == first["signal_id"]
    fp = received(app, near).fingerprint
    handle = app.ports.lock.acquire(fp, 10_000)
    assert handle is not None
    try:
        held = send(second_service(app), near, app)
    finally:
        app.ports.lock.release(handle)
    assert (held["_http"], held["status"], held["duplicate_layer"]) == (200, "duplicate", "l2")
    assert held["original"]["body"]["signal_id"] == first["signal_id"]


# --------------------------------------------------------------------------- crash after T1


class StalledRate:
    """A rate budget whose order tokens wait at a gate: the owner stops after T1, before
    its claim, as if it had died there (service.md 15 row 2)."""

    def __init__(self, inner: RateBudget) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def take(self, kind: Literal["order", "read"]) -> None:
        if kind == "order" and not self.gate.is_set():
            self.waiting.set()
            self.gate.wait(10)
        self.inner.take(kind)


CRASH_CASES = {
    # (payload, received seconds ago, expected final status, expected open position lots)
    "young-entry-resumes": (gold_payload("BASE_ENTRY"), 0, "executed", 3),
    "old-entry-abandoned": (gold_payload("BASE_ENTRY"), 120, "failed", 0),
    "old-exit-resumes": (
        gold_payload("EXIT", position="ALL", stop=0, timestamp="2025-12-01T12:00:00"),
        120,
        "executed",
        0,
    ),
}


@pytest.mark.parametrize("case", list(CRASH_CASES))
def test_owner_dead_after_t1_before_claim_is_taken_over_once(
    case: str, app: App, broker: GatedPaper
) -> None:
    payload, age_s, final, lots = CRASH_CASES[case]
    if payload["type"] == "EXIT":
        assert send(app, gold_payload("BASE_ENTRY"))["status"] == "executed"
    orders_before = len(broker.placed)
    rate = StalledRate(app.ports.rate)
    dead = SignalService(
        attrs.evolve(app.ports, rate=rate), app.config, attrs.evolve(app.limits, instance_id="dead")
    )
    when = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age_s)
    answers: list[SignalResult] = []
    owner = threading.Thread(
        target=lambda: answers.append(dead.handle(received(app, payload, when), "r"))
    )
    owner.start()
    assert rate.waiting.wait(5), "the owner never reached its first claim"
    assert row(app, payload).status == "processing"

    heir = SignalService(app.ports, app.config, attrs.evolve(app.limits, instance_id="heir"))
    report = recover(heir, lambda instance: instance == "heir", release_locks=False)
    stored = row(app, payload)
    assert report.takeovers == (stored.id,)
    assert report.finished == ((stored.id, final),)
    assert stored.status == final
    if final == "failed":
        assert stored.outcome is not None
        assert [c["code"] for c in stored.outcome["codes"]] == ["abandoned_after_crash"]
        assert {s.state for s in intents(app, stored.id)} == {"abandoned"}
    held = [p["lots"] for p in app.positions("open", 10)["positions"]]
    assert sum(held) == lots

    # The deposed owner wakes up: its claim is fenced off, it sends nothing and answers 202.
    rate.gate.set()
    owner.join(10)
    assert answers and answers[0].http_status == 202
    expected_orders = 0 if final == "failed" else 1
    assert len(broker.placed) - orders_before == expected_orders
    assert row(app, payload).status == final
    dead.shutdown()
    heir.shutdown()


class Died(Exception):
    """The owner's process ends here (as kill -9 would, as far as the store can tell)."""


class DieAtFill(NullObserver):
    def intent_state(self, state: str, delta: int) -> None:
        if state == "filled" and delta > 0:
            raise Died


def test_owner_dead_between_fill_and_settle_recovers_without_warnings(app: App) -> None:
    """service.md 8: a reservation whose orders all filled before its owner died is covered
    by its in-flight signal; recovery settles it and reports no broken invariant."""
    payload = gold_payload("BASE_ENTRY")
    dead = SignalService(
        app.ports, app.config, attrs.evolve(app.limits, instance_id="dead"), DieAtFill()
    )
    with pytest.raises(Died):
        dead.handle(received(app, payload), "r")
    stored = row(app, payload)
    assert stored.status == "processing"
    assert {s.state for s in intents(app, stored.id)} == {"filled"}
    assert [p["status"] for p in app.positions(None, 10)["positions"]] == ["pending_open"]

    heir = SignalService(app.ports, app.config, attrs.evolve(app.limits, instance_id="heir"))
    report = recover(heir, lambda instance: instance == "heir", release_locks=False)
    assert report.warnings == ()
    assert report.finished == ((stored.id, "executed"),)
    assert [(p["status"], p["lots"]) for p in app.positions(None, 10)["positions"]] == [("open", 3)]
    dead.shutdown()
    heir.shutdown()


def test_exit_all_with_one_position_refused_is_partially_executed(
    app: App, broker: GatedPaper
) -> None:
    """webhook.md 1.3's partially_executed example: Long_2's PE buy is refused every time."""
    trade = bn_trade()
    for payload, _ in trade[:3]:
        assert send(app, payload)["status"] == "executed"
    for _ in range(3):
        broker.reject_next("BANKNIFTY30DEC2552500PE", "RMS: circuit limit")
    body = send(app, trade[3][0])
    assert body["status"] == "partially_executed", body
    assert body["reason_codes"] == ["order_failed"]
    assert body["decision"]["total_pnl"] == 72000.0
    assert [(p["key"], p["lots"]) for p in body["decision"]["positions"]] == [
        ("BANK_NIFTY_Long_1", 4)
    ]
    long2 = [o for o in body["orders"] if "52500" in o["symbol"]]
    assert [(o["action"], o["state"]) for o in long2] == [("BUY", "rejected")] * 3
    open_now = app.positions("open", 10)["positions"]
    assert [(p["key"], p["lots"]) for p in open_now] == [("BANK_NIFTY_Long_2", 3)]
    assert app.status()["blocked_instruments"] == {}


def test_leader_sweep_runs_a_queued_signal_left_behind_a_cleared_barrier(
    broker: GatedPaper,
) -> None:
    """service.md 2.6: queued signals are claimed by the instance whose T2 cleared the barrier,
    else by the sweep. Here the T2 side never ran it (the instance that cleared the barrier
    died right after its T2), and the queued row's owner is alive (this very instance), so
    no takeover would ever run it."""
    app = build(load_settings({**FAST, "PM_SWEEP_INTERVAL_S": "0.05"}), broker=broker)
    app.start()
    try:
        assert send(app, gold_payload("BASE_ENTRY"))["status"] == "executed"
        exit_all = received(
            app, gold_payload("EXIT", position="ALL", stop=0, timestamp="2025-12-01T10:05:00")
        )
        with app.ports.uow.begin("signal") as unit:
            claim = unit.signals.claim(
                exit_all.signal, exit_all.fingerprint, exit_all.received_at, app.instance_id, 1
            )
            assert isinstance(claim, Claimed)
            unit.signals.set_state(claim.id, "queued", claim.epoch)
            unit.commit()
        assert wait_until(lambda: row(app, dict(EXIT_ALL_GOLD)).status == "executed", 5), row(
            app, dict(EXIT_ALL_GOLD)
        )
        assert app.status()["portfolio"]["open_positions"] == 0
        assert app.status()["queued_signals"] == []
    finally:
        app.close()


EXIT_ALL_GOLD = gold_payload("EXIT", position="ALL", stop=0, timestamp="2025-12-01T10:05:00")
