"""Migrations: empty -> head on SQLite and PostgreSQL, no drift from the Core metadata."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy.engine import Engine

from pm_adapters.sql import migrations
from pm_adapters.sql.retry import create_engine
from pm_adapters.sql.tables import leader_fence, metadata
from pm_cli.db import init_command, migrate_command
from pm_core.errors import SchemaMismatch
from tests.kit.postgres import PgServer

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pm.sqlite3'}"
    server: PgServer = request.getfixturevalue("pg_server")
    return server.create_database("mig")


@pytest.fixture()
def engine(url: str) -> Iterator[Engine]:
    e = create_engine(url)
    yield e
    e.dispose()


def _diff(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, metadata))


def test_empty_to_head_and_no_drift(engine: Engine) -> None:
    with pytest.raises(SchemaMismatch, match="run `pm migrate`"):
        migrations.check_schema(engine)
    before, head = migrations.upgrade(engine)
    assert before is None and head == migrations.head_revision()
    assert migrations.check_schema(engine) == head
    assert _diff(engine) == []
    inspector = sa.inspect(engine)
    assert set(metadata.tables) <= set(inspector.get_table_names())
    with engine.connect() as conn:
        assert conn.execute(sa.select(leader_fence.c.epoch)).scalar_one() == 0
    # A second upgrade is a no-op.
    assert migrations.upgrade(engine) == (head, head)


def test_schema_behind_or_unknown_is_refused(engine: Engine) -> None:
    migrations.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'ffffffffffff'"))
    with pytest.raises(SchemaMismatch, match="unknown to this code"):
        migrations.check_schema(engine)


def test_offline_sql_creates_every_table() -> None:
    for dialect_url in ("sqlite:///x.db", "postgresql+psycopg://pm:s3cret@db/pm"):
        out = io.StringIO()
        migrations.upgrade_sql(dialect_url, out)
        text = out.getvalue()
        for table in metadata.tables:
            assert f"CREATE TABLE {table} " in text
        assert "s3cret" not in text


def test_cli_migrate_then_init(url: str) -> None:
    runner = CliRunner()
    # The throwaway server trusts local users, so a password is accepted and must never show.
    url = url.replace("postgresql+psycopg://pm@", "postgresql+psycopg://pm:s3cret@")
    res = runner.invoke(init_command, ["--database-url", url, "--capital", "1000000"])
    if url.startswith("postgresql"):
        # PostgreSQL is never migrated implicitly: init refuses a database behind head.
        assert res.exit_code == 4, res.output
        assert "pm migrate" in res.output
    res = runner.invoke(migrate_command, ["--database-url", url])
    assert res.exit_code == 0, res.output
    res = runner.invoke(init_command, ["--database-url", url, "--capital", "1000000"])
    assert res.exit_code == 0, res.output
    assert "initialised" in res.output and "s3cret" not in res.output
    res = runner.invoke(init_command, ["--database-url", url, "--capital", "5"])
    assert res.exit_code == 0 and "already initialised" in res.output
    res = runner.invoke(migrate_command, ["--sql", "--database-url", url])
    assert res.exit_code == 0 and "CREATE TABLE portfolio_state" in res.output
    assert "s3cret" not in res.output
