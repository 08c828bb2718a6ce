"""pm commands: db (``pm migrate``, ``pm init``).

Exit codes (service.md 8, 13): 3 database unreachable, 4 schema behind or unknown, 5 bad
configuration. Settings follow service.md 13 (``--database-url`` > environment, including
``PM_DATABASE_URL_FILE`` > ``[pm]`` of ``PM_CONFIG`` / ``./pm.toml`` > default), as for
every command.
"""

from __future__ import annotations

import math
import sys

import click
from sqlalchemy.engine import Engine

from pm_adapters.bootstrap.settings import Settings
from pm_adapters.sql import migrations
from pm_adapters.sql.connect import connect
from pm_adapters.sql.redact import redact_url
from pm_adapters.sql.uow import SqlUnitOfWorkFactory
from pm_cli.settings import settings_or_exit
from pm_core.errors import DatabaseUnavailable, SchemaMismatch

EXIT_UNREACHABLE = 3
EXIT_SCHEMA = 4
EXIT_CONFIG = 5


def _connect(url: str, settings: Settings) -> Engine:
    def warn(attempt: int, delay: float, message: str) -> None:
        click.echo(f"{message}; retry {attempt} in {delay:g} s", err=True)

    try:
        return connect(url, settings.db_settings(), on_retry=warn)
    except DatabaseUnavailable as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_UNREACHABLE)
    except Exception as exc:  # a malformed URL, an unknown driver
        click.echo(f"configuration error: database url {redact_url(url)}: {exc}", err=True)
        sys.exit(EXIT_CONFIG)


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


@click.command("migrate")
@click.option("--sql", "offline", is_flag=True, help="Print the SQL instead of running it.")
@click.option("--database-url", default=None, help="Overrides PM_DATABASE_URL.")
def migrate_command(offline: bool, database_url: str | None) -> None:
    """Upgrade the database schema to this version's head (or print the SQL)."""
    settings = settings_or_exit({"database_url": database_url})
    url = settings.database_url
    if offline:
        migrations.upgrade_sql(url, sys.stdout)
        return
    engine = _connect(url, settings)
    try:
        before, head = migrations.upgrade(engine)
    except SchemaMismatch as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_SCHEMA)
    finally:
        engine.dispose()
    where = redact_url(url)
    if before == head:
        click.echo(f"{where}: schema already at head {head}")
    else:
        click.echo(f"{where}: schema upgraded from {before or 'empty'} to {head}")


@click.command("init")
@click.option("--capital", type=float, default=None, help="Initial capital (default: domain's).")
@click.option("--database-url", default=None, help="Overrides PM_DATABASE_URL.")
def init_command(capital: float | None, database_url: str | None) -> None:
    """Create the portfolio row with its initial capital (once; the stored value then wins)."""
    settings = settings_or_exit({"database_url": database_url})
    amount = settings.domain.portfolio.initial_capital if capital is None else capital
    if not math.isfinite(amount) or amount <= 0:
        raise click.BadParameter("must be a positive number", param_hint="--capital")
    url = settings.database_url
    engine = _connect(url, settings)
    try:
        if _is_sqlite(url):
            migrations.upgrade(engine)  # SQLite is upgraded in place (service.md 8 step 3)
        migrations.check_schema(engine)
        factory = SqlUnitOfWorkFactory(engine)
        created = factory.initialise(amount)
        with factory.begin(read_only=True) as uow:
            stored = uow.portfolio.read().initial_capital
    except SchemaMismatch as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_SCHEMA)
    except DatabaseUnavailable as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_UNREACHABLE)
    finally:
        engine.dispose()
    where = redact_url(url)
    if created:
        click.echo(f"{where}: portfolio initialised with capital {stored!r}")
    else:
        click.echo(f"{where}: portfolio already initialised (capital {stored!r} kept)")


COMMANDS: list[click.Command] = [migrate_command, init_command]
