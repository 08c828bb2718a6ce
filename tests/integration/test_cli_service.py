"""The service commands of ``pm`` against an embedded SQLite database (CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pm_cli.main import cli


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'pm.sqlite3'}"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_status_creates_the_embedded_database_and_reports_capital(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PM_WEBHOOK_SECRET", "s3cret-value")
    code, out = run("status", "--json", "--database-url", db)
    assert code == 0, out
    doc = json.loads(out)
    assert doc["portfolio"]["closed_equity"] == 5_000_000.0
    assert doc["broker"] == "paper"
    assert "s3cret-value" not in out
    code, out = run("status", "--database-url", db)
    assert code == 0 and "closed equity   5,000,000.00" in out


def test_recover_on_a_clean_database_exits_zero(db: str) -> None:
    code, out = run("recover", "--json", "--database-url", db)
    assert code == 0, out
    report = json.loads(out)
    assert report["warnings"] == [] and report["takeovers"] == []
    code, out = run("recover", "--dry-run", "--database-url", db)
    assert code == 0 and "warnings: 0" in out


def test_unreachable_database_exits_3_without_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PM_DB_CONNECT_BACKOFF", "0.01")
    monkeypatch.setenv("PM_DB_CONNECT_RETRIES", "1")
    monkeypatch.setenv("PM_DB_CONNECT_TIMEOUT_S", "1")
    code, out = run("status", "--database-url", "postgresql+psycopg://pm:hunter2@127.0.0.1:9/pm")
    assert code == 3
    assert "database unreachable at" in out and "hunter2" not in out


def test_bad_configuration_exits_5(tmp_path: Path, db: str) -> None:
    config = tmp_path / "pm.toml"
    config.write_text("[pm]\nno_such_setting = 1\n[portfolio]\nmax_layers = 0\n")
    code, out = run("status", "--config", str(config), "--database-url", db)
    assert code == 5
    assert "no_such_setting" in out


def test_rollover_reconcile_and_intents_on_an_empty_book(db: str) -> None:
    code, out = run("rollover", "--database-url", db)
    assert code == 0 and "no position is due for a roll" in out
    code, out = run("reconcile", "--database-url", db)
    assert code == 0 and "paper broker keeps no book" in out
    code, out = run("intents", "list", "--database-url", db)
    assert code == 0 and out == ""
    code, out = run("intents", "resolve", "pm-x-1-CE-1", "--not-placed", "--database-url", db)
    assert code == 1 and "no unresolved intent" in out
