"""The SQL snapshot's position cache never serves a row another writer changed, nor an
uncommitted one: two factories on one database play two instances."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pm_adapters.sql import migrations
from pm_adapters.sql.retry import create_engine
from pm_adapters.sql.uow import SqlUnitOfWorkFactory
from pm_core.config import gold_mini
from pm_core.model import ChangeSet
from tests.strategies import make_position


@pytest.fixture
def instances(tmp_path: Path) -> Iterator[tuple[SqlUnitOfWorkFactory, SqlUnitOfWorkFactory]]:
    url = f"sqlite:///{tmp_path / 'pm.sqlite3'}"
    engines = [create_engine(url), create_engine(url)]
    migrations.upgrade(engines[0])
    a, b = (SqlUnitOfWorkFactory(e) for e in engines)
    a.initialise(5_000_000.0)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def _open(factory: SqlUnitOfWorkFactory) -> int:
    position = make_position(gold_mini(), id=-1, lots=2, entry=78_000.0, stop=77_000.0)
    with factory.begin() as unit:
        snapshot = unit.portfolio.lock()
        ids = unit.portfolio.save(ChangeSet(create=(position,)), snapshot.version)
        unit.commit()
    return ids[-1]


def _lots(factory: SqlUnitOfWorkFactory) -> list[int]:
    with factory.begin() as unit:
        return [p.lots for p in unit.portfolio.lock().positions]


def test_a_change_by_another_instance_is_seen(
    instances: tuple[SqlUnitOfWorkFactory, SqlUnitOfWorkFactory],
) -> None:
    a, b = instances
    _open(a)
    assert _lots(a) == [2] and _lots(b) == [2]  # both caches now hold version 1
    with b.begin() as unit:
        snapshot = unit.portfolio.lock()
        (position,) = snapshot.positions
        changed = position.replace(lots=1, quantity=1)
        unit.portfolio.save(ChangeSet(update=(changed,)), snapshot.version)
        unit.commit()
    assert _lots(a) == [1]


def test_an_uncommitted_change_is_never_cached(
    instances: tuple[SqlUnitOfWorkFactory, SqlUnitOfWorkFactory],
) -> None:
    a, b = instances
    _open(a)
    with a.begin() as unit:
        snapshot = unit.portfolio.lock()
        (position,) = snapshot.positions
        unit.portfolio.save(
            ChangeSet(update=(position.replace(lots=5, quantity=5),)), snapshot.version
        )
        assert [p.lots for p in unit.portfolio.lock().positions] == [5]
        unit.rollback()
    # Another writer now commits the same row version with other content: it must win.
    with b.begin() as unit:
        snapshot = unit.portfolio.lock()
        (position,) = snapshot.positions
        unit.portfolio.save(
            ChangeSet(update=(position.replace(lots=1, quantity=1),)), snapshot.version
        )
        unit.commit()
    assert _lots(a) == [1]


def test_closed_positions_leave_the_snapshot(
    instances: tuple[SqlUnitOfWorkFactory, SqlUnitOfWorkFactory],
) -> None:
    a, b = instances
    _open(a)
    assert _lots(a) == [2]
    with b.begin() as unit:
        snapshot = unit.portfolio.lock()
        (position,) = snapshot.positions
        unit.portfolio.save(
            ChangeSet(update=(position.replace(status="closed"),)), snapshot.version
        )
        unit.commit()
    assert _lots(a) == []


def test_a_partial_update_stores_the_whole_new_record(
    instances: tuple[SqlUnitOfWorkFactory, SqlUnitOfWorkFactory],
) -> None:
    a, b = instances
    _open(a)
    with a.begin() as unit:
        snapshot = unit.portfolio.lock()  # caches the row: the update below writes a diff
        (position,) = snapshot.positions
        marked = position.replace(
            unrealized_pnl=12_345.5, highest_close=79_000.0, current_stop=77_100.0
        )
        unit.portfolio.save(ChangeSet(update=(marked,)), snapshot.version)
        unit.commit()
    with b.begin() as unit:  # the other instance converts the row from scratch
        (stored,) = unit.portfolio.lock().positions
    assert stored == marked.replace(version=marked.version + 1)
