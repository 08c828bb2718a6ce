"""pm commands: ``pm backtest`` (replay signals through the live rules) and ``pm validate``.

Thin shell over ``pm_core.backtest``: read files (orjson when it can), load the TOML domain
configuration, run, render. Exit codes: 0 ok; 1 ``pm validate`` found errors or ``--plot``
could not draw; 2 an input file cannot be read; 5 bad configuration.
"""

from __future__ import annotations

import collections
import gc
import math
import os
import re
import sys
import time
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import click
import orjson

from pm_core.backtest import (
    BacktestResult,
    CsvAccount,
    InputIssue,
    ParsedInput,
    combine,
    parse_jsonl,
    parse_tradingview_csv,
    run,
)
from pm_core.config import DomainConfig, SizingMode, default_config, load_config
from pm_core.errors import ConfigError
from pm_core.errors import InputError as InputFileError

EXIT_ERRORS = 1
EXIT_INPUT = 2
EXIT_CONFIG = 5

_SIZING: dict[str, SizingMode] = {"tom-basso": "tom_basso", "as-signalled": "as_signalled"}
_INSTRUMENT_ID = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


# --------------------------------------------------------------------------- shared helpers


def _fail(code: int, message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def _load_config(path: str | None) -> DomainConfig:
    """The domain configuration from a TOML file ([portfolio], [instruments.<ID>]), or defaults."""
    if path is None:
        return default_config()
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        _fail(EXIT_CONFIG, f"cannot read config {path}: {exc.strerror or exc}")
    except tomllib.TOMLDecodeError as exc:
        _fail(EXIT_CONFIG, f"config {path} is not valid TOML: {exc}")
    try:
        return load_config(data)
    except ConfigError as exc:
        click.echo(f"Error: config {path} has {len(exc.errors)} bad field(s):", err=True)
        for field, message in exc.errors:
            click.echo(f"  {field}: {message}", err=True)
        sys.exit(EXIT_CONFIG)


def _split_input(token: str) -> tuple[str | None, str]:
    """(instrument, path) for ``INSTRUMENT=path.csv``; (None, path) for a JSONL file."""
    instrument, sep, path = token.partition("=")
    if sep and _INSTRUMENT_ID.fullmatch(instrument) and not os.path.isfile(token):
        return instrument, path
    return None, token


def _read_inputs(
    tokens: Sequence[str], config: DomainConfig, mode: SizingMode
) -> tuple[ParsedInput, list[tuple[str, ParsedInput]]]:
    """Parse every input; each part is kept with the path the user gave (for ``pm validate``)."""
    parts: list[tuple[str, ParsedInput]] = []
    for token in tokens:
        instrument, path = _split_input(token)
        source = os.path.basename(path)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            _fail(EXIT_INPUT, f"cannot read {path}: {exc.strerror or exc}")
        try:
            if instrument is None:
                part = parse_jsonl(data, source, config, loads=orjson.loads)
            else:
                text = data.decode("utf-8")
                part = parse_tradingview_csv(text, instrument, source, config, sizing_mode=mode)
        except UnicodeDecodeError:
            _fail(EXIT_INPUT, f"{path} is not UTF-8 text")
        except InputFileError as exc:
            _fail(EXIT_INPUT, str(exc))
        parts.append((path, part))
    return combine(part for _path, part in parts), parts


class _LazyProgress:
    """A progress bar on stderr that appears only once a run has taken ``delay_s`` seconds."""

    def __init__(self, delay_s: float, stream: TextIO) -> None:
        self._start = time.monotonic()
        self._delay_s = delay_s
        self._stream = stream
        self._bar: Any = None
        self._shown = 0

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            if time.monotonic() - self._start < self._delay_s or done >= total:
                return
            self._bar = click.progressbar(length=total, label="Backtesting", file=self._stream)
            self._bar.__enter__()
        self._bar.update(done - self._shown)
        self._shown = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


# --------------------------------------------------------------------------- pm backtest


@click.command("backtest")
@click.option(
    "--capital",
    type=click.FloatRange(min=0, min_open=True),
    help="Initial capital in rupees (default: the configuration's, 5,000,000).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="TOML file with [portfolio] and [instruments.<ID>] tables.",
)
@click.option(
    "--sizing",
    type=click.Choice(sorted(_SIZING)),
    help="Sizing mode; as-signalled suits plain TradingView exports (no ATR metadata).",
)
@click.option("--no-dedup", is_flag=True, help="Turn the duplicate rules off.")
@click.option(
    "--slippage-ticks",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Paper fills this many ticks against each order (P&L uses them with "
    "pnl_price_source = 'fill').",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result document as JSON.")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    help="Write an equity and drawdown chart (PNG; needs the 'plot' extra).",
)
@click.option(
    "--progress-after",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    hidden=True,
    help="Seconds before the progress bar appears.",
)
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
def backtest_command(
    capital: float | None,
    config_path: str | None,
    sizing: str | None,
    no_dedup: bool,
    slippage_ticks: int,
    as_json: bool,
    plot_path: str | None,
    progress_after: float,
    inputs: tuple[str, ...],
) -> None:
    """Replay signals through the live rules and report trades, equity and statistics.

    INPUT is a JSONL file of webhook payloads or INSTRUMENT=path.csv, a TradingView
    "List of Trades" export (e.g. GOLD_MINI=examples/tradingview_gold_mini_export.csv).
    """
    config = _load_config(config_path)
    mode: SizingMode = _SIZING[sizing] if sizing else config.portfolio.sizing_mode
    # Reading, the fold and the document build millions of small acyclic values; the cyclic
    # collector would only re-scan them as they pile up (a sixth of the reading and a third
    # of the document's time at 100k signals). Paused while they are built, restored after.
    collecting = gc.isenabled()
    gc.disable()
    try:
        parsed, _parts = _read_inputs(inputs, config, mode)
        progress = _LazyProgress(progress_after, click.get_text_stream("stderr"))
        try:
            result = run(
                parsed,
                config,
                capital=capital,
                sizing_mode=mode,
                dedup=not no_dedup,
                slippage_ticks=slippage_ticks,
                progress=progress,
            )
        finally:
            progress.close()
        text = result.to_json() if as_json else render_summary(result, inputs, parsed.accounts)
    finally:
        if collecting:
            gc.enable()
    if as_json:
        out = click.get_binary_stream("stdout")
        out.write(text.encode("utf-8"))
        out.write(b"\n")
        out.flush()
    else:
        click.echo(text)
    if plot_path is not None:
        _plot(result, plot_path)
        if not as_json:
            click.echo(f"Chart written to {plot_path}")


def _money(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"\u20b9{value:,.2f}"


def _figure(value: float | None, suffix: str = "") -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:,.2f}{suffix}"


def render_summary(
    result: BacktestResult,
    inputs: Sequence[str] = (),
    accounts: Mapping[str, CsvAccount] | None = None,
) -> str:
    """The human report: a summary table, outcomes per type, reasons and input errors by count."""
    s = result.stats
    open_rows = len(result.trades) - s.trades
    lines = [
        f"Backtest of {', '.join(inputs)}" if inputs else "Backtest",
        "",
        f"  {'Signals processed':<20}{s.signals_processed:>18,}",
        f"  {'Duplicates':<20}{s.duplicates:>18,}",
        f"  {'Input errors':<20}{len(result.input_errors):>18,}",
        f"  {'Initial capital':<20}{_money(result.initial_capital):>18}",
        f"  {'Final equity':<20}{_money(s.final_equity):>18}",
        f"  {'Total P&L':<20}{_money(s.total_pnl):>18}  ({_figure(s.return_pct, ' %')})",
        f"  {'Closed P&L':<20}{_money(s.closed_pnl):>18}",
        f"  {'Max drawdown':<20}{_money(s.max_drawdown):>18}"
        f"  ({_figure(s.max_drawdown_pct, ' %')})",
        f"  {'Trades (closes)':<20}{s.trades:>18,}",
        f"  {'Open positions':<20}{open_rows:>18,}",
        f"  {'Win rate':<20}{_figure(s.win_rate_pct, ' %'):>18}",
        f"  {'Profit factor':<20}{_figure(s.profit_factor):>18}",
        f"  {'Average R':<20}{_figure(s.average_r):>18}",
        f"  {'Exposure':<20}{_figure(s.exposure_pct, ' %'):>18}",
        "",
        f"  {'Outcomes':<12}{'executed':>10}{'blocked':>10}{'rejected':>10}",
    ]
    for type_ in ("BASE_ENTRY", "PYRAMID", "EXIT"):
        counts = s.outcomes.get(type_, {})
        lines.append(
            f"  {type_:<12}{counts.get('executed', 0):>10,}"
            f"{counts.get('blocked', 0):>10,}{counts.get('rejected', 0):>10,}"
        )
    reasons = collections.Counter(code.code for row in result.blocked for code in row.codes)
    if reasons:
        lines += ["", "Blocked and rejected, by reason:"]
        lines += [f"  {n:>8,}  {code}" for code, n in _by_count(reasons)]
    if result.input_errors:
        lines += ["", "Input errors, by code:"]
        codes = collections.Counter(e.code for e in result.input_errors)
        lines += [f"  {n:>8,}  {code}" for code, n in _by_count(codes)]
        shown = result.input_errors[:10]
        lines += [f"  {e.source}:{e.line}: {e.code}: {e.message}" for e in shown]
        if len(result.input_errors) > len(shown):
            lines.append(f"  ... and {len(result.input_errors) - len(shown):,} more (--json)")
        if any(e.code == "missing_atr" for e in result.input_errors):
            lines.append("  (entries without ATR need --sizing as-signalled)")
    for source, acc in (accounts or {}).items():
        lines += [
            "",
            f"{source}: {acc.rows:,} rows = {acc.entry_rows:,} entry + {acc.exit_rows:,} exit"
            f" + {acc.open_exits:,} open + {acc.short_rows:,} short + {acc.other_rows:,} other",
            f"  {acc.entries:,} entries ({acc.collapsed_entry_rows:,} split rows merged,"
            f" {acc.entry_error_rows:,} rows in input errors)",
            f"  {acc.exits:,} exits ({acc.collapsed_exit_rows:,} rows merged,"
            f" {acc.exit_error_rows:,} in input errors,"
            f" {acc.exits_after_entry_error:,} skipped after a bad entry)",
        ]
    if result.warnings:
        lines += ["", "Warnings, by code:"]
        warned = collections.Counter(w.code for w in result.warnings)
        lines += [f"  {n:>8,}  {code}" for code, n in _by_count(warned)]
    return "\n".join(lines)


def _by_count(counter: collections.Counter[str]) -> list[tuple[str, int]]:
    return sorted(counter.items(), key=lambda item: (-item[1], item[0]))


def _plot(result: BacktestResult, path: str) -> None:
    """Equity (open and closed) and drawdown against time, as a PNG."""
    try:
        import matplotlib
    except ImportError:
        _fail(
            EXIT_ERRORS,
            "--plot needs matplotlib: pip install 'portfolio-manager[plot]'",
        )
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    curve = result.equity_curve
    times = [p.timestamp for p in curve]
    open_eq = [p.open_equity for p in curve]
    closed_eq = [p.closed_equity for p in curve]
    peak = result.initial_capital
    drawdown: list[float] = []
    for equity in open_eq:
        peak = max(peak, equity)
        drawdown.append((peak - equity) / peak * 100 if peak > 0 else 0.0)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    try:
        top.plot(times, open_eq, label="open equity", linewidth=1.0)
        top.plot(times, closed_eq, label="closed equity", linewidth=1.0, alpha=0.7)
        top.axhline(result.initial_capital, color="grey", linewidth=0.6, linestyle="--")
        top.set_ylabel("equity (\u20b9)")
        top.yaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:,.0f}"))
        top.set_title(
            f"Backtest: total P&L {_money(result.stats.total_pnl)}, "
            f"max drawdown {_figure(result.stats.max_drawdown_pct, ' %')}"
        )
        top.legend(loc="upper left")
        top.grid(True, alpha=0.3)
        bottom.fill_between(times, [-d for d in drawdown], 0.0, color="tab:red", alpha=0.4)
        bottom.set_ylabel("drawdown (%)")
        bottom.grid(True, alpha=0.3)
        if not curve:
            top.text(0.5, 0.5, "no signals processed", ha="center", transform=top.transAxes)
        fig.autofmt_xdate()
        fig.tight_layout()
        try:
            fig.savefig(path, dpi=110)
        except OSError as exc:
            _fail(EXIT_ERRORS, f"cannot write {path}: {exc.strerror or exc}")
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------- pm validate


@click.command("validate")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="TOML file with [portfolio] and [instruments.<ID>] tables.",
)
@click.option(
    "--sizing",
    type=click.Choice(sorted(_SIZING)),
    help="Sizing mode the CSV entries are checked for (missing ATR is an error in tom-basso).",
)
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
def validate_command(config_path: str | None, sizing: str | None, files: tuple[str, ...]) -> None:
    """Check signal files and print every field error with its file and line.

    FILE is a JSONL file of webhook payloads or INSTRUMENT=path.csv. Exits 1 if any line
    has an error, 0 when every line is a valid signal.
    """
    config = _load_config(config_path)
    mode: SizingMode = _SIZING[sizing] if sizing else config.portfolio.sizing_mode
    _combined, parts = _read_inputs(files, config, mode)
    total_errors = 0
    for path, part in parts:
        for error in part.errors:
            click.echo(_error_line(path, error))
        total_errors += len(part.errors)
        status = "ok" if not part.errors else f"{len(part.errors)} error(s)"
        click.echo(f"{path}: {len(part.signals)} valid signal(s), {status}", err=True)
    if total_errors:
        sys.exit(EXIT_ERRORS)


def _error_line(path: str, error: InputIssue) -> str:
    field = f"{error.field}: " if error.field else ""
    return f"{path}:{error.line}: {field}{error.code}: {error.message}"


COMMANDS: list[click.Command] = [backtest_command, validate_command]
