"""PostgreSQL sends the checked writes of ``portfolio.save`` as one statement, and still
checks each of them: a stale row among them fails the save and nothing of it commits."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from pm_adapters.sql import driver
from pm_adapters.sql import rows as rowconv
from pm_adapters.sql.retry import create_engine
from pm_adapters.sql.tables import metadata, portfolio_positions
from pm_adapters.sql.uow import SqlUnitOfWorkFactory
from pm_core.config import gold_mini
from pm_core.errors import ClaimLost, DuplicateKey, StaleVersionError
from pm_core.model import (
    Block,
    ChangeSet,
    Decision,
    Mark,
    OrderIntent,
    PendingExit,
    PyramidingState,
    Signal,
)
from pm_core.ports import Claimed
from tests.kit.postgres import PgServer
from tests.strategies import make_intent, make_position

pytestmark = pytest.mark.integration

T0 = dt.datetime(2025, 11, 28, 10, 30, tzinfo=dt.UTC)


@pytest.fixture()
def factory(pg_server: PgServer) -> Iterator[SqlUnitOfWorkFactory]:
    engine = create_engine(pg_server.create_database("batch"))
    metadata.create_all(engine)
    f = SqlUnitOfWorkFactory(engine)
    f.initialise(5_000_000.0)
    try:
        yield f
    finally:
        f.close()


def _two_positions(factory: SqlUnitOfWorkFactory) -> None:
    inst = gold_mini()
    opened = (
        make_position(inst, id=-1, lots=2, entry=78_000.0, stop=77_000.0),
        make_position(inst, id=-2, label="Long_2", lots=1, entry=78_500.0, stop=77_500.0),
    )
    with factory.begin() as uow:
        snap = uow.portfolio.lock()
        uow.portfolio.save(ChangeSet(create=opened), snap.version)
        uow.commit()


def _statements(factory: SqlUnitOfWorkFactory, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """SQL sent to the server from now on, on either path (Core or driver)."""
    seen: list[str] = []

    @event.listens_for(factory.engine, "before_cursor_execute")
    def _record(*args: Any) -> None:
        seen.append(args[2])

    through = driver.run

    def run(connection: sa.Connection, sql: str, params: Any, **kw: Any) -> Any:
        seen.append(sql)
        return through(connection, sql, params, **kw)

    monkeypatch.setattr(driver, "run", run)
    return seen


@pytest.fixture()
def two_instances(pg_server: PgServer) -> Iterator[tuple[SqlUnitOfWorkFactory, ...]]:
    """Two factories on one database, each with its own engine and caches: two instances."""
    url = pg_server.create_database("pair")
    engines = (create_engine(url), create_engine(url))
    metadata.create_all(engines[0])
    pair = tuple(SqlUnitOfWorkFactory(e) for e in engines)
    pair[0].initialise(5_000_000.0)
    try:
        yield pair
    finally:
        for f in pair:
            f.close()


def _changes(positions: Any, stop: float) -> ChangeSet:
    return ChangeSet(
        update=tuple(p.replace(current_stop=stop) for p in positions),
        marks={"GOLD_MINI": Mark(79_000.0, 500.0, T0), "BANK_NIFTY": Mark(50_000.0, 300.0, T0)},
        statistics={"entries_executed": 1, "exits_rejected": 2},
    )


def test_checked_writes_go_in_one_statement(
    factory: SqlUnitOfWorkFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    _two_positions(factory)
    seen = _statements(factory, monkeypatch)
    with factory.begin() as uow:
        snap = uow.portfolio.lock()
        del seen[:]
        uow.portfolio.save(_changes(snap.positions, 77_800.0), snap.version)
        uow.commit()
    # bump + 2 position updates + 2 marks + 2 counters: one round trip
    assert len(seen) == 1 and seen[0].startswith("WITH w0 AS (UPDATE portfolio_state")
    with factory.begin(read_only=True) as uow:
        after = uow.portfolio.read()
        counters = uow.statistics.read()
    assert after.version == snap.version + 1
    assert [(p.current_stop, p.version) for p in after.positions] == [(77_800.0, 2)] * 2
    assert after.marks["BANK_NIFTY"].price == 50_000.0
    assert (counters["entries_executed"], counters["exits_rejected"]) == (1.0, 2.0)


@pytest.mark.parametrize("stale", ["portfolio", "position"])
def test_a_stale_row_in_the_batch_fails_the_save(factory: SqlUnitOfWorkFactory, stale: str) -> None:
    _two_positions(factory)
    with factory.begin() as uow:
        snap = uow.portfolio.lock()
    positions = list(snap.positions)
    version = snap.version
    if stale == "portfolio":
        version -= 1
    else:
        positions[1] = positions[1].replace(version=positions[1].version + 5)
    with factory.begin() as uow, pytest.raises(StaleVersionError, match=stale):
        uow.portfolio.lock()
        uow.portfolio.save(_changes(positions, 77_900.0), version)
    with factory.begin(read_only=True) as uow:
        after = uow.portfolio.read()
        counters = uow.statistics.read()
        marks = uow.x(sa.text("SELECT count(*) FROM pyramiding_state")).scalar()
    assert after.version == snap.version and marks == 0
    assert [p.current_stop for p in after.positions] == [77_000.0, 77_500.0]
    assert counters["exits_rejected"] == 0.0


def _claimed(factory: SqlUnitOfWorkFactory, fp: str) -> tuple[int, int]:
    signal = Signal("EXIT", "GOLD_MINI", "Long_1", 79_000.0, 0.0, 1, 500.0, 0.7, 0.0, T0)
    with factory.begin() as uow:
        claim = uow.signals.claim(signal, fp, T0, "inst-a")
        assert isinstance(claim, Claimed)
        uow.commit()
    return claim.id, claim.epoch


def test_under_the_lock_save_counters_and_finish_share_the_commit_round_trip(
    factory: SqlUnitOfWorkFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    _two_positions(factory)
    signal_id, epoch = _claimed(factory, "e" * 64)
    seen = _statements(factory, monkeypatch)
    with factory.begin() as uow:
        snap = uow.portfolio.lock()
        del seen[:]
        uow.portfolio.save(_changes(snap.positions, 77_700.0), snap.version)
        uow.statistics.add({"orders_placed": 2})
        uow.signals.finish(signal_id, Decision(outcome="rejected"), epoch)
        assert seen == []  # nothing sent yet: the lock keeps the checks valid until commit
        uow.commit()
    assert len(seen) == 1 and seen[0].startswith("WITH w0 AS (UPDATE portfolio_state")
    with factory.begin(read_only=True) as uow:
        after = uow.portfolio.read()
        counters = uow.statistics.read()
        stored = uow.signals.get(signal_id)
    assert after.version == snap.version + 1
    assert [p.current_stop for p in after.positions] == [77_700.0, 77_700.0]
    assert counters["orders_placed"] == 2.0 and counters["exits_rejected"] == 2.0
    assert stored is not None and stored.status == "rejected"


def test_a_deferred_check_that_fails_raises_at_commit_and_nothing_commits(
    factory: SqlUnitOfWorkFactory,
) -> None:
    signal_id, epoch = _claimed(factory, "f" * 64)
    with factory.begin() as uow:
        assert uow.signals.take_over(signal_id, epoch, "inst-b") == epoch + 1
        uow.commit()
    with factory.begin() as uow, pytest.raises(ClaimLost):
        snap = uow.portfolio.lock()
        uow.portfolio.save(ChangeSet(statistics={"exits_rejected": 1}), snap.version)
        uow.signals.finish(signal_id, Decision(outcome="rejected"), epoch)  # the old epoch
        uow.commit()
    with factory.begin(read_only=True) as uow:
        assert uow.portfolio.read().version == snap.version
        assert uow.statistics.read()["exits_rejected"] == 0.0
        stored = uow.signals.get(signal_id)
        assert stored is not None and stored.status == "processing"


def test_a_row_written_twice_under_the_lock_is_sent_in_order(
    factory: SqlUnitOfWorkFactory,
) -> None:
    with factory.begin() as uow:
        snap = uow.portfolio.lock()
        uow.portfolio.save(ChangeSet(statistics={"exits_rejected": 1}), snap.version)
        uow.statistics.add({"exits_rejected": 2})  # the same counter row: two statements
        uow.commit()
    with factory.begin(read_only=True) as uow:
        assert uow.statistics.read()["exits_rejected"] == 3.0


def test_positions_written_are_cached_exactly_as_a_read_returns_them(
    factory: SqlUnitOfWorkFactory,
) -> None:
    """The write-through position cache: after commit, what a fresh read would give."""
    ist = dt.timezone(dt.timedelta(hours=5, minutes=30))
    at = dt.datetime(2025, 11, 28, 15, 1, 2, 345678, tzinfo=ist)
    inst = gold_mini()
    base = make_position(inst, id=-1, lots=3, entry=78_123.45, stop=77_001.1)
    pyramid = make_position(
        inst, id=-2, label="Long_2", entry=78_900.05, stop=78_000.0, is_base=False
    )
    opened = (
        base.replace(entry_timestamp=at),
        pyramid.replace(entry_timestamp=at, anchor_base_id=-1),
    )
    with factory.begin() as uow:
        snap = uow.portfolio.lock()
        uow.portfolio.save(ChangeSet(create=opened), snap.version)
        uow.commit()
    with factory.begin() as uow:
        snap = uow.portfolio.lock()
        first = snap.positions[0]
        closing = first.replace(
            status="closing",
            pending_exit=PendingExit(1, 79_000.5, "partial", at, "open", "a" * 64),
        )
        uow.portfolio.save(ChangeSet(update=(closing,)), snap.version)
        uow.commit()
    with factory.engine.connect() as conn:
        rows = conn.execute(sa.select(portfolio_positions).order_by(portfolio_positions.c.id))
        stored = [rowconv.position_from_row(r._mapping) for r in rows]
    cached = [factory.positions_cache.get(p.id, p.version) for p in stored]
    assert cached == stored
    assert stored[0].pending_exit is not None and stored[1].anchor_base_id == stored[0].id
    assert all(c is not None and c.entry_timestamp.utcoffset() == dt.timedelta(0) for c in cached)


def _queued(factory: SqlUnitOfWorkFactory, fp: str, minute: int) -> int:
    signal = Signal(
        "EXIT", "GOLD_MINI", "Long_1", 79_000.0, 0.0, 1, 500.0, 0.7, 0.0,
        T0 + dt.timedelta(minutes=minute),
    )  # fmt: skip
    with factory.begin() as uow:
        claim = uow.signals.claim(signal, fp, T0, "inst-a")
        assert isinstance(claim, Claimed)
        uow.signals.set_state(claim.id, "queued", claim.epoch)
        uow.commit()
    return claim.id


def test_near_under_the_lock_counts_the_barrier_so_an_empty_one_costs_nothing_more(
    factory: SqlUnitOfWorkFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _statements(factory, monkeypatch)
    with factory.begin() as uow:
        uow.portfolio.lock()
        del seen[:]
        assert uow.signals.near("GOLD_MINI", "EXIT", "Long_1", T0, 60.0) == []
        assert uow.intents.open_for("GOLD_MINI") == []
        assert uow.signals.oldest_queued("GOLD_MINI") is None
        assert len(seen) == 1  # the near look-up carried both counts
        assert uow.signals.oldest_queued("GOLD_MINI") is None  # answered once: asks again
        assert len(seen) == 2
    first = _queued(factory, "1" * 64, 0)
    _queued(factory, "2" * 64, 10)
    with factory.begin() as uow:
        uow.portfolio.lock()
        del seen[:]
        near = uow.signals.near("GOLD_MINI", "EXIT", "Long_1", T0, 60.0)
        assert [r.signal_id for r in near] == [first]
        assert uow.intents.open_for("GOLD_MINI") == [] and len(seen) == 1
        oldest = uow.signals.oldest_queued("GOLD_MINI")  # not empty: read for real
        assert oldest is not None and oldest.id == first and len(seen) == 2
    with factory.begin() as uow:
        uow.portfolio.lock()
        assert uow.signals.near("BANK_NIFTY", "EXIT", "Long_1", T0, 60.0) == []
        # This unit queues a BANK_NIFTY signal after the probe: its "none queued" is void.
        signal = Signal("EXIT", "BANK_NIFTY", "Long_1", 52_000.0, 0.0, 1, 300.0, 0.7, 0.0, T0)
        claim = uow.signals.claim(signal, "3" * 64, T0, "inst-a")
        assert isinstance(claim, Claimed)
        uow.signals.set_state(claim.id, "queued", claim.epoch)
        queued = uow.signals.oldest_queued("BANK_NIFTY")
        assert queued is not None and queued.id == claim.id


def test_a_snapshot_taken_after_waiting_for_the_lock_sees_what_the_holder_committed(
    factory: SqlUnitOfWorkFactory,
) -> None:
    """pm_portfolio_snapshot(true) reads after the lock is granted, not before the wait."""
    import threading
    import time

    holder = factory.begin()
    holder.__enter__()
    snap = holder.portfolio.lock()
    got: list[Any] = []

    def waiter() -> None:
        with factory.begin() as uow:
            got.append(uow.portfolio.lock())

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.3)  # the waiter is now queued on the portfolio row
    assert got == []
    holder.portfolio.save(ChangeSet(marks={"GOLD_MINI": Mark(79_123.0, 500.0, T0)}), snap.version)
    holder.commit()
    thread.join(10)
    (seen,) = got
    assert seen.version == snap.version + 1
    assert seen.marks["GOLD_MINI"].price == 79_123.0


def _leg(coid: str, position_id: int) -> OrderIntent:
    leg: OrderIntent = make_intent(coid, position_id, quantity=1, lots=1, instrument="GOLD_MINI")
    return leg


def test_under_the_lock_new_positions_and_intents_go_out_with_the_commit(
    factory: SqlUnitOfWorkFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """T1's reservation: ids drawn ahead, every row in the one statement before COMMIT."""
    inst = gold_mini()
    base = make_position(inst, id=-1, lots=2, entry=78_000.0, stop=77_000.0)
    pyramid = make_position(
        inst, id=-2, label="Long_2", entry=78_600.0, stop=78_000.0, is_base=False
    ).replace(anchor_base_id=-1)
    seen = _statements(factory, monkeypatch)
    with factory.begin() as uow:
        snap = uow.portfolio.lock()
        del seen[:]
        ids = uow.portfolio.save(ChangeSet(create=(base, pyramid)), snap.version)
        intent_ids = uow.intents.add([_leg("pm-a-1-FUT-1", -1), _leg("pm-a-2-FUT-1", -2)], None)
        assert all("nextval" in sql for sql in seen)  # only ids drawn so far
        del seen[:]
        uow.commit()
    assert len(seen) == 1 and seen[0].startswith("WITH w0 AS (UPDATE portfolio_state")
    with factory.begin(read_only=True) as uow:
        after = uow.portfolio.read()
        stored = [uow.intents.get(i) for i in intent_ids]
    by_label = {p.label: p for p in after.positions}
    assert {p.id for p in after.positions} == {ids[-1], ids[-2]}
    assert by_label["Long_2"].anchor_base_id == by_label["Long_1"].id == ids[-1]
    assert [s.intent.position_id if s else None for s in stored] == [ids[-1], ids[-2]]


def test_a_duplicate_client_order_id_under_the_lock_fails_the_commit(
    factory: SqlUnitOfWorkFactory,
) -> None:
    inst = gold_mini()
    with factory.begin() as uow:
        snap = uow.portfolio.lock()
        ids = uow.portfolio.save(
            ChangeSet(create=(make_position(inst, id=-1, entry=78_000.0, stop=77_000.0),)),
            snap.version,
        )
        uow.intents.add([_leg("pm-dup-1-FUT-1", ids[-1])], None)
        uow.commit()
    with factory.begin() as uow, pytest.raises(DuplicateKey):
        snap = uow.portfolio.lock()
        uow.portfolio.save(ChangeSet(statistics={"orders_placed": 1}), snap.version)
        uow.intents.add([_leg("pm-dup-1-FUT-1", ids[-1])], None)
        uow.commit()
    with factory.begin(read_only=True) as uow:
        assert uow.portfolio.read().version == snap.version
        assert uow.statistics.read()["orders_placed"] == 0.0


def test_snapshot_rows_repeat_from_the_memo_and_changes_are_always_seen(
    two_instances: tuple[SqlUnitOfWorkFactory, ...],
) -> None:
    """What one instance writes the other reads at once, though both serve unchanged
    per-instrument rows from their memo and unchanged positions from their cache."""
    a, b = two_instances
    first = ChangeSet(
        create=(make_position(gold_mini(), id=-1, lots=2, entry=78_000.0, stop=77_000.0),),
        marks={"GOLD_MINI": Mark(79_000.0, 500.0, T0), "BANK_NIFTY": Mark(50_000.0, 300.0, T0)},
        pyramiding={"GOLD_MINI": PyramidingState(None, 79_000.0)},
    )
    with a.begin() as uow:
        uow.portfolio.save(first, uow.portfolio.lock().version)
        uow.commit()
    with a.begin() as uow:
        before = uow.portfolio.lock()
    with b.begin() as uow:  # the other instance moves one instrument only
        snap = uow.portfolio.lock()
        later = T0 + dt.timedelta(minutes=1)
        (opened,) = snap.positions
        changes = ChangeSet(
            update=(opened.replace(current_stop=78_100.0),),
            marks={"GOLD_MINI": Mark(79_400.0, 510.0, later)},
            pyramiding={"GOLD_MINI": PyramidingState(None, 79_400.0)},
            blocks={"GOLD_MINI": Block("reconciliation", later, {})},
        )
        uow.portfolio.save(changes, snap.version)
        uow.commit()
    with a.begin() as uow:
        after = uow.portfolio.lock()
    # The position the other instance moved is read again, at its new version.
    assert [(p.current_stop, p.version) for p in after.positions] == [(78_100.0, 2)]
    assert before.positions[0].current_stop == 77_000.0
    assert after.marks["GOLD_MINI"] == Mark(79_400.0, 510.0, later)
    assert after.pyramiding["GOLD_MINI"] == PyramidingState(None, 79_400.0)
    assert after.blocks["GOLD_MINI"].reason == "reconciliation"
    # The unchanged instrument's values were converted once and are shared (frozen).
    assert after.marks["BANK_NIFTY"] is before.marks["BANK_NIFTY"]
    assert after.marks["BANK_NIFTY"] == Mark(50_000.0, 300.0, T0)


_SETTINGS_Q = sa.text(
    "SELECT current_setting('transaction_isolation') AS isolation,"
    " current_setting('transaction_read_only') AS read_only, txid_current_if_assigned() AS tx"
).columns(
    sa.column("isolation", sa.String),
    sa.column("read_only", sa.String),
    sa.column("tx", sa.Integer),
)


@pytest.mark.parametrize(
    ("kind", "read_only", "expected"),
    [
        ("signal", False, ("read committed", "off")),
        ("signal", True, ("repeatable read", "on")),
        ("repair", False, ("serializable", "off")),
    ],
)
@pytest.mark.parametrize("first", ["driver", "core"])
def test_a_unit_opens_its_transaction_before_its_first_statement(
    factory: SqlUnitOfWorkFactory,
    monkeypatch: pytest.MonkeyPatch,
    kind: Any,
    read_only: bool,
    expected: tuple[str, str],
    first: str,
) -> None:
    seen = _statements(factory, monkeypatch)
    with factory.begin(kind, read_only=read_only) as uow:
        row = uow.fetch(_SETTINGS_Q)[0] if first == "driver" else uow.x(_SETTINGS_Q).one()
        assert (row.isolation, row.read_only) == expected
        # Still the same transaction: a later statement runs at the same isolation.
        later = uow.x(sa.text("SELECT current_setting('transaction_isolation')")).scalar()
        assert later == expected[0]
    assert seen[0].startswith("BEGIN ISOLATION LEVEL")
    assert sum(1 for sql in seen if sql.startswith("BEGIN")) == 1


def test_a_unit_that_writes_first_and_rolls_back_leaves_nothing(
    factory: SqlUnitOfWorkFactory,
) -> None:
    signal = Signal("EXIT", "GOLD_MINI", "Long_1", 79_000.0, 0.0, 1, 500.0, 0.7, 0.0, T0)
    with factory.begin() as uow:
        claim = uow.signals.claim(signal, "f" * 64, T0, "inst-a")  # the unit's first statement
        assert isinstance(claim, Claimed)
        assert uow.signals.by_fingerprint("f" * 64) is not None
        uow.rollback()
    with factory.begin(read_only=True) as uow:
        assert uow.signals.by_fingerprint("f" * 64) is None


def test_plain_reads_run_before_the_transaction_opens(
    factory: SqlUnitOfWorkFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A READ COMMITTED unit that only reads opens no transaction (no BEGIN, so no COMMIT);
    one that reads first opens it before its first write or lock, and it holds to the end."""
    signal_id, _ = _claimed(factory, "d" * 64)
    seen = _statements(factory, monkeypatch)
    with factory.begin() as uow:  # the queue check after a signal: usually nothing queued
        assert uow.signals.oldest_queued("BANK_NIFTY") is None
        uow.commit()
    assert len(seen) == 1 and seen[0].startswith("SELECT")

    del seen[:]
    with factory.begin() as uow:  # T2's shape: its intents, then the portfolio lock
        assert uow.intents.for_signal(signal_id) == []
        uow.portfolio.lock()
        uow.x(sa.text("UPDATE trading_statistics SET value = 7 WHERE name = 'exits_rejected'"))
        uow.rollback()
    assert seen[0].startswith("SELECT order_intents") and seen[1].startswith("BEGIN")
    with factory.begin(read_only=True) as uow:
        assert uow.statistics.read()["exits_rejected"] == 0.0  # rolled back as one
