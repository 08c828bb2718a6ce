"""Alembic, driven programmatically: upgrade to head, offline SQL, and the schema check.

The revision scripts live in ``alembic/versions`` beside this module (no alembic.ini).
``check_schema`` refuses a database whose revision is not the code's head (service.md 8 step
3): behind or empty -> "run `pm migrate`"; a revision the code does not know -> refused too.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TextIO

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from pm_adapters.sql.redact import redact_url
from pm_core.errors import SchemaMismatch

SCRIPT_LOCATION = str(Path(__file__).resolve().parent / "alembic")


def alembic_config(
    url: str | None = None,
    *,
    connection: sa.Connection | None = None,
    output: TextIO | None = None,
) -> Config:
    """An Alembic Config pointing at pm's revisions."""
    cfg = Config(output_buffer=output, stdout=output or io.StringIO())
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The code's head revision id."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def known_revisions() -> frozenset[str]:
    """Every revision id the code knows."""
    script = ScriptDirectory.from_config(alembic_config())
    return frozenset(rev.revision for rev in script.walk_revisions())


def current_revision(engine: Engine) -> str | None:
    """The database's Alembic revision (None when it has no schema yet)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Upgrade to head in one transaction; returns (revision before, head)."""
    before = current_revision(engine)
    if before is not None and before not in known_revisions():
        raise SchemaMismatch(
            f"database at {redact_url(engine.url)} has revision {before}, unknown to this code"
        )
    with engine.begin() as conn:
        command.upgrade(alembic_config(connection=conn), "head")
    return before, head_revision()


def upgrade_sql(url: str, out: TextIO) -> None:
    """Write the SQL of an upgrade from empty to head for ``url``'s dialect (``--sql``)."""
    command.upgrade(alembic_config(url, output=out), "head", sql=True)


def check_schema(engine: Engine) -> str:
    """The head revision if the database is at it; SchemaMismatch otherwise."""
    found = current_revision(engine)
    head = head_revision()
    where = redact_url(engine.url)
    if found == head:
        return head
    if found is None:
        raise SchemaMismatch(f"database at {where} has no pm schema: run `pm migrate`")
    if found not in known_revisions():
        raise SchemaMismatch(
            f"database at {where} has revision {found}, unknown to this code (head {head})"
        )
    raise SchemaMismatch(
        f"database at {where} is at revision {found}, behind head {head}: run `pm migrate`"
    )
