"""InstanceRegistry on instance_metadata (service.md 2.5, 3), timed by the database clock.

A database heartbeat is fresh while younger than PM_INSTANCE_STALE_S. ``crashed`` is final:
an instance declared dead has been taken over, so a late heartbeat does not revive it (it
must restart under a new id).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable

import attrs
import sqlalchemy as sa

from pm_adapters.sql.fence import db_now, translate_db_errors
from pm_adapters.sql.tables import instance_metadata, leadership_history
from pm_core.ports import InstanceInfo, Lease

DEAD_STATUSES = ("stopped", "crashed")
INSTANCE_STATUSES = frozenset({"starting", "active", "draining", "stopped", "crashed"})


def new_instance_id(name: str) -> str:
    """``<PM_INSTANCE_NAME or hostname>-<8 random hex>``, new for every process (service.md 3)."""
    if not name or "|" in name:
        raise ValueError("instance name must be non-empty and must not contain '|'")
    return f"{name}-{secrets.token_hex(4)}"


@attrs.frozen
class InstanceRow:
    """One instance_metadata row as the CLI and health views show it."""

    instance_id: str
    instance_name: str | None
    hostname: str | None
    port: int | None
    pid: int | None
    status: str
    last_heartbeat: dt.datetime
    is_leader: bool
    leader_epoch: int | None
    mode: str | None


class SqlInstanceRegistry:
    """Instances, heartbeats and liveness in the database."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        stale_s: float = 15.0,
        leadership: Callable[[], Lease | None] | None = None,
    ) -> None:
        if stale_s <= 0:
            raise ValueError("PM_INSTANCE_STALE_S must be positive")
        self.engine = engine
        self.stale_s = stale_s
        self._writer = engine.execution_options(pm_sqlite_begin="IMMEDIATE")
        # Where heartbeats learn whether this process leads (is_leader, leader_epoch columns).
        self.leadership = leadership

    def register(self, info: InstanceInfo) -> str:
        with translate_db_errors(), self._writer.begin() as conn:
            now = db_now(conn)
            conn.execute(
                sa.insert(instance_metadata).values(
                    instance_id=info.instance_id,
                    instance_name=info.instance_name,
                    hostname=info.hostname,
                    port=info.port,
                    pid=info.pid,
                    version=info.version,
                    started_at=now,
                    last_heartbeat=now,
                    status="starting",
                    is_leader=False,
                    updated_at=now,
                )
            )
        return info.instance_id

    def heartbeat(
        self,
        instance_id: str,
        status: str = "active",
        *,
        is_leader: bool | None = None,
        leader_epoch: int | None = None,
        mode: str | None = None,
    ) -> None:
        if status not in INSTANCE_STATUSES:
            raise ValueError(f"unknown instance status {status!r}")
        if is_leader is None and self.leadership is not None:
            lease = self.leadership()
            is_leader = lease is not None and lease.holder == instance_id
            leader_epoch = lease.epoch if lease is not None and is_leader else None
        m = instance_metadata.c
        with translate_db_errors(), self._writer.begin() as conn:
            now = db_now(conn)
            values: dict[str, object] = {"last_heartbeat": now, "status": status, "updated_at": now}
            if status in DEAD_STATUSES:
                values["stopped_at"] = now
                values["is_leader"] = False
            if is_leader is not None:
                values["is_leader"] = is_leader
                values["leader_epoch"] = leader_epoch if is_leader else None
            if mode is not None:
                values["mode"] = mode
            result = conn.execute(
                sa.update(instance_metadata)
                .where(m.instance_id == instance_id, m.status != "crashed")
                .values(**values)
            )
            if result.rowcount == 0:
                exists = conn.execute(
                    sa.select(m.status).where(m.instance_id == instance_id)
                ).scalar_one_or_none()
                if exists is None:
                    raise KeyError(f"instance {instance_id!r} is not registered")

    def db_fresh(self, instance_id: str) -> bool | None:
        """Is the database heartbeat fresh (None: unknown instance or stopped/crashed)."""
        m = instance_metadata.c
        with translate_db_errors(), self.engine.connect() as conn:
            now = db_now(conn)
            row = conn.execute(
                sa.select(m.status, m.last_heartbeat).where(m.instance_id == instance_id)
            ).one_or_none()
            conn.rollback()
        if row is None or row.status in DEAD_STATUSES:
            return None
        return bool((now - row.last_heartbeat).total_seconds() < self.stale_s)

    def is_live(self, instance_id: str) -> bool:
        return bool(self.db_fresh(instance_id))

    def mark_crashed(self, instance_id: str) -> None:
        m = instance_metadata.c
        h = leadership_history.c
        with translate_db_errors(), self._writer.begin() as conn:
            now = db_now(conn)
            changed = conn.execute(
                sa.update(instance_metadata)
                .where(m.instance_id == instance_id, m.status.not_in(DEAD_STATUSES))
                .values(status="crashed", stopped_at=now, updated_at=now, is_leader=False)
            ).rowcount
            if not changed:
                return
            for row in conn.execute(
                sa.select(h.id, h.acquired_at).where(
                    h.instance_id == instance_id, h.released_at.is_(None)
                )
            ).all():
                conn.execute(
                    sa.update(leadership_history)
                    .where(h.id == row.id)
                    .values(
                        released_at=now,
                        duration_ms=max(0, int((now - row.acquired_at).total_seconds() * 1000)),
                        release_reason="crashed_detected",
                    )
                )

    def stale_instances(self) -> list[str]:
        """Instances not stopped/crashed whose database heartbeat is older than the threshold."""
        m = instance_metadata.c
        with translate_db_errors(), self.engine.connect() as conn:
            cutoff = db_now(conn) - dt.timedelta(seconds=self.stale_s)
            ids = conn.execute(
                sa.select(m.instance_id).where(
                    m.status.not_in(DEAD_STATUSES), m.last_heartbeat <= cutoff
                )
            ).scalars()
            result = [str(i) for i in ids]
            conn.rollback()
        return result

    def live_instances(self) -> list[str]:
        """Instances whose database heartbeat is fresh and status not stopped/crashed."""
        m = instance_metadata.c
        with translate_db_errors(), self.engine.connect() as conn:
            cutoff = db_now(conn) - dt.timedelta(seconds=self.stale_s)
            ids = conn.execute(
                sa.select(m.instance_id).where(
                    m.status.not_in(DEAD_STATUSES), m.last_heartbeat > cutoff
                )
            ).scalars()
            result = [str(i) for i in ids]
            conn.rollback()
        return result

    def instances(self) -> list[InstanceRow]:
        """Every registered instance, newest heartbeat first."""
        m = instance_metadata.c
        with translate_db_errors(), self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    m.instance_id,
                    m.instance_name,
                    m.hostname,
                    m.port,
                    m.pid,
                    m.status,
                    m.last_heartbeat,
                    m.is_leader,
                    m.leader_epoch,
                    m.mode,
                ).order_by(m.last_heartbeat.desc())
            ).all()
            conn.rollback()
        return [InstanceRow(**row._asdict()) for row in rows]
