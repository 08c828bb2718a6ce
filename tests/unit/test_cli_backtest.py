"""``pm backtest`` and ``pm validate`` through click's CliRunner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pm_cli.main import cli
from pm_core.backtest import parse_jsonl, run
from pm_core.config import default_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "webhook_signals.jsonl"
CSV = REPO / "examples" / "tradingview_gold_mini_export.csv"
GOLD = f"GOLD_MINI={CSV}"


def _invoke(*args: str) -> tuple[int, str, str, bytes]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr, result.stdout_bytes


def test_json_is_the_library_document_byte_for_byte() -> None:
    code, _out, _err, raw = _invoke("backtest", "--json", str(EXAMPLES))
    assert code == 0
    config = default_config()
    expected = run(parse_jsonl(EXAMPLES.read_bytes(), EXAMPLES.name, config), config).to_json()
    assert raw == expected.encode("utf-8") + b"\n"
    assert _invoke("backtest", "--json", str(EXAMPLES))[3] == raw


def test_human_summary_lists_figures_outcomes_and_reasons() -> None:
    code, out, _err, _raw = _invoke("backtest", str(EXAMPLES))
    assert code == 0
    for text in (
        "Signals processed",
        "12",
        "Final equity",
        "\u20b95,171,000.00",
        "Win rate",
        "83.33 %",
        "Blocked and rejected, by reason:",
        "price_not_above_1r",
        "position_not_open",
        "Input errors, by code:",
        "webhook_signals.jsonl:7: out_of_range: price must be > 0, got -100.0",
    ):
        assert text in out
    assert "PYRAMID" in out and "BASE_ENTRY" in out


def test_csv_input_needs_as_signalled_for_a_plain_export() -> None:
    code, out, _err, _raw = _invoke("backtest", GOLD)
    assert code == 0
    assert "370  missing_atr" in out
    assert "742 rows = 371 entry + 371 exit + 0 open + 0 short + 0 other" in out
    assert "371 skipped after a bad entry" in out
    assert "--sizing as-signalled" in out
    code, _out, _err, raw = _invoke("backtest", "--json", "--sizing", "as-signalled", GOLD)
    assert code == 0
    doc = json.loads(raw)
    assert doc["stats"]["signals_processed"] == 741
    assert doc["input_errors"] == []


def test_capital_and_config_file(tmp_path: Path) -> None:
    config = tmp_path / "pm.toml"
    config.write_text(
        "[pm]\nport = 8080\n\n[portfolio]\ninitial_capital = 10000000\n"
        "equity_mode = 'closed'\n\n[instruments.GOLD_MINI]\nmargin_per_lot = 120000.0\n"
    )
    code, _out, _err, raw = _invoke("backtest", "--json", "--config", str(config), str(EXAMPLES))
    assert code == 0
    doc = json.loads(raw)
    assert doc["initial_capital"] == 10_000_000.0
    assert b'"initial_capital":10000000.0,' in raw  # an integer in TOML is still money
    assert b'"closed_equity":10000000.0,' in raw
    assert all(p["sizing_equity"] == p["closed_equity"] for p in doc["equity_curve"])
    code, _out, _err, raw = _invoke("backtest", "--json", "--capital", "2500000", str(EXAMPLES))
    assert code == 0 and json.loads(raw)["initial_capital"] == 2_500_000.0


def test_bad_config_prints_every_field_and_exits_5(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        "[portfolio]\nmax_layers = 0\nsurprise = 1\n\n[instruments.GOLD_MINI]\ntick_size = -1.0\n"
    )
    code, _out, err, _raw = _invoke("backtest", "--config", str(config), str(EXAMPLES))
    assert code == 5
    for field in ("portfolio.max_layers", "portfolio.surprise", "instruments.GOLD_MINI.tick_size"):
        assert field in err
    broken = tmp_path / "broken.toml"
    broken.write_text("[portfolio\n")
    code, _out, err, _raw = _invoke("backtest", "--config", str(broken), str(EXAMPLES))
    assert code == 5 and "not valid TOML" in err
    code, _out, err, _raw = _invoke("validate", "--config", str(tmp_path / "none.toml"), "x")
    assert code == 5 and "cannot read config" in err


def test_unreadable_inputs_exit_2(tmp_path: Path) -> None:
    code, _out, err, _raw = _invoke("backtest", str(tmp_path / "missing.jsonl"))
    assert code == 2 and "cannot read" in err
    code, _out, err, _raw = _invoke("backtest", f"SILVER={CSV}")
    assert code == 2 and "unknown instrument" in err
    latin = tmp_path / "latin.csv"
    latin.write_bytes("Trade #,Type\n1,Entr\xe9e\n".encode("latin-1"))
    code, _out, err, _raw = _invoke("backtest", f"GOLD_MINI={latin}")
    assert code == 2 and "not UTF-8" in err
    code, _out, err, _raw = _invoke("backtest", f"GOLD_MINI={EXAMPLES}")
    assert code == 2 and "missing columns" in err


def test_plot_writes_a_png(tmp_path: Path) -> None:
    png = tmp_path / "equity.png"
    code, out, _err, _raw = _invoke("backtest", "--plot", str(png), str(EXAMPLES))
    assert code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"Chart written to {png}" in out


def test_plot_without_matplotlib_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    png = tmp_path / "equity.png"
    code, _out, err, _raw = _invoke("backtest", "--plot", str(png), str(EXAMPLES))
    assert code == 1
    assert "pip install 'portfolio-manager[plot]'" in err
    assert not png.exists()


def test_progress_bar_appears_only_after_the_delay(tmp_path: Path) -> None:
    lines = [
        json.dumps(
            {
                "type": "EXIT",
                "instrument": "GOLD_MINI",
                "position": "Long_1",
                "price": 78000,
                "stop": 0,
                "lots": 0,
                "atr": 400,
                "er": 1,
                "supertrend": 0,
                "reason": "x",
                "timestamp": 1764300000 + 120 * k,
            }
        )
        for k in range(5000)
    ]
    log = tmp_path / "many.jsonl"
    log.write_text("\n".join(lines))
    code, _out, err, _raw = _invoke("backtest", "--progress-after", "0", str(log))
    assert code == 0 and "Backtesting" in err
    code, _out, err, _raw = _invoke("backtest", "--progress-after", "60", str(log))
    assert code == 0 and "Backtesting" not in err


def test_validate_prints_each_field_error_with_file_and_line(tmp_path: Path) -> None:
    code, out, err, _raw = _invoke("validate", str(EXAMPLES))
    assert code == 1
    assert f"{EXAMPLES}:7: price: out_of_range: price must be > 0, got -100.0" in out
    assert f"{EXAMPLES}:7: timestamp: invalid_timestamp:" in out
    assert len(out.splitlines()) == 4
    assert "13 valid signal(s), 4 error(s)" in err
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(EXAMPLES.read_text().splitlines()[:6]) + "\n\n")
    code, out, err, _raw = _invoke("validate", str(good))
    assert code == 0 and out == "" and "6 valid signal(s), ok" in err
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text("{oops\n")
    code, out, _err, _raw = _invoke("validate", str(good), str(bad_json))
    assert code == 1
    assert out.startswith(f"{bad_json}:1: not_json: Line is not valid JSON")
    assert len(out.splitlines()) == 1


def test_validate_csv_depends_on_the_sizing_mode() -> None:
    code, out, _err, _raw = _invoke("validate", GOLD)
    assert code == 1 and f"{CSV}:3: atr: missing_atr:" in out
    code, out, err, _raw = _invoke("validate", "--sizing", "as-signalled", GOLD)
    assert code == 0 and out == "" and "741 valid signal(s), ok" in err


def test_slippage_ticks_cost_money_when_pnl_uses_fills(tmp_path: Path) -> None:
    config = tmp_path / "fills.toml"
    config.write_text("[portfolio]\npnl_price_source = 'fill'\n")
    totals = []
    for ticks in ("0", "20"):
        code, _out, _err, raw = _invoke(
            "backtest", "--json", "--config", str(config), "--slippage-ticks", ticks, str(EXAMPLES)
        )
        assert code == 0
        totals.append(json.loads(raw)["total_pnl"])
    assert totals[0] == 171_000.0  # fills at the signal price: the signal-price result
    assert totals[1] < totals[0]


def test_json_is_identical_across_processes_and_hash_seeds() -> None:
    outputs = []
    for seed in ("1", "2"):
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "from pm_cli.main import cli; cli()",
                "backtest",
                "--json",
                str(EXAMPLES),
                GOLD,
                "--sizing",
                "as-signalled",
            ],
            capture_output=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            check=True,
        )
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0])["stats"]["signals_processed"] == 753
