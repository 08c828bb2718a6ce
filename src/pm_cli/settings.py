"""Settings for CLI commands: service.md 13 precedence, every bad field printed, exit 5."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from pm_adapters.bootstrap.settings import Settings, SettingsError, load_settings
from pm_core.errors import ConfigError

EXIT_CONFIG = 5


def settings_or_exit(overrides: dict[str, Any], config: Path | None = None) -> Settings:
    """CLI flags (None = not given) > environment > TOML > defaults; exit 5 on any bad field."""
    try:
        return load_settings(
            config_path=config, overrides={k: v for k, v in overrides.items() if v is not None}
        )
    except (SettingsError, ConfigError) as exc:
        for field, message in getattr(exc, "errors", [("configuration", str(exc))]):
            click.echo(f"configuration error: {field}: {message}", err=True)
        sys.exit(EXIT_CONFIG)
