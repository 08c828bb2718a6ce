"""Alembic environment over pm's Core metadata (online with a given connection, or --sql)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from pm_adapters.sql.retry import create_engine
from pm_adapters.sql.tables import metadata

config = context.config


def _offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _online_with(connection: sa.Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()


def _online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _online_with(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None, "sqlalchemy.url or a connection is required"
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            _online_with(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    _offline()
else:
    _online()
