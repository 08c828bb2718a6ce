"""pm commands: db (``pm migrate``, ``pm init``).

Exit codes (service.md 8, 13): 3 database unreachable, 4 schema behind or unknown, 5 bad
configuration. The database URL comes from ``--database-url``, else ``PM_DATABASE_URL``,
else ``[pm] database_url`` of ``PM_CONFIG`` / ``./pm.toml``, else ``sqlite:///./pm.sqlite3``.
"""

from __future__ import annotations

import math
import os
import sys
import tomllib
from pathlib import Path

import click
from sqlalchemy.engine import Engine

from pm_adapters.sql import migrations
from pm_adapters.sql.connect import connect
from pm_adapters.sql.redact import redact_url
from pm_adapters.sql.retry import DbSettings
from pm_adapters.sql.uow import SqlUnitOfWorkFactory
from pm_core.config import default_config
from pm_core.errors import DatabaseUnavailable, SchemaMismatch

DEFAULT_URL = "sqlite:///./pm.sqlite3"
EXIT_UNREACHABLE = 3
EXIT_SCHEMA = 4
EXIT_CONFIG = 5


def _toml() -> dict[str, object]:
    path = Path(os.environ.get("PM_CONFIG", "pm.toml"))
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        click.echo(f"configuration error: {path}: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    return data


def resolve_url(flag: str | None) -> str:
    """The database URL by precedence: flag, environment, TOML, default."""
    if flag:
        return flag
    env = os.environ.get("PM_DATABASE_URL")
    if env:
        return env
    pm = _toml().get("pm")
    if isinstance(pm, dict) and isinstance(pm.get("database_url"), str):
        return str(pm["database_url"])
    return DEFAULT_URL


def default_capital() -> float:
    """The domain's initial_capital: ``[portfolio] initial_capital`` or the default."""
    portfolio = _toml().get("portfolio")
    if isinstance(portfolio, dict) and "initial_capital" in portfolio:
        try:
            return float(portfolio["initial_capital"])
        except (TypeError, ValueError):
            click.echo("configuration error: portfolio.initial_capital: not a number", err=True)
            sys.exit(EXIT_CONFIG)
    return default_config().portfolio.initial_capital


def _settings() -> DbSettings:
    try:
        return DbSettings.from_env(os.environ)
    except ValueError as exc:
        click.echo(f"configuration error: database settings: {exc}", err=True)
        sys.exit(EXIT_CONFIG)


def _connect(url: str) -> Engine:
    def warn(attempt: int, delay: float, message: str) -> None:
        click.echo(f"{message}; retry {attempt} in {delay:g} s", err=True)

    try:
        return connect(url, _settings(), on_retry=warn)
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
    url = resolve_url(database_url)
    if offline:
        migrations.upgrade_sql(url, sys.stdout)
        return
    engine = _connect(url)
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
    amount = default_capital() if capital is None else capital
    if not math.isfinite(amount) or amount <= 0:
        raise click.BadParameter("must be a positive number", param_hint="--capital")
    url = resolve_url(database_url)
    engine = _connect(url)
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
