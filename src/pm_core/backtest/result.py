"""The backtest result and its JSON document (domain 11.4, 13.8).

The fold collects plain values; the document is built once, at the end, with keys in spec
order, floats as their shortest round-trip repr, timestamps ISO 8601 in the portfolio zone
(microseconds only when non-zero). Identical runs give byte-identical JSON.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import attrs

from pm_core.backtest.parsers import InputIssue
from pm_core.backtest.statistics import Statistics
from pm_core.model import Code, PortfolioSnapshot

__all__ = ["BacktestResult", "BlockedRow", "EquityPoint", "TradeRow"]


@attrs.frozen(slots=True)
class TradeRow:
    """One close (or a still-open position, exit fields None) as the document lists it."""

    instrument: str
    label: str
    is_base: bool
    entry_time: dt.datetime
    entry_price: float
    exit_time: dt.datetime | None
    exit_price: float | None
    lots: int
    pnl: float
    r: float | None
    exit_reason: str | None


@attrs.frozen(slots=True)
class BlockedRow:
    """A blocked or rejected decision: when, what, and the reason codes and messages."""

    timestamp: dt.datetime
    instrument: str
    type: str
    label: str
    outcome: str
    codes: tuple[Code, ...]
    messages: tuple[str, ...]


@attrs.frozen(slots=True)
class EquityPoint:
    """Equity after one processed signal's decision."""

    timestamp: dt.datetime
    closed_equity: float
    open_equity: float
    sizing_equity: float


@attrs.frozen(slots=True)
class BacktestResult:
    """Everything a backtest produced; ``to_json()`` is the domain 11.4 document."""

    initial_capital: float
    final_equity: float
    total_pnl: float
    stats: Statistics
    trades: tuple[TradeRow, ...]
    blocked: tuple[BlockedRow, ...]
    equity_curve: tuple[EquityPoint, ...]
    input_errors: tuple[InputIssue, ...]
    timezone: str = "Asia/Kolkata"
    warnings: tuple[InputIssue, ...] = ()
    final_snapshot: PortfolioSnapshot | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def closed_trades(self) -> tuple[TradeRow, ...]:
        """Trade rows of closes only (still-open positions left out)."""
        return tuple(t for t in self.trades if t.exit_time is not None)

    def document(self) -> dict[str, Any]:
        """The result as a JSON-ready dict, keys in domain 13.8 order."""
        stamp = _Stamper(ZoneInfo(self.timezone))
        s = self.stats
        stats: dict[str, Any] = {
            "final_equity": _num(s.final_equity),
            "total_pnl": _num(s.total_pnl),
            "closed_pnl": _num(s.closed_pnl),
            "return_pct": _num(s.return_pct),
            "max_drawdown": _num(s.max_drawdown),
            "max_drawdown_pct": _num(s.max_drawdown_pct),
            "trades": s.trades,
            "win_rate_pct": _num(s.win_rate_pct),
            "gross_profit": _num(s.gross_profit),
            "gross_loss": _num(s.gross_loss),
            "profit_factor": _num(s.profit_factor),
            "average_r": _num(s.average_r),
            "exposure_pct": _num(s.exposure_pct),
            "signals_processed": s.signals_processed,
            "duplicates": s.duplicates,
            "outcomes": {
                type_: {name: s.outcomes[type_][name] for name in sorted(s.outcomes[type_])}
                for type_ in sorted(s.outcomes)
            },
        }
        trades = [
            {
                "instrument": t.instrument,
                "label": t.label,
                "is_base": t.is_base,
                "entry_time": stamp(t.entry_time),
                "entry_price": _num(t.entry_price),
                "exit_time": None if t.exit_time is None else stamp(t.exit_time),
                "exit_price": _num(t.exit_price),
                "lots": t.lots,
                "pnl": _num(t.pnl),
                "r": _num(t.r),
                "exit_reason": t.exit_reason,
            }
            for t in self.trades
        ]
        blocked = [
            {
                "timestamp": stamp(b.timestamp),
                "instrument": b.instrument,
                "type": b.type,
                "label": b.label,
                "outcome": b.outcome,
                "codes": [{"code": c.code, "params": _params(c.params)} for c in b.codes],
                "messages": list(b.messages),
            }
            for b in self.blocked
        ]
        curve = [
            {
                "timestamp": stamp(p.timestamp),
                "closed_equity": _num(p.closed_equity),
                "open_equity": _num(p.open_equity),
                "sizing_equity": _num(p.sizing_equity),
            }
            for p in self.equity_curve
        ]
        return {
            "initial_capital": _num(self.initial_capital),
            "final_equity": _num(self.final_equity),
            "total_pnl": _num(self.total_pnl),
            "stats": stats,
            "trades": trades,
            "blocked": blocked,
            "equity_curve": curve,
            "input_errors": [e.record() for e in self.input_errors],
        }

    def to_json(self) -> str:
        """The domain 11.4 document as compact, byte-deterministic JSON (UTF-8 text)."""
        return json.dumps(
            self.document(), ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )


class _Stamper:
    """ISO 8601 in the portfolio zone; a datetime already written reuses its text.

    Trades carry the very datetime objects of the signals that opened and closed them, so
    most stamps are looked up by identity rather than formatted. (Not by equality: equal
    wall times on either side of a DST fold compare equal yet are different instants.) The
    memo holds each datetime, so an id is not reused while it is in the memo.
    """

    __slots__ = ("_last", "_text", "_texts", "_tz")

    def __init__(self, tz: dt.tzinfo) -> None:
        self._tz = tz
        self._last: dt.datetime | None = None
        self._text = ""
        self._texts: dict[int, tuple[dt.datetime, str]] = {}

    def __call__(self, ts: dt.datetime) -> str:
        if ts is not self._last:
            known = self._texts.get(id(ts))
            if known is None:
                text = ts.astimezone(self._tz).isoformat()
                self._texts[id(ts)] = (ts, text)
            else:
                text = known[1]
            self._text = text
            self._last = ts
        return self._text


def _num(value: float | None) -> float | None:
    """A JSON number: a float, or null when absent or not finite (JSON has no inf or NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _params(params: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _json_value(value) for key, value in params.items()}


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, Decimal):
        return _num(float(value))
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return _params(value)
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return str(value)
