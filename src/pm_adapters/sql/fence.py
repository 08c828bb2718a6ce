"""The leader fence row (service.md 3): strictly increasing epochs, expiry on the DB clock.

PostgreSQL runs the spec's statements as written (``now()`` is the database clock). SQLite
is one host, so the host clock is the database clock; its single UPDATE takes the write lock
(the equivalent of BEGIN IMMEDIATE) before it reads the row, so two processes cannot both
win. Every acquisition opens a leadership_history row; every loss closes it with a reason.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import attrs
import sqlalchemy as sa

from pm_adapters.sql.tables import leader_fence, leadership_history
from pm_core.errors import DatabaseUnavailable, FencedError

UTC = dt.UTC
ReleaseReason = Literal["resigned", "lease_lost", "fenced", "redis_lost", "crashed_detected"]

_PG_ACQUIRE = sa.text(
    "UPDATE leader_fence SET epoch = epoch + 1, holder = :me, acquired_at = now(), "
    "expires_at = now() + :lease_ms * interval '1 millisecond' "
    "WHERE id = 1 AND (holder IS NULL OR holder = :me OR expires_at < now()) "
    "RETURNING epoch"
)
_PG_RENEW = sa.text(
    "UPDATE leader_fence SET expires_at = now() + :lease_ms * interval '1 millisecond' "
    "WHERE id = 1 AND holder = :me AND epoch = :mine"
)
_PG_RELEASE = sa.text(
    "UPDATE leader_fence SET holder = NULL, expires_at = now() "
    "WHERE id = 1 AND holder = :me AND epoch = :mine"
)
_ENSURE_ROW = sa.text(
    "INSERT INTO leader_fence (id, epoch) VALUES (1, 0) ON CONFLICT (id) DO NOTHING"
)


@attrs.frozen
class FenceState:
    """The fence row as read, with ``live`` judged on the database clock."""

    epoch: int
    holder: str | None
    expires_at: dt.datetime | None
    live: bool


def db_now(conn: sa.Connection) -> dt.datetime:
    """The database clock (PostgreSQL ``now()``; SQLite: this host's UTC clock)."""
    if conn.dialect.name == "postgresql":
        value = conn.execute(sa.text("SELECT now()")).scalar_one()
        assert isinstance(value, dt.datetime)
        return value.astimezone(UTC)
    return dt.datetime.now(UTC)


def check_fence(conn: sa.Connection, epoch: int) -> None:
    """Start of every leader-job transaction: FencedError unless ``epoch`` is current.

    PostgreSQL: ``FOR SHARE`` makes a competing epoch bump wait until this job commits.
    SQLite: a no-op write takes the database write lock first (as BEGIN IMMEDIATE would).
    """
    if conn.dialect.name == "postgresql":
        row = conn.execute(
            sa.text("SELECT epoch, holder FROM leader_fence WHERE id = 1 FOR SHARE")
        ).one_or_none()
    else:
        conn.execute(sa.text("UPDATE leader_fence SET epoch = epoch WHERE id = 1"))
        row = conn.execute(
            sa.text("SELECT epoch, holder FROM leader_fence WHERE id = 1")
        ).one_or_none()
    if row is None or row.holder is None or int(row.epoch) != epoch:
        current = None if row is None else int(row.epoch)
        raise FencedError(f"leader epoch {epoch} is not current (fence epoch {current})")


@contextmanager
def translate_db_errors() -> Iterator[None]:
    """Connection failures become DatabaseUnavailable (callers treat them as a missed round)."""
    try:
        yield
    except sa.exc.OperationalError as exc:
        raise DatabaseUnavailable(f"database: {type(exc.orig).__name__}") from exc
    except sa.exc.InterfaceError as exc:
        raise DatabaseUnavailable(f"database: {type(exc.orig).__name__}") from exc


class SqlFence:
    """leader_fence + leadership_history; also the FenceRepository ``check`` for jobs."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._pg = engine.dialect.name == "postgresql"
        # With pm_adapters.sql.retry.create_engine, SQLite writers begin IMMEDIATE.
        self._writer = engine.execution_options(pm_sqlite_begin="IMMEDIATE")
        with translate_db_errors(), self._writer.begin() as conn:
            conn.execute(_ENSURE_ROW)

    def acquire(self, holder: str, lease_ms: int, *, mode: str = "database-only") -> int | None:
        """The conditional UPDATE of service.md 3: the new epoch, or None if someone holds it."""
        with translate_db_errors(), self._writer.begin() as conn:
            now = db_now(conn)
            if self._pg:
                epoch = conn.execute(_PG_ACQUIRE, {"me": holder, "lease_ms": lease_ms}).scalar()
            else:
                f = leader_fence.c
                epoch = conn.execute(
                    sa.update(leader_fence)
                    .where(
                        f.id == 1,
                        sa.or_(f.holder.is_(None), f.holder == holder, f.expires_at < now),
                    )
                    .values(
                        epoch=f.epoch + 1,
                        holder=holder,
                        acquired_at=now,
                        expires_at=now + dt.timedelta(milliseconds=lease_ms),
                    )
                    .returning(f.epoch)
                ).scalar()
            if epoch is None:
                return None
            epoch = int(epoch)
            # The previous holder lost its lease without resigning.
            self._close_open(conn, now, "lease_lost", before_epoch=epoch)
            conn.execute(
                sa.insert(leadership_history).values(
                    instance_id=holder, epoch=epoch, mode=mode, acquired_at=now
                )
            )
            return epoch

    def renew(self, holder: str, epoch: int, lease_ms: int) -> bool:
        """Push the expiry out; False (zero rows) means fenced: someone else holds it now."""
        with translate_db_errors(), self._writer.begin() as conn:
            now = db_now(conn)
            if self._pg:
                count = conn.execute(
                    _PG_RENEW, {"me": holder, "mine": epoch, "lease_ms": lease_ms}
                ).rowcount
            else:
                f = leader_fence.c
                count = conn.execute(
                    sa.update(leader_fence)
                    .where(f.id == 1, f.holder == holder, f.epoch == epoch)
                    .values(expires_at=now + dt.timedelta(milliseconds=lease_ms))
                ).rowcount
            if count == 0:
                self._close(conn, now, epoch, "fenced")
                return False
            return True

    def release(self, holder: str, epoch: int, reason: ReleaseReason = "resigned") -> None:
        """Give the fence up at once (holder NULL, expiry now); closes the history row."""
        with translate_db_errors(), self._writer.begin() as conn:
            now = db_now(conn)
            if self._pg:
                conn.execute(_PG_RELEASE, {"me": holder, "mine": epoch})
            else:
                f = leader_fence.c
                conn.execute(
                    sa.update(leader_fence)
                    .where(f.id == 1, f.holder == holder, f.epoch == epoch)
                    .values(holder=None, expires_at=now)
                )
            self._close(conn, now, epoch, reason)

    def close_history(self, epoch: int, reason: ReleaseReason) -> None:
        """Close the history row of ``epoch`` if it is still open."""
        with translate_db_errors(), self._writer.begin() as conn:
            self._close(conn, db_now(conn), epoch, reason)

    def state(self) -> FenceState:
        """The fence row now; ``live`` when held and not expired on the database clock."""
        with translate_db_errors(), self.engine.connect() as conn:
            now = db_now(conn)
            row = conn.execute(
                sa.select(
                    leader_fence.c.epoch, leader_fence.c.holder, leader_fence.c.expires_at
                ).where(leader_fence.c.id == 1)
            ).one()
            conn.rollback()
        live = row.holder is not None and row.expires_at is not None and row.expires_at >= now
        return FenceState(int(row.epoch), row.holder, row.expires_at, live)

    def check(self, epoch: int) -> None:
        """FencedError unless ``epoch`` is the current leader epoch."""
        with translate_db_errors(), self._writer.begin() as conn:
            check_fence(conn, epoch)

    @contextmanager
    def fenced(self, epoch: int) -> Iterator[sa.Connection]:
        """A transaction for a leader job, begun with the fence check; commits on success."""
        with translate_db_errors(), self._writer.begin() as conn:
            check_fence(conn, epoch)
            yield conn

    def _close(
        self, conn: sa.Connection, now: dt.datetime, epoch: int, reason: ReleaseReason
    ) -> None:
        h = leadership_history.c
        row = conn.execute(
            sa.select(h.id, h.acquired_at).where(h.epoch == epoch, h.released_at.is_(None))
        ).one_or_none()
        if row is not None:
            self._close_row(conn, row.id, row.acquired_at, now, reason)

    def _close_open(
        self, conn: sa.Connection, now: dt.datetime, reason: ReleaseReason, *, before_epoch: int
    ) -> None:
        h = leadership_history.c
        rows = conn.execute(
            sa.select(h.id, h.acquired_at).where(h.released_at.is_(None), h.epoch < before_epoch)
        ).all()
        for row in rows:
            self._close_row(conn, row.id, row.acquired_at, now, reason)

    @staticmethod
    def _close_row(
        conn: sa.Connection,
        row_id: int,
        acquired_at: dt.datetime,
        now: dt.datetime,
        reason: ReleaseReason,
    ) -> None:
        duration_ms = max(0, int((now - acquired_at).total_seconds() * 1000))
        conn.execute(
            sa.update(leadership_history)
            .where(leadership_history.c.id == row_id)
            .values(released_at=now, duration_ms=duration_ms, release_reason=reason)
        )
