"""Backtest inputs: JSONL webhook logs and TradingView "List of Trades" CSVs (domain 11.1, 11.2).

Both parsers turn a file's text into validated signals in the order the backtest replays them,
and account for every line: a line is a signal, part of a collapsed split trade, skipped by a
rule of 11.2, or an input error {source, line, code, message}. Nothing is dropped silently.
"""

from __future__ import annotations

import collections
import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from pm_core.codes import format_float
from pm_core.config import DomainConfig, InstrumentConfig, SizingMode
from pm_core.errors import InputError as InputFileError
from pm_core.model import FieldError, Signal, instant_us
from pm_core.signal import parse_timestamp, validate

__all__ = [
    "CsvAccount",
    "InputIssue",
    "ParsedInput",
    "SourcedSignal",
    "combine",
    "parse_jsonl",
    "parse_payloads",
    "parse_tradingview_csv",
]


@attrs.frozen(slots=True)
class InputIssue:
    """An input error (a line that did not become a signal) or a warning about a line.

    Where it is, a stable code and why. A value, not an exception: a file that cannot be
    read at all raises ``pm_core.errors.InputError`` instead. ``field`` names the bad signal
    field of a validation error (``pm validate`` shows it); the backtest document lists only
    source, line, code and message (domain 13.8).
    """

    source: str
    line: int
    code: str
    message: str
    field: str | None = None

    def record(self) -> dict[str, Any]:
        """The input error as the backtest document lists it."""
        return {
            "source": self.source,
            "line": self.line,
            "code": self.code,
            "message": self.message,
        }


@attrs.frozen(slots=True)
class SourcedSignal:
    """A validated signal with the file and line it came from."""

    signal: Signal
    source: str
    line: int


@attrs.frozen(slots=True)
class CsvAccount:
    """Where every data row of a TradingView CSV went (the header is not counted).

    rows = entry_rows + exit_rows + open_exits + short_rows + other_rows, and
    entry_rows = entries + collapsed_entry_rows + rows of entry groups that became errors, and
    exit_rows = exits + collapsed_exit_rows + exits_after_entry_error + rows of exit errors.
    """

    rows: int = 0
    entry_rows: int = 0
    exit_rows: int = 0
    open_exits: int = 0
    short_rows: int = 0
    other_rows: int = 0
    entries: int = 0
    exits: int = 0
    collapsed_entry_rows: int = 0
    collapsed_exit_rows: int = 0
    entry_error_rows: int = 0
    exit_error_rows: int = 0
    exits_after_entry_error: int = 0


@attrs.frozen(slots=True)
class ParsedInput:
    """Signals in replay order plus the input errors and warnings met while reading them."""

    signals: tuple[SourcedSignal, ...] = ()
    errors: tuple[InputIssue, ...] = ()
    warnings: tuple[InputIssue, ...] = ()
    accounts: Mapping[str, CsvAccount] = attrs.field(factory=dict)


def combine(parts: Iterable[ParsedInput]) -> ParsedInput:
    """Several inputs as one, in the order given (the backtest then sorts signals by time)."""
    signals: list[SourcedSignal] = []
    errors: list[InputIssue] = []
    warnings: list[InputIssue] = []
    accounts: dict[str, CsvAccount] = {}
    for part in parts:
        signals.extend(part.signals)
        errors.extend(part.errors)
        warnings.extend(part.warnings)
        accounts.update(part.accounts)
    return ParsedInput(tuple(signals), tuple(errors), tuple(warnings), accounts)


def _field_errors(source: str, line: int, errors: Sequence[FieldError]) -> list[InputIssue]:
    return [InputIssue(source, line, e.code, e.message, e.field) for e in errors]


# --------------------------------------------------------------------------- JSONL


def parse_jsonl(
    text: str | bytes,
    source: str,
    config: DomainConfig,
    *,
    loads: Callable[[str | bytes], Any] = json.loads,
) -> ParsedInput:
    """Read a JSONL webhook log: one payload a line, blank lines skipped, bad lines reported.

    ``loads`` may be a faster JSON decoder; a line it refuses is retried with ``json.loads``
    (which reads NaN and Infinity literals, so they report ``not_finite``, not ``not_json``).
    """
    lines: list[Any]
    if isinstance(text, bytes):
        if text.startswith(b"\xef\xbb\xbf"):
            text = text[3:]
        lines = text.split(b"\n")
    else:
        if text.startswith("\ufeff"):
            text = text[1:]
        lines = text.split("\n")
    signals: list[SourcedSignal] = []
    errors: list[InputIssue] = []
    for index in range(len(lines)):
        chunk: str | bytes = lines[index]
        if not chunk.strip():
            continue
        line_no = index + 1
        try:
            payload = loads(chunk)
        except (ValueError, RecursionError):
            try:
                payload = json.loads(chunk)
            except (ValueError, RecursionError) as exc:
                errors.append(
                    InputIssue(source, line_no, "not_json", f"Line is not valid JSON: {exc}")
                )
                continue
        result = validate(payload, config)
        if isinstance(result, Signal):
            signals.append(SourcedSignal(result, source, line_no))
        else:
            errors.extend(_field_errors(source, line_no, result))
    return ParsedInput(tuple(signals), tuple(errors))


def parse_payloads(
    payloads: Iterable[Any], config: DomainConfig, *, source: str = "<signals>"
) -> ParsedInput:
    """Validate in-memory webhook payloads (dicts); item n is reported as line n (1-based)."""
    signals: list[SourcedSignal] = []
    errors: list[InputIssue] = []
    for index, payload in enumerate(payloads):
        result = validate(payload, config)
        if isinstance(result, Signal):
            signals.append(SourcedSignal(result, source, index + 1))
        else:
            errors.extend(_field_errors(source, index + 1, result))
    return ParsedInput(tuple(signals), tuple(errors))


# --------------------------------------------------------------------------- TradingView CSV

_META_KEYS = frozenset({"ATR", "ER", "STOP", "ST", "HI", "POS"})
_LOTS_IN_HEAD = re.compile(r"(\d+)[Ll]")
_PYRAMID_LAYER = re.compile(r"^PYR(\d+)", re.IGNORECASE)


@attrs.frozen(slots=True)
class _Row:
    line: int
    trade: str
    trade_order: tuple[int, str]  # numeric Trade # first, so "10" sorts after "9"
    when: str
    head: str
    meta: Mapping[str, str]
    price: str
    qty: int | None


@attrs.frozen(slots=True)
class _Event:
    """A collapsed entry or exit ready to sort: (instant, exits first, Trade #)."""

    sort_key: tuple[int, int, tuple[int, str]]
    signal: SourcedSignal


def _trade_order(trade: str) -> tuple[int, str]:
    stripped = trade.strip()
    return (int(stripped), "") if stripped.isdigit() else (1 << 62, stripped)


def _split_comment(comment: str) -> tuple[str, dict[str, str]]:
    tokens = comment.split("|")
    meta: dict[str, str] = {}
    for token in tokens[1:]:
        key, sep, value = token.partition(":")
        if not sep:
            continue
        key = key.strip().upper()
        if key in _META_KEYS:
            meta[key] = value.strip()
    return tokens[0].strip(), meta


def _quantity(raw: str) -> int | None:
    text = raw.strip().replace(",", "")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    if value != value or value in (float("inf"), float("-inf")) or value != int(value):
        return None
    return int(value)


def _entry_label(head: str, meta: Mapping[str, str]) -> tuple[str, bool]:
    """(label, is_pyramid) of an entry row per domain 11.2."""
    pyramid = head.upper().startswith("PYR")
    if "POS" in meta:
        return meta["POS"], pyramid
    match = _PYRAMID_LAYER.match(head)
    if match:
        return f"Long_{int(match.group(1)) + 1}", pyramid
    return "Long_1", pyramid


def _instant_or_none(raw: str, config: DomainConfig) -> int | None:
    try:
        return instant_us(parse_timestamp(raw, config.portfolio.tz))
    except ValueError:
        return None


def parse_tradingview_csv(
    text: str,
    instrument: str,
    source: str,
    config: DomainConfig,
    *,
    sizing_mode: SizingMode | None = None,
) -> ParsedInput:
    """Read a TradingView Strategy Tester "List of Trades" export for one instrument.

    Entries and exits become signals (split trades collapsed), ``Open`` exits and other row
    types are skipped, short rows and bad entries are input errors (domain 11.2). Raises
    pm_core.errors.InputIssue only when the file cannot be read at all (no header, a
    required column missing, an unregistered instrument).
    """
    inst_id = instrument.strip().upper()
    inst = config.instruments.get(inst_id)
    if inst is None:
        known = ", ".join(config.instruments)
        raise InputFileError(f"{source}: unknown instrument {instrument!r} (registered: {known})")
    reader = _CsvReader(inst, source, config, sizing_mode or config.portfolio.sizing_mode)
    reader.read_rows(text[1:] if text.startswith("\ufeff") else text)
    reader.collapse_entries()
    reader.collapse_exits()
    return reader.result()


class _CsvReader:
    """One export's rows, grouped into split trades and turned into sorted signals."""

    def __init__(
        self, instrument: InstrumentConfig, source: str, config: DomainConfig, mode: SizingMode
    ) -> None:
        self.instrument = instrument
        self.source = source
        self.config = config
        self.mode = mode
        self.errors: list[InputIssue] = []
        self.warnings: list[InputIssue] = []
        self.events: list[_Event] = []
        self.entry_rows: list[_Row] = []
        self.exit_rows: list[_Row] = []
        self.open_trades: set[str] = set()  # trades TradingView still holds at the end
        self.failed_trades: set[str] = set()  # trades whose entry is an input error
        self.label_of_trade: dict[str, str] = {}
        self.group_of_trade: dict[str, int] = {}
        self.group_trades: list[list[str]] = []
        self.count = collections.Counter[str]()

    def read_rows(self, text: str) -> None:
        """Classify every data row: entry, exit, open exit, short (an error) or other."""
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = next(reader)
        except StopIteration:
            raise InputFileError(f"{self.source}: empty file (no header row)") from None
        except csv.Error as exc:
            raise InputFileError(f"{self.source}: line 1: {exc}") from None
        columns = _columns(header, self.source)
        width = max(columns.values()) + 1
        for cells in _rows(reader, self.source):
            if not any(cell.strip() for cell in cells):
                continue  # a blank line is not a row
            self.count["rows"] += 1
            if len(cells) < width:
                cells = cells + [""] * (width - len(cells))
            kind = cells[columns["type"]].strip().lower()
            trade = cells[columns["trade"]].strip()
            if kind.startswith(("entry short", "exit short")):
                self.count["short_rows"] += 1
                self.errors.append(
                    InputIssue(
                        self.source,
                        reader.line_num,
                        "unsupported_direction",
                        f"Short trades are not supported: {cells[columns['type']].strip()!r}",
                    )
                )
                continue
            is_entry = kind.startswith("entry long")
            if not is_entry and not kind.startswith("exit long"):
                self.count["other_rows"] += 1
                continue
            head, meta = _split_comment(cells[columns["signal"]])
            if not is_entry and head.lower() == "open":
                self.count["open_exits"] += 1
                self.open_trades.add(trade)
                continue
            row = _Row(
                line=reader.line_num,
                trade=trade,
                trade_order=_trade_order(trade),
                when=cells[columns["time"]].strip(),
                head=head,
                meta=meta,
                price=cells[columns["price"]].strip(),
                qty=_quantity(cells[columns["qty"]]),
            )
            (self.entry_rows if is_entry else self.exit_rows).append(row)

    def collapse_entries(self) -> None:
        """One entry per split order: rows sharing timestamp, type, label and price."""
        groups: dict[tuple[str, bool, str, str], list[_Row]] = {}
        for row in self.entry_rows:
            label, pyramid = _entry_label(row.head, row.meta)
            groups.setdefault((row.when, pyramid, label, row.price), []).append(row)
        for (when, pyramid, label, price), rows in groups.items():
            rows.sort(key=lambda r: r.trade_order)
            trades = [r.trade for r in rows]
            for trade in trades:
                self.group_of_trade[trade] = len(self.group_trades)
                self.label_of_trade[trade] = label
            self.group_trades.append(trades)
            first = rows[0]
            if len(rows) > 1:
                lots: int | None = sum(r.qty or 0 for r in rows)
            else:
                match = _LOTS_IN_HEAD.search(first.head)
                lots = int(match.group(1)) if match else first.qty
            signal = self._entry_signal(first, pyramid, label, price, when, lots)
            if signal is None:
                self.failed_trades.update(trades)
                self.count["entry_error_rows"] += len(rows)
                continue
            self.count["entries"] += 1
            self.count["collapsed_entry_rows"] += len(rows) - 1
            self._add(signal, first, exit_first=1)

    def _entry_signal(
        self, first: _Row, pyramid: bool, label: str, price: str, when: str, lots: int | None
    ) -> Signal | None:
        meta = first.meta
        atr: str | float | None = meta.get("ATR")
        if atr is None:
            if self.mode == "tom_basso":
                self._error(
                    first,
                    "missing_atr",
                    "Entry has no ATR in its Signal comment; tom_basso sizing needs it "
                    "(use as_signalled sizing for a plain export)",
                    "atr",
                )
                return None
            atr = self.instrument.fallback_atr
            self.warnings.append(
                InputIssue(
                    self.source,
                    first.line,
                    "atr_fallback",
                    f"ATR missing; fallback ATR {format_float(atr)} used",
                    "atr",
                )
            )
        if self.mode == "as_signalled" and (lots is None or lots <= 0):
            self._error(
                first,
                "missing_lots",
                "Entry has no lots in its head (nL) or Position size (qty)",
                "lots",
            )
            return None
        stop = meta.get("STOP", 0)
        return self._validate(
            first,
            {
                "type": "PYRAMID" if pyramid else "BASE_ENTRY",
                "instrument": self.instrument.id,
                "position": label,
                "price": price,
                "stop": stop,
                "lots": lots if lots is not None else 0,
                "atr": atr,
                "er": meta.get("ER", 1.0),
                "supertrend": meta.get("ST", stop),
                "timestamp": when,
            },
        )

    def collapse_exits(self) -> None:
        """Per split order, exit rows at one time collapse; the last one closes the rest."""
        by_time: dict[tuple[str, str], list[_Row]] = {}
        for row in self.exit_rows:
            if row.trade in self.failed_trades:
                self.count["exits_after_entry_error"] += 1
                continue
            group = self.group_of_trade.get(row.trade)
            group_key = f"g{group}" if group is not None else f"t{row.trade}"
            by_time.setdefault((group_key, row.when), []).append(row)
        by_group: dict[str, list[tuple[tuple[int, str, tuple[int, str]], str, list[_Row]]]] = {}
        for (group_key, when), rows in by_time.items():
            rows.sort(key=lambda r: r.trade_order)
            instant = _instant_or_none(when, self.config)
            order = (instant if instant is not None else 0, when, rows[0].trade_order)
            by_group.setdefault(group_key, []).append((order, when, rows))
        for group_key, collapsed in by_group.items():
            collapsed.sort(key=lambda item: item[0])
            trades = (
                self.group_trades[int(group_key[1:])]
                if group_key.startswith("g")
                else [group_key[1:]]
            )
            still_open = any(t in self.open_trades for t in trades)
            for index, (_order, when, rows) in enumerate(collapsed):
                first = rows[0]
                closes_the_rest = index == len(collapsed) - 1 and not still_open
                lots = 0 if closes_the_rest else sum(r.qty or 0 for r in rows)
                meta = first.meta
                stop = meta.get("STOP", 0)
                signal = self._validate(
                    first,
                    {
                        "type": "EXIT",
                        "instrument": self.instrument.id,
                        "position": meta.get("POS")
                        or self.label_of_trade.get(first.trade, "Long_1"),
                        "price": first.price,
                        "stop": stop,
                        "lots": lots,
                        "atr": meta.get("ATR", 0),
                        "er": meta.get("ER", 1.0),
                        "supertrend": meta.get("ST", stop),
                        "timestamp": when,
                        "reason": first.head or "EXIT",
                    },
                )
                if signal is None:
                    self.count["exit_error_rows"] += len(rows)
                    continue
                self.count["exits"] += 1
                self.count["collapsed_exit_rows"] += len(rows) - 1
                self._add(signal, first, exit_first=0)

    def _validate(self, first: _Row, payload: dict[str, Any]) -> Signal | None:
        result = validate(payload, self.config)
        if isinstance(result, Signal):
            return result
        self.errors.extend(_field_errors(self.source, first.line, result))
        return None

    def _error(self, row: _Row, code: str, message: str, field: str) -> None:
        self.errors.append(InputIssue(self.source, row.line, code, message, field))

    def _add(self, signal: Signal, first: _Row, exit_first: int) -> None:
        # Within a file: by time, exits before entries at one time, then Trade # (11.2).
        key = (instant_us(signal.timestamp), exit_first, first.trade_order)
        self.events.append(_Event(key, SourcedSignal(signal, self.source, first.line)))

    def result(self) -> ParsedInput:
        """The signals in replay order, errors and warnings by line, and the row account."""
        self.events.sort(key=lambda e: e.sort_key)
        self.errors.sort(key=lambda e: e.line)
        self.warnings.sort(key=lambda e: e.line)
        c = self.count
        account = CsvAccount(
            rows=c["rows"],
            entry_rows=len(self.entry_rows),
            exit_rows=len(self.exit_rows),
            open_exits=c["open_exits"],
            short_rows=c["short_rows"],
            other_rows=c["other_rows"],
            entries=c["entries"],
            exits=c["exits"],
            collapsed_entry_rows=c["collapsed_entry_rows"],
            collapsed_exit_rows=c["collapsed_exit_rows"],
            entry_error_rows=c["entry_error_rows"],
            exit_error_rows=c["exit_error_rows"],
            exits_after_entry_error=c["exits_after_entry_error"],
        )
        return ParsedInput(
            tuple(e.signal for e in self.events),
            tuple(self.errors),
            tuple(self.warnings),
            {self.source: account},
        )


def _rows(reader: Any, source: str) -> Iterator[list[str]]:
    """The reader's rows; a line the csv module cannot split makes the file unreadable."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputFileError(f"{source}: line {reader.line_num}: {exc}") from None


def _columns(header: Sequence[str], source: str) -> dict[str, int]:
    names = [h.strip() for h in header]
    wanted = {
        "trade": "Trade #",
        "type": "Type",
        "time": "Date/Time",
        "signal": "Signal",
        "qty": "Position size (qty)",
    }
    found: dict[str, int] = {}
    missing: list[str] = []
    for key, name in wanted.items():
        if name in names:
            found[key] = names.index(name)
        else:
            missing.append(name)
    price = next((i for i, n in enumerate(names) if n.startswith("Price ")), None)
    if price is None:
        missing.append("Price <currency>")
    else:
        found["price"] = price
    if missing:
        raise InputFileError(
            f"{source}: not a TradingView List of Trades export (missing columns: "
            f"{', '.join(missing)})"
        )
    return found
