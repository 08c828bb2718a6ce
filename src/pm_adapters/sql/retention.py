"""Retention cleanup, the first leader job (service.md 12).

Deletes in fenced batches of PM_RETENTION_BATCH, each batch its own transaction that starts
with the fence check, so a deposed leader deletes nothing:
- terminal signal_log rows older than ``duplicate_retention_days`` with their intents, except
  rows linked to a live position and rows not older than the oldest live position's entry on
  their instrument (recovery and duplicate checks may still need them);
- closed leadership_history rows after 90 days;
- stopped/crashed instance_metadata rows after 7 days.
equity_ledger is never touched. With an archive directory each batch is first written as
gzip JSON lines; a failed write aborts the batch.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import sqlalchemy as sa

from pm_adapters.sql.fence import check_fence, db_now, translate_db_errors
from pm_adapters.sql.tables import (
    LIVE_POSITION_STATUSES,
    instance_metadata,
    leadership_history,
    order_intents,
    portfolio_positions,
    signal_log,
)

TERMINAL_SIGNAL_STATES = (
    "executed",
    "partially_executed",
    "blocked",
    "rejected",
    "failed",
    "duplicate",
)


@attrs.frozen
class RetentionPolicy:
    """How long rows are kept and how many go per batch."""

    signal_days: int = 7
    history_days: int = 90
    instance_days: int = 7
    batch: int = 5000
    archive_dir: Path | None = None

    def __attrs_post_init__(self) -> None:
        if self.batch < 1:
            raise ValueError("PM_RETENTION_BATCH must be at least 1")
        if min(self.signal_days, self.history_days, self.instance_days) < 0:
            raise ValueError("retention days must not be negative")


@attrs.frozen
class RetentionReport:
    """What one run deleted."""

    signals: int = 0
    intents: int = 0
    history: int = 0
    instances: int = 0
    batches: int = 0
    archives: tuple[Path, ...] = ()


def _json_default(value: object) -> object:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    raise TypeError(f"cannot archive {type(value).__name__}")


def _archive(
    directory: Path, name: str, epoch: int, stamp: dt.datetime, batch: int, lines: Sequence[Any]
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{stamp:%Y%m%dT%H%M%S}-e{epoch}-b{batch:05d}.jsonl.gz"
    tmp = path.with_suffix(".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as out:
        for line in lines:
            out.write(json.dumps(line, default=_json_default, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def _rows(rows: Sequence[sa.Row[Any]]) -> list[Mapping[str, Any]]:
    return [dict(row._mapping) for row in rows]


def run_retention(engine: sa.Engine, epoch: int, policy: RetentionPolicy) -> RetentionReport:
    """Delete what retention allows, batch by batch, under the leader fence ``epoch``."""
    signals = intents = history = instances = batches = 0
    archives: list[Path] = []
    live = tuple(LIVE_POSITION_STATUSES)
    s = signal_log.c
    p = portfolio_positions.c
    writer = engine.execution_options(pm_sqlite_begin="IMMEDIATE")

    while True:
        with translate_db_errors(), writer.begin() as conn:
            check_fence(conn, epoch)
            now = db_now(conn)
            cutoff = now - dt.timedelta(days=policy.signal_days)
            linked = sa.exists().where(
                p.status.in_(live),
                sa.or_(p.opened_by_signal_id == s.id, p.closed_by_signal_id == s.id),
            )
            newer_than_oldest_live_entry = sa.exists().where(
                p.status.in_(live),
                p.instrument == s.instrument,
                p.entry_timestamp <= s.received_at,
            )
            batch_rows = conn.execute(
                sa.select(signal_log)
                .where(
                    s.status.in_(TERMINAL_SIGNAL_STATES),
                    s.received_at < cutoff,
                    ~linked,
                    ~newer_than_oldest_live_entry,
                )
                .order_by(s.id)
                .limit(policy.batch)
            ).all()
            if not batch_rows:
                break
            ids = [row.id for row in batch_rows]
            intent_rows = conn.execute(
                sa.select(order_intents).where(order_intents.c.signal_id.in_(ids))
            ).all()
            if policy.archive_dir is not None:
                lines = [{"table": "signal_log", "row": row} for row in _rows(batch_rows)]
                lines += [{"table": "order_intents", "row": row} for row in _rows(intent_rows)]
                archives.append(
                    _archive(policy.archive_dir, "signal_log", epoch, now, batches, lines)
                )
            intents += conn.execute(
                sa.delete(order_intents).where(order_intents.c.signal_id.in_(ids))
            ).rowcount
            # Near-duplicate rows may point at a deleted original; keep them, unlinked.
            conn.execute(
                sa.update(signal_log).where(s.duplicate_of_id.in_(ids)).values(duplicate_of_id=None)
            )
            signals += conn.execute(sa.delete(signal_log).where(s.id.in_(ids))).rowcount
            batches += 1
        if len(batch_rows) < policy.batch:
            break

    for table in ("leadership_history", "instance_metadata"):
        while True:
            with translate_db_errors(), writer.begin() as conn:
                check_fence(conn, epoch)
                now = db_now(conn)
                if table == "leadership_history":
                    h = leadership_history.c
                    cutoff = now - dt.timedelta(days=policy.history_days)
                    query = (
                        sa.select(leadership_history)
                        .where(h.released_at.is_not(None), h.released_at < cutoff)
                        .order_by(h.id)
                        .limit(policy.batch)
                    )
                    rows = conn.execute(query).all()
                    keys = [row.id for row in rows]
                    delete = sa.delete(leadership_history).where(h.id.in_(keys))
                else:
                    m = instance_metadata.c
                    cutoff = now - dt.timedelta(days=policy.instance_days)
                    query = (
                        sa.select(instance_metadata)
                        .where(
                            m.status.in_(("stopped", "crashed")),
                            sa.func.coalesce(m.stopped_at, m.last_heartbeat) < cutoff,
                        )
                        .order_by(m.instance_id)
                        .limit(policy.batch)
                    )
                    rows = conn.execute(query).all()
                    keys = [row.instance_id for row in rows]
                    delete = sa.delete(instance_metadata).where(m.instance_id.in_(keys))
                if not rows:
                    break
                if policy.archive_dir is not None:
                    lines = [{"table": table, "row": row} for row in _rows(rows)]
                    archives.append(_archive(policy.archive_dir, table, epoch, now, batches, lines))
                deleted = conn.execute(delete).rowcount
                if table == "leadership_history":
                    history += deleted
                else:
                    instances += deleted
                batches += 1
            if len(rows) < policy.batch:
                break

    return RetentionReport(signals, intents, history, instances, batches, tuple(archives))
