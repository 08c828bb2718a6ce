"""The PostgreSQL hot path: statements built once, run straight on the psycopg connection.

A signal transaction is a handful of small statements. Through ``Connection.execute`` each
one pays for SQLAlchemy's execution context, cache-key lookup and result wrapping, which
costs about as much as the round trip itself. Here a statement built once at import is
compiled once per set of parameter names, its parameters are bound with the column types'
own bind processors and its rows converted with their result processors, so the values are
exactly what the Core path gives (floats from NUMERIC, aware UTC datetimes, parsed JSON).
Driver errors are wrapped and translated as on the Core path, and a lost connection is
invalidated so the pool never hands it out again.
"""

from __future__ import annotations

import collections
import functools
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import psycopg
import sqlalchemy as sa

Processor = Callable[[Any], Any] | None


@attrs.define(eq=False)
class Compiled:
    """A statement's SQL with ``%(name)s`` placeholders, and how to bind and convert."""

    sql: str
    compiled: Any  # SQLCompiler: construct_params fills constant binds (``version + 1``)
    binders: Mapping[str, Callable[[Any], Any]]
    columns: Sequence[Any]  # selected/returned columns, for their result processors
    row_type: type[Any] | None = None
    converters: tuple[Processor, ...] | None = None  # set from the first cursor description
    # When every parameter binds under its own name: the constant binds, to copy and update
    # (what construct_params does, without its per-call walk over the statement's binds).
    defaults: dict[str, Any] | None = None

    def bind(self, params: Mapping[str, Any]) -> dict[str, Any]:
        if self.defaults is not None:
            values = {**self.defaults, **params}
        else:
            values = self.compiled.construct_params(params)
        for name, process in self.binders.items():
            values[name] = process(values[name])
        return values

    def rows(self, dialect: Any, cursor: Any, memo: RowMemo | None = None) -> list[Any]:
        """The cursor's rows, converted by the columns' result processors.

        With ``memo``, a row received before (equal raw values) is served converted from it.
        """
        converters = self.converters
        if converters is None:
            # psycopg builds the description anew on each access: read it once per statement.
            converters = tuple(
                column.type.dialect_impl(dialect).result_processor(dialect, d.type_code)
                for column, d in zip(self.columns, cursor.description, strict=True)
            )
            self.converters = converters
        assert self.row_type is not None
        rows = cursor.fetchall()
        make = self.row_type._make
        converting = [(i, c) for i, c in enumerate(converters) if c is not None]
        if not converting:
            return [make(row) for row in rows]
        out = []
        for row in rows:
            if memo is not None:
                known = memo.get(row)
                if known is not None:
                    out.append(known)
                    continue
            values = list(row)
            for i, convert in converting:
                value = values[i]
                if value is not None:  # NULL stays None for every type we use
                    values[i] = convert(value)
            converted = make(values)
            if memo is not None:
                memo.put(row, converted)
            out.append(converted)
        return out


class RowMemo:
    """Converted rows by their raw values, for a statement whose rows mostly repeat.

    The portfolio snapshot returns a row per instrument on every T1 and T2, and most of them
    are unchanged since the last read; converting them again (NUMERIC to float, timestamps to
    aware UTC) is work done while every other writer waits for the portfolio lock. Rows with
    unhashable values (arrays, JSON) are never kept. The memo is cleared when it reaches
    ``size``, so it stays bounded however the rows change.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._rows: dict[Any, Any] = {}

    def get(self, raw: Any) -> Any:
        try:
            return self._rows.get(raw)
        except TypeError:  # unhashable: a list or dict among the values
            return None

    def put(self, raw: Any, converted: Any) -> None:
        try:
            hash(raw)
        except TypeError:
            return
        if len(self._rows) >= self.size:
            self._rows.clear()
        self._rows[raw] = converted


_cache: dict[tuple[int, frozenset[str]], tuple[Any, Compiled]] = {}
_cache_lock = threading.Lock()


def compiled(statement: Any, dialect: Any, keys: frozenset[str] = frozenset()) -> Compiled:
    """``statement`` compiled for these parameter names (kept for the process lifetime).

    A statement without parameter names is compiled with its constants inline.
    """
    key = (id(statement), keys)
    found = _cache.get(key)
    if found is not None and found[0] is statement:
        return found[1]
    compiler = statement.compile(
        dialect=dialect,
        column_keys=sorted(keys),
        compile_kwargs={} if keys else {"literal_binds": True},
    )
    if "POSTCOMPILE" in str(compiler):
        raise ValueError("expanding parameters are not supported here")
    binders: dict[str, Callable[[Any], Any]] = {}
    for name, bind in compiler.binds.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            binders[name] = process
    columns = list(getattr(statement, "selected_columns", None) or _returning(statement))
    # Rows answer to the column names like the Core path's Row.
    row_type = _row_type(tuple(c.key for c in columns)) if columns else None
    entry = Compiled(str(compiler), compiler, binders, columns, row_type)
    if keys:
        # The shortcut is taken only where it gives exactly construct_params' answer.
        probe = {k: f"<{k}>" for k in keys}
        expected = compiler.construct_params(probe)
        defaults = {k: v for k, v in expected.items() if k not in keys}
        if {**defaults, **probe} == expected:
            entry.defaults = defaults
    with _cache_lock:
        _cache[key] = (statement, entry)  # keeps the statement alive while its id is a key
    return entry


def _row_type(names: tuple[str, ...]) -> type[Any]:
    make: Any = collections.namedtuple
    base: type[Any] = make("Row", names, rename=True)

    class Row(base):  # type: ignore[misc]
        """A row like SQLAlchemy's: attributes, indexes and ``_mapping``."""

        __slots__ = ()

        @property
        def _mapping(self) -> dict[str, Any]:
            return dict(zip(names, self, strict=True))

    return Row


def _returning(statement: Any) -> Sequence[Any]:
    returning = getattr(statement, "_returning", ())
    return list(returning)


_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%|%s")


@functools.lru_cache(maxsize=2048)
def positional(sql: str) -> tuple[bytes, tuple[str, ...]]:
    """``sql`` with its ``%(name)s`` placeholders as PostgreSQL's ``$n``, and the names in
    ``$n`` order (``%%`` becomes ``%``).

    psycopg parses a query's placeholders on every execution once the query is longer than
    4 kB or has more than 50 parameters (a signal's batched writes often are): converted
    once here, the query goes out through a RawCursor as it is.
    """
    names: list[str] = []
    index: dict[str, int] = {}

    def placeholder(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "%%":
            return "%"
        name = match.group(1)
        if name is None:
            raise ValueError("positional %s placeholders are not supported here")
        if name not in index:
            names.append(name)
            index[name] = len(names)
        return f"${index[name]}"

    return _PLACEHOLDER.sub(placeholder, sql).encode(), tuple(names)


def run(
    connection: sa.Connection,
    sql: str,
    params: Mapping[str, Any] | None,
    *,
    translate: Callable[[BaseException], BaseException],
) -> Any:
    """Execute on the driver connection of ``connection``; the psycopg cursor."""
    raw = connection.connection.driver_connection
    assert raw is not None
    if params is None:
        cursor = raw.cursor()
        query: str | bytes = sql
        args: list[Any] | None = None
    else:
        cursor = psycopg.RawCursor(raw)
        query, names = positional(sql)
        args = [params[name] for name in names]
    try:
        cursor.execute(query, args)
    except Exception as exc:
        dialect = connection.dialect
        dbapi = dialect.loaded_dbapi
        if not isinstance(exc, dbapi.Error):
            raise
        lost = dialect.is_disconnect(exc, raw, cursor)
        wrapped = sa.exc.DBAPIError.instance(
            sql, params, exc, dbapi.Error, connection_invalidated=lost, dialect=dialect
        )
        if lost:
            connection.invalidate(exc)
        raise translate(wrapped) from exc
    return cursor
