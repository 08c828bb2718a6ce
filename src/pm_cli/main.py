"""The ``pm`` command group; each command lives in its own module, imported when used.

Loading lazily keeps ``pm backtest`` and ``pm validate`` free of SQLAlchemy, Alembic and
uvicorn start-up cost (about a third of a second per invocation).
"""

from __future__ import annotations

import importlib

import click

# command name -> (module, attribute)
_COMMANDS: dict[str, tuple[str, str]] = {
    "backtest": ("pm_cli.backtest", "backtest_command"),
    "validate": ("pm_cli.backtest", "validate_command"),
    "migrate": ("pm_cli.db", "migrate_command"),
    "init": ("pm_cli.db", "init_command"),
    "serve": ("pm_cli.service", "serve"),
    "status": ("pm_cli.service", "status"),
    "recover": ("pm_cli.service", "recover_command"),
    "reconcile": ("pm_cli.service", "reconcile_command"),
    "rollover": ("pm_cli.service", "rollover"),
    "intents": ("pm_cli.service", "intents"),
    "simulate-broker": ("pm_cli.broker", "simulate_broker"),
}


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attribute = target
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="portfolio-manager", prog_name="pm")
def cli() -> None:
    """pm: turns TradingView signals into correctly sized positions, exactly once."""
