"""The backtest: the live decision code as a pure fold over an in-memory portfolio (domain 11.3).

Signals are replayed in time order (a stable sort: equal instants keep input order) through
``pm_core.decide.step``, which is decide, paper fills and apply_fills exactly as the live
service runs them, so the live duplicate rules apply too. The loop keeps only plain values
per signal; the result document is built once at the end.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from pm_core.backtest.parsers import (
    InputIssue,
    ParsedInput,
    SourcedSignal,
    parse_payloads,
)
from pm_core.backtest.result import BacktestResult, BlockedRow, EquityPoint, TradeRow
from pm_core.backtest.statistics import (
    Statistics,
    exposure_pct,
    max_drawdown,
    trade_figures,
    trade_r,
)
from pm_core.config import DomainConfig, SizingMode
from pm_core.decide import step
from pm_core.metrics import equity_figures, equity_view
from pm_core.model import (
    SIGNAL_TYPES,
    PortfolioSnapshot,
    ReceivedSignal,
    Signal,
    Trade,
    instant_us,
)
from pm_core.signal import fingerprint

__all__ = ["Progress", "run"]

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` every few thousand signals and once at the end."""

_PROGRESS_EVERY = 4096
_COUNTED_OUTCOMES = ("blocked", "executed", "rejected")
_SIZING_ALIASES: Mapping[str, SizingMode] = {
    "tom_basso": "tom_basso",
    "tom-basso": "tom_basso",
    "as_signalled": "as_signalled",
    "as-signalled": "as_signalled",
}


def run(
    signals: ParsedInput | Iterable[Signal | SourcedSignal | Mapping[str, Any]],
    config: DomainConfig,
    *,
    capital: float | None = None,
    sizing_mode: str | None = None,
    dedup: bool = True,
    slippage_ticks: int = 0,
    progress: Progress | None = None,
    input_errors: Iterable[InputIssue] = (),
) -> BacktestResult:
    """Replay signals through the live rules and report trades, equity and statistics.

    ``signals`` may be parsed input (its input errors are reported), validated signals, or
    webhook payloads (invalid ones become input errors of source ``<signals>``). ``capital``
    and ``sizing_mode`` override the configuration; ``dedup=False`` turns the duplicate
    rules off. The same input and configuration always give the same result.
    """
    config = _configured(config, capital, sizing_mode)
    ordered, ordered_us, errors, warnings = _ordered(signals, config)
    errors = [*errors, *input_errors]

    # The fold allocates millions of small values and keeps many (equity points, trades, the
    # duplicate index), so the cyclic collector would scan that growing heap over and over
    # (about a tenth of a 100k-signal fold) though the fold makes no reference cycles. It is
    # paused for the fold only and restored even on error.
    collecting = gc.isenabled()
    if collecting:
        gc.disable()
    try:
        return _fold(
            config, ordered, ordered_us, tuple(errors), tuple(warnings), dedup, slippage_ticks,
            progress,
        )  # fmt: skip
    finally:
        if collecting:
            gc.enable()


def _fold(
    config: DomainConfig,
    ordered: list[Signal],
    ordered_us: list[int],
    errors: tuple[InputIssue, ...],
    warnings: tuple[InputIssue, ...],
    dedup: bool,
    slippage_ticks: int,
    progress: Progress | None,
) -> BacktestResult:
    portfolio = config.portfolio
    # TOML may give an integer capital; money is float everywhere (domain 1).
    snapshot = PortfolioSnapshot.initial(float(portfolio.initial_capital))
    closes: list[Trade] = []
    blocked: list[BlockedRow] = []
    curve: list[EquityPoint] = []
    instants: list[int] = []
    holding: list[bool] = []
    outcomes: dict[str, dict[str, int]] = {
        t: dict.fromkeys(_COUNTED_OUTCOMES, 0) for t in SIGNAL_TYPES
    }
    duplicates = 0
    total = len(ordered)
    for done, signal in enumerate(ordered, 1):
        received = ReceivedSignal(signal, fingerprint(signal), signal.timestamp)
        stepped = step(snapshot, received, config, dedup=dedup, slippage_ticks=slippage_ticks)
        if stepped.duplicate:
            duplicates += 1
        else:
            snapshot = stepped.snapshot
            decision = stepped.decision
            if stepped.trades:
                closes.extend(stepped.trades)
            outcome = decision.outcome
            counts = outcomes[signal.type]
            counts[outcome] = counts.get(outcome, 0) + 1
            if outcome == "blocked" or outcome == "rejected":
                blocked.append(
                    BlockedRow(
                        signal.timestamp,
                        signal.instrument,
                        signal.type,
                        signal.position,
                        outcome,
                        decision.codes,
                        decision.messages,
                    )
                )
            closed = snapshot.closed_equity
            open_equity, sizing, _ = equity_figures(closed, snapshot.positions, portfolio)
            curve.append(EquityPoint(signal.timestamp, closed, open_equity, sizing))
            instants.append(ordered_us[done - 1])
            holding.append(bool(snapshot.positions))
        if progress is not None and done % _PROGRESS_EVERY == 0:
            progress(done, total)
    if progress is not None:
        progress(total, total)

    return _result(
        config, snapshot, closes, blocked, curve, instants, holding, outcomes, duplicates,
        errors, warnings,
    )  # fmt: skip


def _configured(
    config: DomainConfig, capital: float | None, sizing_mode: str | None
) -> DomainConfig:
    changes: dict[str, Any] = {}
    if capital is not None:
        if not (isinstance(capital, int | float) and math.isfinite(capital) and capital > 0):
            raise ValueError(f"capital must be a finite number > 0, got {capital!r}")
        changes["initial_capital"] = float(capital)
    if sizing_mode is not None:
        mode = _SIZING_ALIASES.get(sizing_mode)
        if mode is None:
            raise ValueError(f"sizing_mode must be tom_basso or as_signalled, got {sizing_mode!r}")
        changes["sizing_mode"] = mode
    if not changes:
        return config
    return attrs.evolve(config, portfolio=attrs.evolve(config.portfolio, **changes))


def _ordered(
    signals: ParsedInput | Iterable[Signal | SourcedSignal | Mapping[str, Any]],
    config: DomainConfig,
) -> tuple[list[Signal], list[int], list[InputIssue], list[InputIssue]]:
    """Signals in replay order: a stable sort by full-precision instant (domain 11.2, 13.8)."""
    if isinstance(signals, ParsedInput):
        parsed = signals
        items: list[Signal] = [s.signal for s in parsed.signals]
        errors = list(parsed.errors)
        warnings = list(parsed.warnings)
    else:
        items = []
        errors = []
        warnings = []
        pending: list[Any] = []
        for item in signals:
            if isinstance(item, Signal):
                items.append(item)
            elif isinstance(item, SourcedSignal):
                items.append(item.signal)
            else:
                pending.append(item)
        if pending:
            parsed = parse_payloads(pending, config)
            items.extend(s.signal for s in parsed.signals)
            errors.extend(parsed.errors)
    at_us = [instant_us(s.timestamp) for s in items]
    keyed = sorted(range(len(items)), key=at_us.__getitem__)
    return [items[i] for i in keyed], [at_us[i] for i in keyed], errors, warnings


def _result(
    config: DomainConfig,
    snapshot: PortfolioSnapshot,
    closes: list[Trade],
    blocked: list[BlockedRow],
    curve: list[EquityPoint],
    instants: list[int],
    holding: list[bool],
    outcomes: dict[str, dict[str, int]],
    duplicates: int,
    errors: tuple[InputIssue, ...],
    warnings: tuple[InputIssue, ...],
) -> BacktestResult:
    portfolio = config.portfolio
    initial = float(portfolio.initial_capital)
    rows: list[TradeRow] = []
    pnls: list[float] = []
    rs: list[float | None] = []
    for t in closes:
        r = trade_r(t.pnl, t.entry_price, t.initial_stop, t.lots, t.point_value)
        rows.append(
            TradeRow(
                t.instrument,
                t.label,
                t.is_base,
                t.entry_time,
                t.entry_price,
                t.exit_time,
                t.exit_price,
                t.lots,
                t.pnl,
                r,
                t.exit_reason,
            )
        )
        pnls.append(t.pnl)
        rs.append(r)
    for p in snapshot.positions:
        rows.append(
            TradeRow(
                p.instrument,
                p.label,
                p.is_base_position,
                p.entry_timestamp,
                p.entry_price,
                None,
                None,
                p.lots,
                p.unrealized_pnl,
                trade_r(p.unrealized_pnl, p.entry_price, p.initial_stop, p.lots, p.point_value),
                None,
            )
        )

    view = equity_view(snapshot.closed_equity, snapshot.positions, portfolio)
    final_equity = view.open
    total_pnl = final_equity - initial
    drawdown, drawdown_pct = max_drawdown(initial, [p.open_equity for p in curve])
    figures = trade_figures(pnls, rs)
    stats = Statistics(
        final_equity=final_equity,
        total_pnl=total_pnl,
        closed_pnl=snapshot.closed_equity - initial,
        return_pct=total_pnl / initial * 100,
        max_drawdown=drawdown,
        max_drawdown_pct=drawdown_pct,
        trades=figures.trades,
        win_rate_pct=figures.win_rate_pct,
        gross_profit=figures.gross_profit,
        gross_loss=figures.gross_loss,
        profit_factor=figures.profit_factor,
        average_r=figures.average_r,
        exposure_pct=exposure_pct(instants, holding),
        signals_processed=len(curve),
        duplicates=duplicates,
        outcomes=outcomes,
    )
    return BacktestResult(
        initial_capital=initial,
        final_equity=final_equity,
        total_pnl=total_pnl,
        stats=stats,
        trades=tuple(rows),
        blocked=tuple(blocked),
        equity_curve=tuple(curve),
        input_errors=errors,
        timezone=portfolio.timezone,
        warnings=warnings,
        final_snapshot=snapshot,
    )
