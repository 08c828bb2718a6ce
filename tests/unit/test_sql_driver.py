"""The PostgreSQL driver path's helpers: ``RowMemo`` serves a repeated row converted once,
never an unhashable one, and stays bounded; ``positional`` rewrites named placeholders."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from pm_adapters.sql.driver import RowMemo, positional

T0 = dt.datetime(2025, 11, 28, 10, 30, tzinfo=dt.UTC)


def test_a_repeated_row_is_served_from_the_memo() -> None:
    memo = RowMemo()
    raw = ("i", "GOLD_MINI", Decimal("78000.5"), T0)
    converted = object()
    memo.put(raw, converted)
    assert memo.get(("i", "GOLD_MINI", Decimal("78000.5"), T0)) is converted
    # Any value that differs is a different row.
    assert memo.get(("i", "GOLD_MINI", Decimal("78000.6"), T0)) is None
    assert memo.get(("i", "GOLD_MINI", Decimal("78000.5"), T0 + dt.timedelta(seconds=1))) is None


def test_rows_holding_lists_or_dicts_are_never_kept() -> None:
    memo = RowMemo()
    with_list: Any = ("p", [1, 2], [1, 1])
    with_dict: Any = ("i", "GOLD_MINI", {"signal_id": 7})
    memo.put(with_list, object())
    memo.put(with_dict, object())
    assert memo.get(with_list) is None and memo.get(with_dict) is None


def test_the_memo_is_cleared_when_full() -> None:
    memo = RowMemo(size=3)
    for i in range(3):
        memo.put(("i", i), i)
    assert [memo.get(("i", i)) for i in range(3)] == [0, 1, 2]
    memo.put(("i", 3), 3)  # full: starts over with this row
    assert [memo.get(("i", i)) for i in range(4)] == [None, None, None, 3]


def test_named_placeholders_become_positional_once_per_name() -> None:
    sql = "UPDATE t SET a = %(a)s, b = %(b)s WHERE a <> %(a)s AND c LIKE 'x%%' AND d = %(d_1)s"
    query, names = positional(sql)
    assert query == b"UPDATE t SET a = $1, b = $2 WHERE a <> $1 AND c LIKE 'x%' AND d = $3"
    assert names == ("a", "b", "d_1")
    with pytest.raises(ValueError, match="positional"):
        positional("SELECT %s")
