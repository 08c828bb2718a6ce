"""Every command module's COMMANDS is reachable through the lazy ``pm`` group."""

from __future__ import annotations

import importlib

import click
from click.testing import CliRunner

from pm_cli.main import cli


def test_every_module_command_is_registered_by_its_name() -> None:
    ctx = click.Context(cli)
    for module in ("backtest", "db", "service", "broker"):
        for command in importlib.import_module(f"pm_cli.{module}").COMMANDS:
            assert command.name is not None
            assert cli.get_command(ctx, command.name) is command, command.name
    assert len(cli.list_commands(ctx)) == sum(
        len(importlib.import_module(f"pm_cli.{m}").COMMANDS)
        for m in ("backtest", "db", "service", "broker")
    )


def test_help_lists_the_commands_and_unknown_ones_fail() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ("backtest", "serve", "migrate", "simulate-broker", "intents"):
        assert name in result.output
    assert CliRunner().invoke(cli, ["nope"]).exit_code == 2
