"""Several writes of one unit of work in one PostgreSQL round trip.

A signal transaction writes a handful of rows whose results are only checked, never read
back: the portfolio version bump, position updates, pyramiding/mark upserts, counters. Sent
one by one they cost a round trip and a statement execution each, which on the request path
is most of the transaction. On PostgreSQL a ``WriteBatch`` sends them as data-modifying CTEs
of one statement (``WITH w0 AS (UPDATE ... RETURNING 1), ... SELECT count(*) ...``) and hands
each write's row count to its check, so version checks stay exact. SQLite has no DML in
CTEs: there the writes run one after another, with the same checks.

Each write is a statement built once at import (bind parameters, no literal values) plus its
parameters. Its SQL is compiled once per (statement, parameter names) and kept: building and
compiling Core constructs per transaction would cost more than the round trips it saves.
PostgreSQL runs the CTEs on one snapshot, so a batch never holds two writes of one row: each
write names its row, and a second write of a queued row sends the queue first.

A unit that holds the portfolio lock keeps one batch open (``SqlUnitOfWork.pending``): under
the lock nobody else can move the versions it checks, so its writes wait for the unit's next
statement or its commit and go out together just before it (T2's save, counters and finish:
one round trip).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Hashable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from pm_adapters.sql import driver

if TYPE_CHECKING:
    from pm_adapters.sql.uow import SqlUnitOfWork

Check = Callable[[int], None]
_PARAM = re.compile(r"%\((\w+)\)s")


@attrs.define
class _Write:
    statement: Any
    params: Mapping[str, Any]
    check: Check | None


@functools.lru_cache(maxsize=512)
def _combined_sql(parts: tuple[str, ...]) -> str:
    ctes = []
    for i, sql in enumerate(parts):
        if "RETURNING" in sql:
            raise ValueError(f"a batched write must not return rows: {sql[:80]}")
        renamed = _PARAM.sub(lambda m: f"%(w{i}_{m.group(1)})s", sql)  # noqa: B023
        ctes.append(f"w{i} AS ({renamed} RETURNING 1)")
    counts = ", ".join(f"(SELECT count(*) FROM w{i})" for i in range(len(parts)))
    return f"WITH {', '.join(ctes)} SELECT {counts}"


@attrs.define
class WriteBatch:
    """Writes collected by a repository call and run together by ``run``."""

    uow: SqlUnitOfWork
    writes: list[_Write] = attrs.field(factory=list)
    rows: set[Hashable] = attrs.field(factory=set)

    def add(
        self,
        statement: Any,
        params: Mapping[str, Any],
        check: Check | None = None,
        *,
        row: Hashable,
    ) -> None:
        """Queue ``statement`` with ``params``; ``check(rowcount)`` raises if it failed.

        ``row`` names the row written. A second write of a row already queued first sends
        the queue: in one statement only one of the two would take effect.
        """
        self.uow.known_empty.clear()  # a write: what a probe showed may no longer hold
        if row in self.rows:
            self.run()
        self.writes.append(_Write(statement, params, check))
        self.rows.add(row)

    def run(self) -> None:
        """Execute every queued write, then run each check on its row count."""
        writes, self.writes = self.writes, []
        self.rows = set()
        if not writes:
            return
        if len(writes) == 1 or not self.uow.is_pg:
            for w in writes:
                done = self.uow.write(w.statement, w.params)
                if w.check is not None:
                    w.check(done)
            return
        dialect = self.uow.factory.engine.dialect
        parts: list[str] = []
        params: dict[str, Any] = {}
        for i, w in enumerate(writes):
            statement = driver.compiled(w.statement, dialect, frozenset(w.params))
            parts.append(statement.sql)
            for name, value in statement.bind(w.params).items():
                params[f"w{i}_{name}"] = value
        counts = self.uow.driver(_combined_sql(tuple(parts)), params).fetchone()
        for w, count in zip(writes, counts, strict=True):
            if w.check is not None:
                w.check(int(count))
