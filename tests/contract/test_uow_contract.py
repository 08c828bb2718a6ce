"""One UnitOfWork contract, run unchanged on memory, SQLite (a temp file) and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pm_adapters.memory import MemoryUnitOfWorkFactory
from pm_adapters.sql.retry import create_engine
from pm_adapters.sql.tables import leader_fence, metadata, signal_log
from pm_adapters.sql.uow import SqlUnitOfWorkFactory
from pm_core.errors import (
    ClaimLost,
    DuplicateKey,
    FencedError,
    NotInitialised,
    StaleVersionError,
    UnknownStatistic,
)
from pm_core.model import (
    Block,
    ChangeSet,
    Code,
    Decision,
    EquityUpdate,
    LedgerEntry,
    Mark,
    PendingExit,
    Position,
    PyramidingState,
    Signal,
    Trade,
)
from pm_core.ports import Claimed, Existing, LeaderFence, SignalFence, UnitOfWorkFactory
from tests.kit.postgres import PgServer
from tests.strategies import make_intent as intent

T0 = dt.datetime(2025, 11, 28, 10, 30, tzinfo=dt.UTC)
CAPITAL = 5_000_000.0


@attrs.define
class Backend:
    """A UnitOfWorkFactory plus the few probes the port does not expose."""

    name: str
    factory: UnitOfWorkFactory
    duplicate_count: Callable[[str], int]
    set_fence: Callable[[int], None]


def _memory() -> Backend:
    factory = MemoryUnitOfWorkFactory()

    def count(fp: str) -> int:
        state = factory.store.state
        return state.signals[state.fingerprints[fp]].duplicate_count

    return Backend("memory", factory, count, factory.store.set_fence_epoch)


def _sql(name: str, url: str) -> Backend:
    engine = create_engine(url)
    metadata.create_all(engine)
    factory = SqlUnitOfWorkFactory(engine)

    def count(fp: str) -> int:
        with engine.connect() as conn:
            value = conn.execute(
                sa.select(signal_log.c.duplicate_count).where(signal_log.c.fingerprint == fp)
            ).scalar_one()
            return int(value)

    def set_fence(epoch: int) -> None:
        with engine.begin() as conn:
            conn.execute(sa.delete(leader_fence))
            conn.execute(leader_fence.insert().values(id=1, epoch=epoch, holder="leader"))

    return Backend(name, factory, count, set_fence)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "memory":
        yield _memory()
        return
    if request.param == "sqlite":
        b = _sql("sqlite", f"sqlite:///{tmp_path / 'pm.sqlite3'}")
    else:
        server: PgServer = request.getfixturevalue("pg_server")
        b = _sql("postgresql", server.create_database("contract"))
    try:
        yield b
    finally:
        assert isinstance(b.factory, SqlUnitOfWorkFactory)
        b.factory.close()


@pytest.fixture()
def uows(backend: Backend) -> UnitOfWorkFactory:
    backend.factory.initialise(CAPITAL)  # type: ignore[attr-defined]
    return backend.factory


# --------------------------------------------------------------------------- helpers


def signal(label: str = "Long_1", at: dt.datetime = T0, type_: str = "BASE_ENTRY") -> Signal:
    return Signal(
        type=type_,  # type: ignore[arg-type]
        instrument="GOLD_MINI",
        position=label,
        price=78_000.5,
        stop=77_000.25,
        lots=1,
        atr=350.1,
        er=0.8,
        supertrend=77_500.0,
        timestamp=at,
    )


def position(pid: int = -1, label: str = "Long_1", **kw: Any) -> Position:
    base: dict[str, Any] = dict(
        id=pid,
        instrument="GOLD_MINI",
        label=label,
        status="pending_open",
        is_base_position=True,
        lots=2,
        quantity=200,
        lot_size=100,
        point_value=10.0,
        entry_timestamp=T0,
        entry_price=78_000.5,
        initial_stop=77_000.25,
        current_stop=77_000.25,
        highest_close=78_000.5,
        atr=350.1,
        basis=78_000.5,
    )
    base.update(kw)
    return Position(**base)


def open_one(uows: UnitOfWorkFactory, **kw: Any) -> int:
    with uows.begin() as uow:
        snap = uow.portfolio.lock()
        ids = uow.portfolio.save(ChangeSet(create=(position(**kw),)), snap.version)
        uow.commit()
    return ids[-1]


def claim(uows: UnitOfWorkFactory, fp: str, sig: Signal | None = None) -> Claimed:
    with uows.begin() as uow:
        result = uow.signals.claim(sig or signal(), fp, T0, "inst-a")
        uow.commit()
    assert isinstance(result, Claimed)
    return result


FP = "a" * 64


# --------------------------------------------------------------------------- portfolio


def test_uninitialised_portfolio_is_refused(backend: Backend) -> None:
    with backend.factory.begin() as uow, pytest.raises(NotInitialised):
        uow.portfolio.lock()
    assert backend.factory.initialise(CAPITAL) is True  # type: ignore[attr-defined]
    assert backend.factory.initialise(1.0) is False  # type: ignore[attr-defined]
    with backend.factory.begin(read_only=True) as uow:
        assert uow.portfolio.read().initial_capital == CAPITAL


def test_initial_snapshot(uows: UnitOfWorkFactory) -> None:
    with uows.begin() as uow:
        snap = uow.portfolio.lock()
    assert (snap.version, snap.initial_capital, snap.closed_equity, snap.equity_high) == (
        1,
        CAPITAL,
        CAPITAL,
        CAPITAL,
    )
    assert snap.positions == () and dict(snap.pyramiding) == {} and dict(snap.blocks) == {}
    assert len(snap.recorded) == 0


def test_save_maps_placeholders_everywhere(uows: UnitOfWorkFactory) -> None:
    base = position(-1, "Long_1")
    pyramid = position(-2, "Long_2", is_base_position=False, anchor_base_id=-1)
    changes = ChangeSet(
        create=(base, pyramid),
        pyramiding={"GOLD_MINI": PyramidingState(-1, 78_000.5)},
        marks={"GOLD_MINI": Mark(78_000.5, 350.1, T0)},
        statistics={"entries_executed": 1},
    )
    with uows.begin() as uow:
        ids = uow.portfolio.save(changes, uow.portfolio.lock().version)
        assert set(ids) == {-1, -2} and all(v > 0 for v in ids.values())
        intent_ids = uow.intents.add([intent("pm-a-1-FUT-1", -1), intent("pm-a-2-FUT-1", -2)], None)
        uow.commit()
    with uows.begin(read_only=True) as uow:
        snap = uow.portfolio.read()
        stored = [uow.intents.get(i) for i in intent_ids]
        stats = uow.statistics.read()
    assert snap.version == 2
    assert [p.id for p in snap.positions] == sorted(ids.values())
    first, second = snap.positions
    assert first.id == ids[-1] and first.version == 1
    assert second.anchor_base_id == ids[-1]
    assert snap.pyramiding["GOLD_MINI"] == PyramidingState(ids[-1], 78_000.5)
    assert snap.marks["GOLD_MINI"] == Mark(78_000.5, 350.1, T0)
    assert [s.intent.position_id for s in stored if s] == [ids[-1], ids[-2]]
    assert all(s is not None and s.intent.instrument == "GOLD_MINI" for s in stored)
    assert stats["entries_executed"] == 1


def test_full_position_record_round_trips(uows: UnitOfWorkFactory) -> None:
    full = position(
        contract_month="2025-12",
        expiry=dt.date(2025, 12, 5),
        strike=78_000.0,
        ce_symbol="CE",
        pe_symbol="PE",
        futures_symbol="FUT",
        ce_entry_price=512.35,
        pe_entry_price=498.1,
        entry_fill_price=78_014.25,
        limiter="risk",
        unrealized_pnl=-1234.5678,
        realized_pnl=0.1 + 0.2,
        rollover_realized_pnl=1e-7,
        rollover_spread_total=3.3333333333333335,
        rollover_count=2,
        rollover_status="rolled",
        rollover_step=3,
        rollover_target_expiry=dt.date(2026, 1, 2),
        rollover_target_strike=79_000.0,
        original_expiry=dt.date(2025, 11, 28),
        original_strike=77_500.0,
        opened_by_fingerprint=FP,
        entry_timestamp=dt.datetime(2025, 11, 28, 16, 0, 0, 123456, tzinfo=dt.UTC),
        pending_exit=PendingExit(2, 78_100.5, "signal", T0, "open", FP),
        status="closing",
    )
    pid = open_one(uows, **{k: getattr(full, k) for k in attrs.fields_dict(Position) if k != "id"})
    with uows.begin() as uow:
        (stored,) = uow.portfolio.lock().positions
    assert stored == attrs.evolve(full, id=pid, version=1)


def test_uncommitted_changes_roll_back(uows: UnitOfWorkFactory) -> None:
    with uows.begin() as uow:
        snap = uow.portfolio.lock()
        uow.portfolio.save(ChangeSet(create=(position(),)), snap.version)
        uow.signals.claim(signal(), FP, T0, "inst-a")
    with uows.begin() as uow:
        snap = uow.portfolio.lock()
        assert snap.version == 1 and snap.positions == ()
        assert uow.signals.by_fingerprint(FP) is None
        uow.rollback()


def test_stale_portfolio_version_is_refused_and_writes_nothing(uows: UnitOfWorkFactory) -> None:
    with uows.begin() as uow:
        old = uow.portfolio.lock()
    open_one(uows)
    with uows.begin() as uow, pytest.raises(StaleVersionError):
        uow.portfolio.save(ChangeSet(create=(position(label="Long_2"),)), old.version)
    with uows.begin() as uow:
        snap = uow.portfolio.lock()
    assert snap.version == 2 and len(snap.positions) == 1


def test_position_updates_check_and_bump_versions(uows: UnitOfWorkFactory) -> None:
    pid = open_one(uows)
    with uows.begin() as uow:
        snap = uow.portfolio.lock()
        (p,) = snap.positions
        moved = attrs.evolve(p, status="open", current_stop=77_500.75)
        uow.portfolio.save(ChangeSet(update=(moved,)), snap.version)
        uow.commit()
    with uows.begin() as uow:
        snap = uow.portfolio.lock()
        (p,) = snap.positions
        assert (p.id, p.version, p.status, p.current_stop) == (pid, 2, "open", 77_500.75)
        stale = attrs.evolve(p, version=1, current_stop=1.0)
        with pytest.raises(StaleVersionError):
            uow.portfolio.save(ChangeSet(update=(stale,)), snap.version)


def test_closed_positions_leave_the_snapshot_and_trades_ledger_save(
    uows: UnitOfWorkFactory,
) -> None:
    pid = open_one(uows, status="open")
    keep = open_one(uows, label="Long_2", status="partial")
    with uows.begin() as uow:
        snap = uow.portfolio.lock()
        p = snap.position_by_id(pid)
        assert p is not None
        closed = attrs.evolve(p, status="closed", exit_price=78_500.5, exit_timestamp=T0)
        trade = Trade(
            pid,
            "GOLD_MINI",
            "Long_1",
            True,
            T0,
            78_000.5,
            77_000.25,
            10.0,
            T0,
            78_500.5,
            2,
            10_000.0,
            "signal",
        )
        uow.portfolio.save(
            ChangeSet(
                update=(closed,),
                close=(trade,),
                portfolio=EquityUpdate(CAPITAL + 10_000.0, CAPITAL + 10_000.0),
                ledger=(
                    LedgerEntry("trading_pnl", 10_000.0, CAPITAL + 10_000.0, pid),
                    LedgerEntry("adjustment", 0.0, CAPITAL + 10_000.0),
                ),
                pyramiding={"GOLD_MINI": None},
            ),
            snap.version,
        )
        uow.commit()
    with uows.begin() as uow:
        snap = uow.portfolio.lock()
    assert [p.id for p in snap.positions] == [keep]
    assert snap.closed_equity == CAPITAL + 10_000.0 and "GOLD_MINI" not in snap.pyramiding


def test_blocks_through_changes_and_repository(uows: UnitOfWorkFactory) -> None:
    block = Block("manual", T0, {"by": "ops", "n": 1})
    with uows.begin() as uow:
        uow.portfolio.save(ChangeSet(blocks={"GOLD_MINI": block}), uow.portfolio.lock().version)
        uow.blocks.set("BANK_NIFTY", Block("reconciliation", T0))
        uow.commit()
    with uows.begin() as uow:
        snap = uow.portfolio.lock()
        assert snap.blocks["GOLD_MINI"] == block
        assert uow.blocks.get("BANK_NIFTY") == Block("reconciliation", T0)
        uow.blocks.clear("BANK_NIFTY")
        uow.portfolio.save(ChangeSet(blocks={"GOLD_MINI": None}), snap.version)
        uow.commit()
    with uows.begin() as uow:
        assert dict(uow.portfolio.lock().blocks) == {}
        assert uow.blocks.get("BANK_NIFTY") is None


def test_statistics_add_and_refuse_unknown(uows: UnitOfWorkFactory) -> None:
    with uows.begin() as uow:
        uow.statistics.add({"signals_received": 2, "rollover_cost_total": 12.5})
        uow.statistics.add({"signals_received": 1})
        uow.commit()
    with uows.begin() as uow:
        stats = uow.statistics.read()
        assert stats["signals_received"] == 3 and stats["rollover_cost_total"] == 12.5
        with pytest.raises(UnknownStatistic):
            uow.statistics.add({"made_up": 1})


def test_read_only_unit_sees_committed_state_only(uows: UnitOfWorkFactory) -> None:
    with uows.begin(read_only=True) as reader:
        before = reader.portfolio.read()
    open_one(uows)
    with uows.begin(read_only=True) as reader:
        after = reader.portfolio.read()
    assert before.version == 1 and after.version == 2 and len(after.positions) == 1


# --------------------------------------------------------------------------- signals


def test_claim_then_existing_bumps_duplicate_count(
    backend: Backend, uows: UnitOfWorkFactory
) -> None:
    first = claim(uows, FP)
    assert first.epoch == 1
    for n in (1, 2):
        with uows.begin() as uow:
            again = uow.signals.claim(signal(), FP, T0, "inst-b")
            uow.commit()
        assert again == Existing(id=first.id, status="processing", outcome=None)
        assert backend.duplicate_count(FP) == n
    stored = None
    with uows.begin() as uow:
        stored = uow.signals.get(first.id)
    assert stored is not None
    assert stored.signal == signal() and stored.owner_instance_id == "inst-a"
    assert stored.status == "processing" and stored.claim_epoch == 1


def test_finish_records_outcome_and_replays(uows: UnitOfWorkFactory) -> None:
    c = claim(uows, FP)
    decision = Decision(outcome="blocked", codes=(Code("zero_lots", {"lots": 0}),), messages=("x",))
    with uows.begin() as uow:
        with pytest.raises(ValueError):
            uow.signals.finish(c.id, Decision(outcome="pending"), c.epoch)
        uow.signals.finish(
            c.id, decision, c.epoch, http_status=200, response={"status": "blocked", "n": [1]}
        )
        uow.commit()
    with uows.begin() as uow:
        again = uow.signals.claim(signal(), FP, T0, "inst-b")
        uow.commit()
    assert isinstance(again, Existing)
    assert again.status == "blocked" and again.http_status == 200
    assert again.outcome == decision.record() and again.completed_at is not None
    assert again.response == {"status": "blocked", "n": [1]}
    with uows.begin(read_only=True) as uow:
        stored = uow.signals.get(c.id)
    assert stored is not None and stored.response == again.response
    assert stored.completed_at == again.completed_at


def test_epoch_fencing_and_take_over(uows: UnitOfWorkFactory) -> None:
    c = claim(uows, FP)
    with uows.begin() as uow:
        assert uow.signals.take_over(c.id, 1, "inst-b") == 2
        assert uow.signals.take_over(c.id, 1, "inst-c") is None
        uow.commit()
    with uows.begin() as uow, pytest.raises(ClaimLost):
        uow.signals.set_state(c.id, "queued", 1)
    with uows.begin() as uow, pytest.raises(ClaimLost):
        uow.signals.finish(c.id, Decision(outcome="rejected"), 1)
    with uows.begin() as uow:
        uow.signals.set_state(c.id, "queued", 2)
        uow.commit()
    with uows.begin() as uow:
        stored = uow.signals.get(c.id)
        assert stored is not None
        assert (stored.status, stored.claim_epoch, stored.owner_instance_id) == (
            "queued",
            2,
            "inst-b",
        )


def test_near_window_inclusive_and_skips_duplicates(uows: UnitOfWorkFactory) -> None:
    a = claim(uows, "1" * 64, signal(at=T0))
    claim(uows, "2" * 64, signal(at=T0 + dt.timedelta(seconds=61)))
    dup = claim(uows, "3" * 64, signal(at=T0 + dt.timedelta(seconds=5)))
    claim(uows, "4" * 64, signal(label="Long_2", at=T0))
    with uows.begin() as uow:
        uow.signals.mark_duplicate(dup.id, a.id, "near", dup.epoch)
        uow.commit()
    with uows.begin() as uow:
        at_60 = uow.signals.near(
            "GOLD_MINI", "BASE_ENTRY", "Long_1", T0 + dt.timedelta(seconds=60), 60
        )
        at_0 = uow.signals.near("GOLD_MINI", "BASE_ENTRY", "Long_1", T0, 60.0)
        other_type = uow.signals.near("GOLD_MINI", "EXIT", "Long_1", T0, 60.0)
    assert [r.fingerprint for r in at_60] == ["1" * 64, "2" * 64]
    assert [r.fingerprint for r in at_0] == ["1" * 64]
    ref = at_0[0]
    assert (ref.signal_id, ref.outcome, ref.timestamp, ref.label) == (
        a.id,
        "processing",
        T0,
        "Long_1",
    )
    assert other_type == []


def test_queued_order_and_in_flight(uows: UnitOfWorkFactory) -> None:
    ids = []
    for n, offset in enumerate((30, 10, 20)):
        with uows.begin() as uow:
            c = uow.signals.claim(
                signal(f"Long_{n + 1}"), str(n) * 64, T0 + dt.timedelta(seconds=offset), "i"
            )
            assert isinstance(c, Claimed)
            uow.signals.set_state(c.id, "queued", c.epoch)
            uow.commit()
            ids.append(c.id)
    with uows.begin() as uow:
        first = uow.signals.oldest_queued("GOLD_MINI")
        assert first is not None and first.id == ids[1]
        assert uow.signals.oldest_queued("BANK_NIFTY") is None
        uow.signals.finish(ids[1], Decision(outcome="executed"), 1)
        uow.commit()
    with uows.begin() as uow:
        assert [s.id for s in uow.signals.in_flight()] == [ids[2], ids[0]]


# --------------------------------------------------------------------------- intents


def test_intent_claim_once_and_fences(backend: Backend, uows: UnitOfWorkFactory) -> None:
    c = claim(uows, FP)
    pid = open_one(uows)
    with uows.begin() as uow:
        (iid, other) = uow.intents.add(
            [intent("pm-a-1-FUT-1", pid), intent("pm-a-1-FUT-2", pid, 2)], c.id
        )
        uow.commit()
    with uows.begin() as uow:
        won = uow.intents.claim(iid, "inst-a", SignalFence(c.id, c.epoch))
        uow.commit()
    assert won is not None and (won.state, won.attempts, won.owner_instance_id) == (
        "sending",
        1,
        "inst-a",
    )
    assert won.sent_at is not None and won.version == 2
    with uows.begin() as uow:
        assert uow.intents.claim(iid, "inst-b", SignalFence(c.id, c.epoch)) is None
        with pytest.raises(ClaimLost):
            uow.intents.claim(other, "inst-b", SignalFence(c.id, c.epoch + 1))
    backend.set_fence(7)
    with uows.begin() as uow, pytest.raises(FencedError):
        uow.intents.claim(other, "leader", LeaderFence(6))
    with uows.begin() as uow:
        uow.fence.check(7)
        led = uow.intents.claim(other, "leader", LeaderFence(7))
        assert led is not None and led.leader_epoch == 7
        uow.commit()


def test_intent_transitions_and_listings(uows: UnitOfWorkFactory) -> None:
    c = claim(uows, FP)
    pid = open_one(uows)
    with uows.begin() as uow:
        a, b = uow.intents.add([intent("pm-a-1-FUT-1", pid), intent("pm-a-1-FUT-2", pid, 2)], c.id)
        uow.commit()
    with uows.begin() as uow:
        assert uow.intents.transition(a, "pending", "sending", {}) is True
        assert uow.intents.transition(a, "pending", "accepted", {}) is False
        assert uow.intents.transition(
            a,
            "sending",
            "filled",
            {"broker_order_id": "B1", "filled_quantity": 2, "average_price": Decimal("78010.05")},
        )
        uow.commit()
    with uows.begin() as uow:
        done = uow.intents.get(a)
        assert done is not None
        assert (done.state, done.broker_order_id, done.filled_quantity) == ("filled", "B1", 2)
        assert done.average_price == Decimal("78010.05")
        assert [i.id for i in uow.intents.for_signal(c.id)] == [a, b]
        assert [i.id for i in uow.intents.open_for("GOLD_MINI")] == [b]
        assert uow.intents.open_for("BANK_NIFTY") == []
        assert [i.id for i in uow.intents.unresolved()] == [b]
        with pytest.raises(ValueError):
            uow.intents.transition(b, "pending", "sending", {"state": "filled"})
    with uows.begin() as uow, pytest.raises(DuplicateKey):
        uow.intents.transition(b, "pending", "accepted", {"broker_order_id": "B1"})


def test_duplicate_client_order_id_is_refused(uows: UnitOfWorkFactory) -> None:
    pid = open_one(uows)
    with uows.begin() as uow:
        uow.intents.add([intent("pm-a-1-FUT-1", pid)], None)
        uow.commit()
    with uows.begin() as uow, pytest.raises(DuplicateKey):
        uow.intents.add([intent("pm-a-1-FUT-1", pid)], None)


# --------------------------------------------------------------------------- money

finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(closed=finite, high=finite)
def test_money_reads_back_the_identical_float(
    uows: UnitOfWorkFactory, closed: float, high: float
) -> None:
    with uows.begin() as uow:
        snap = uow.portfolio.lock()
        uow.portfolio.save(ChangeSet(portfolio=EquityUpdate(closed, high)), snap.version)
        uow.commit()
    with uows.begin(read_only=True) as uow:
        after = uow.portfolio.read()
    assert after.closed_equity == closed and after.equity_high == high


# --------------------------------------------------------------------------- concurrency


def test_concurrent_writers_serialize_without_lost_updates(uows: UnitOfWorkFactory) -> None:
    """Threads reserving under the lock: every reservation lands, versions never fork."""
    from pm_adapters.sql.retry import RetryPolicy, run_transaction

    policy = RetryPolicy(attempts=20, base_s=0.001, cap_s=0.02, budget_s=30)
    errors: list[BaseException] = []
    claims: list[object] = []
    barrier = threading.Barrier(4)

    def worker(n: int) -> None:
        try:
            barrier.wait(timeout=10)

            def reserve(uow: Any) -> None:
                claims.append(uow.signals.claim(signal(), "e" * 64, T0, f"inst-{n}"))
                snap = uow.portfolio.lock()
                uow.portfolio.save(ChangeSet(create=(position(label=f"Long_{n}"),)), snap.version)

            run_transaction(uows, reserve, policy=policy)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    with uows.begin(read_only=True) as uow:
        snap = uow.portfolio.read()
    assert snap.version == 5
    assert sorted(p.label for p in snap.positions) == [f"Long_{n}" for n in range(1, 5)]
    assert sum(isinstance(c, Claimed) for c in claims) == 1
    assert sum(isinstance(c, Existing) for c in claims) == 3


prices = st.decimals(min_value=Decimal("0.05"), max_value=Decimal("999999.95"), places=2)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(limit=prices, fill=prices, ref=finite)
def test_intent_prices_read_back_equal(
    uows: UnitOfWorkFactory, limit: Decimal, fill: Decimal, ref: float
) -> None:
    with uows.begin() as uow:
        live = uow.portfolio.lock().positions
    pid = live[0].id if live else open_one(uows)
    with uows.begin() as uow:
        n = len(uow.intents.unresolved())
        (iid,) = uow.intents.add(
            [intent(f"pm-p-{n}", pid, pricetype="LIMIT", limit_price=limit, ref_price=ref)], None
        )
        uow.intents.transition(iid, "pending", "accepted", {"average_price": fill})
        uow.commit()
    with uows.begin(read_only=True) as uow:
        stored = uow.intents.get(iid)
    assert stored is not None
    assert stored.intent.limit_price == limit and stored.average_price == fill
    assert stored.intent.ref_price == ref
