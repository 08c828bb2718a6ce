"""The ``pm`` command group; each command lives in its own module."""

from __future__ import annotations

import click

from pm_cli import backtest, broker, db, service


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="portfolio-manager", prog_name="pm")
def cli() -> None:
    """pm: turns TradingView signals into correctly sized positions, exactly once."""


for _module in (backtest, db, service, broker):
    for _command in _module.COMMANDS:
        cli.add_command(_command)
