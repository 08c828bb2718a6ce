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
PostgreSQL runs the CTEs on one snapshot, so a batch must not touch a row twice; callers add
writes of distinct rows only (one bump, distinct positions, instruments and counter names).
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from pm_adapters.sql.uow import SqlUnitOfWork

Check = Callable[[int], None]
_PARAM = re.compile(r"%\((\w+)\)s")


@attrs.frozen
class CompiledWrite:
    """A write's SQL with ``%(name)s`` placeholders, and how to bind its parameters."""

    sql: str
    compiled: Any  # sqlalchemy SQLCompiler: construct_params fills defaults (``version + 1``)
    processors: Mapping[str, Callable[[Any], Any]]

    def bind(self, params: Mapping[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = self.compiled.construct_params(params)
        for name, process in self.processors.items():
            values[name] = process(values[name])
        return values


_compiled: dict[tuple[int, frozenset[str]], tuple[Any, CompiledWrite]] = {}
_compiled_lock = threading.Lock()


def compile_write(statement: Any, dialect: Any, keys: frozenset[str]) -> CompiledWrite:
    """The statement compiled for these parameter names (kept for the process lifetime)."""
    key = (id(statement), keys)
    found = _compiled.get(key)
    if found is not None and found[0] is statement:
        return found[1]
    compiled = statement.compile(dialect=dialect, column_keys=sorted(keys))
    sql = str(compiled)
    if "POSTCOMPILE" in sql:
        raise ValueError("expanding parameters cannot be batched")
    processors: dict[str, Callable[[Any], Any]] = {}
    for name, bind in compiled.binds.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            processors[name] = process
    write = CompiledWrite(sql, compiled, processors)
    with _compiled_lock:
        _compiled[key] = (statement, write)  # the statement is kept alive with its id
    return write


@attrs.define
class _Write:
    statement: Any
    params: Mapping[str, Any]
    check: Check | None


@functools.lru_cache(maxsize=512)
def _combined_sql(parts: tuple[str, ...]) -> str:
    ctes = []
    for i, sql in enumerate(parts):
        renamed = _PARAM.sub(lambda m: f"%(w{i}_{m.group(1)})s", sql)  # noqa: B023
        ctes.append(f"w{i} AS ({renamed} RETURNING 1)")
    counts = ", ".join(f"(SELECT count(*) FROM w{i})" for i in range(len(parts)))
    return f"WITH {', '.join(ctes)} SELECT {counts}"


@attrs.define
class WriteBatch:
    """Writes collected by a repository call and run together by ``run``."""

    uow: SqlUnitOfWork
    writes: list[_Write] = attrs.field(factory=list)

    def add(self, statement: Any, params: Mapping[str, Any], check: Check | None = None) -> None:
        """Queue ``statement`` with ``params``; ``check(rowcount)`` raises if it failed."""
        self.writes.append(_Write(statement, params, check))

    def run(self) -> None:
        """Execute every queued write, then run each check on its row count."""
        writes, self.writes = self.writes, []
        if not writes:
            return
        if len(writes) == 1 or not self.uow.is_pg:
            for w in writes:
                done = self.uow.x(w.statement, w.params)
                if w.check is not None:
                    w.check(done.rowcount)
            return
        dialect = self.uow.factory.engine.dialect
        parts: list[str] = []
        params: dict[str, Any] = {}
        for i, w in enumerate(writes):
            compiled = compile_write(w.statement, dialect, frozenset(w.params))
            parts.append(compiled.sql)
            for name, value in compiled.bind(w.params).items():
                params[f"w{i}_{name}"] = value
        counts = self.uow.x_sql(_combined_sql(tuple(parts)), params).one()
        for w, count in zip(writes, counts, strict=True):
            if w.check is not None:
                w.check(int(count))
