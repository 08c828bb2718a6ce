"""Server-side functions (PostgreSQL only), created by migration 0002 and by create_all.

``pm_portfolio_snapshot(take_lock)`` reads the portfolio snapshot in one round trip, first
taking the portfolio row lock if asked. The reads run after the lock is granted and, in READ
COMMITTED, each with a fresh snapshot (each statement of a VOLATILE function takes its own),
so they see everything committed before the lock was ours: the same guarantee as separate
statements from the client, with fewer round trips while every other T1 and T2 waits for that
lock. (One statement doing both would not do: its snapshot would predate the lock wait.)
In a REPEATABLE READ unit (``read()``) they all read the transaction's snapshot.

Rows: one ``s`` row (the state), one ``p`` row (live position ids and versions as
arrays, in id order), then an ``i`` row per instrument with pyramiding state or a block.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from pm_adapters.sql.tables import LIVE_POSITION_STATUSES, metadata

_LIVE = ", ".join(f"'{status}'" for status in LIVE_POSITION_STATUSES)

PORTFOLIO_SNAPSHOT = """
CREATE OR REPLACE FUNCTION pm_portfolio_snapshot(take_lock boolean)
RETURNS TABLE (
    kind text,
    version bigint,
    initial_capital numeric,
    closed_equity numeric,
    equity_high numeric,
    ids bigint[],
    versions bigint[],
    p_instrument text,
    base_position_id bigint,
    last_pyramid_price numeric,
    mark_price numeric,
    mark_atr numeric,
    mark_ts timestamptz,
    b_instrument text,
    reason text,
    since timestamptz,
    detail jsonb
)
LANGUAGE plpgsql VOLATILE AS $pm$
BEGIN
    IF take_lock THEN
        PERFORM 1 FROM portfolio_state WHERE id = 1 FOR UPDATE;
    END IF;
    -- From here on each query has a snapshot taken after the lock was granted.
    RETURN QUERY
    SELECT 's'::text, s.version, s.initial_capital, s.closed_equity, s.equity_high,
           NULL::bigint[], NULL::bigint[], NULL::text, NULL::bigint, NULL::numeric,
           NULL::numeric, NULL::numeric, NULL::timestamptz, NULL::text, NULL::text,
           NULL::timestamptz, NULL::jsonb
    FROM portfolio_state AS s WHERE s.id = 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT 'p'::text, NULL::bigint, NULL::numeric, NULL::numeric, NULL::numeric,
           array_agg(p.id ORDER BY p.id), array_agg(p.version ORDER BY p.id),
           NULL::text, NULL::bigint, NULL::numeric, NULL::numeric, NULL::numeric,
           NULL::timestamptz, NULL::text, NULL::text, NULL::timestamptz, NULL::jsonb
    FROM portfolio_positions AS p
    WHERE p.status IN (__LIVE__)
    UNION ALL
    SELECT 'i'::text, NULL::bigint, NULL::numeric, NULL::numeric, NULL::numeric,
           NULL::bigint[], NULL::bigint[],
           y.instrument::text, y.base_position_id, y.last_pyramid_price, y.mark_price,
           y.mark_atr, y.mark_ts, b.instrument::text, b.reason::text, b.since, b.detail
    FROM pyramiding_state AS y
    FULL JOIN instrument_blocks AS b ON y.instrument = b.instrument;
END
$pm$
""".replace("__LIVE__", _LIVE)


def install(connection: Any) -> None:
    """Create or replace the functions on a PostgreSQL connection (no-op elsewhere)."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(PORTFOLIO_SNAPSHOT)


@sa.event.listens_for(metadata, "after_create")
def _after_create(_target: Any, connection: Any, **_kw: Any) -> None:
    # metadata.create_all (tests, benchmarks) gets the functions migration 0002 creates.
    install(connection)
