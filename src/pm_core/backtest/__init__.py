"""Backtest: replay TradingView signals through the live rules (domain 11, architecture 5).

``from pm_core.backtest import run`` needs nothing but pm_core: parse inputs with
``parse_jsonl`` / ``parse_tradingview_csv`` (or pass payloads or signals), then ``run``.
"""

from pm_core.backtest.parsers import (
    CsvAccount,
    InputIssue,
    ParsedInput,
    SourcedSignal,
    combine,
    parse_jsonl,
    parse_payloads,
    parse_tradingview_csv,
)
from pm_core.backtest.result import BacktestResult, BlockedRow, EquityPoint, TradeRow
from pm_core.backtest.run import Progress, run
from pm_core.backtest.statistics import Statistics

__all__ = [
    "BacktestResult",
    "BlockedRow",
    "CsvAccount",
    "EquityPoint",
    "InputIssue",
    "ParsedInput",
    "Progress",
    "SourcedSignal",
    "Statistics",
    "TradeRow",
    "combine",
    "parse_jsonl",
    "parse_payloads",
    "parse_tradingview_csv",
    "run",
]
