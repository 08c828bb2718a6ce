"""Reconciliation diff: what the positions say the account holds against the broker (domain 10)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

import attrs

from pm_core.calendar import instrument_for_symbol
from pm_core.config import DomainConfig
from pm_core.model import Block, Position
from pm_core.ports import BrokerPosition
from pm_core.rollover import legs_held


@attrs.frozen
class Matched:
    """Expected and broker quantities agree (and are not zero)."""

    symbol: str
    exchange: str
    quantity: int


@attrs.frozen
class Orphaned:
    """Positions expect a quantity the broker does not show (DB only)."""

    symbol: str
    exchange: str
    expected: int
    position_ids: tuple[int, ...]


@attrs.frozen
class Missing:
    """The broker holds a managed symbol no position expects (broker only)."""

    symbol: str
    exchange: str
    broker: int


@attrs.frozen
class Mismatched:
    """Both sides hold the symbol with different quantities (sign flips included)."""

    symbol: str
    exchange: str
    expected: int
    broker: int
    difference: int  # broker - expected
    position_ids: tuple[int, ...]


@attrs.frozen
class Ignored:
    """A broker row not compared: a foreign symbol or an unmanaged product."""

    symbol: str
    exchange: str
    product: str
    quantity: int
    reason: str  # "unregistered_symbol" | "unmanaged_product"


@attrs.frozen
class ReconciliationReport:
    """The four diff classes in symbol order, ignored rows and the instruments that differ."""

    matched: tuple[Matched, ...]
    orphaned: tuple[Orphaned, ...]
    missing: tuple[Missing, ...]
    mismatched: tuple[Mismatched, ...]
    ignored: tuple[Ignored, ...]
    instruments_with_differences: tuple[str, ...]  # registry order

    @property
    def clean(self) -> bool:
        """True when everything compared matched."""
        return not (self.orphaned or self.missing or self.mismatched)


def expected_holdings(
    positions: Iterable[Position], config: DomainConfig
) -> dict[tuple[str, str], tuple[int, tuple[int, ...], str]]:
    """(exchange, symbol) -> (signed broker quantity, position ids, instrument) the legs imply."""
    out: dict[tuple[str, str], tuple[int, tuple[int, ...], str]] = {}
    for pos in positions:
        inst = config.instruments.get(pos.instrument)
        if inst is None or not pos.is_live:
            continue
        for held in legs_held(pos, inst):
            key = (held.exchange, held.symbol)
            qty, ids, _ = out.get(key, (0, (), inst.id))
            out[key] = (qty + held.quantity, (*ids, pos.id), inst.id)
    return out


def diff(
    positions: Iterable[Position],
    broker_rows: Iterable[BrokerPosition],
    config: DomainConfig,
    managed_products: tuple[str, ...] = ("NRML",),
) -> ReconciliationReport:
    """Compare open positions with the broker's position book (domain 10)."""
    expected = expected_holdings(positions, config)
    broker: dict[tuple[str, str], int] = {}
    broker_instrument: dict[tuple[str, str], str] = {}
    ignored: list[Ignored] = []
    for row in broker_rows:
        if row.quantity == 0:
            continue
        inst = instrument_for_symbol(row.symbol, config, row.exchange)
        if inst is None:
            ignored.append(
                Ignored(row.symbol, row.exchange, row.product, row.quantity, "unregistered_symbol")
            )
            continue
        if row.product not in managed_products:
            ignored.append(
                Ignored(row.symbol, row.exchange, row.product, row.quantity, "unmanaged_product")
            )
            continue
        key = (row.exchange, row.symbol)
        broker[key] = broker.get(key, 0) + row.quantity
        broker_instrument[key] = inst.id

    matched: list[Matched] = []
    orphaned: list[Orphaned] = []
    missing: list[Missing] = []
    mismatched: list[Mismatched] = []
    differing: set[str] = set()
    for exchange, symbol in sorted(set(expected) | set(broker), key=lambda k: (k[1], k[0])):
        key = (exchange, symbol)
        want, ids, inst_id = expected.get(key, (0, (), broker_instrument.get(key, "")))
        have = broker.get(key, 0)
        if want == have:
            if want != 0:
                matched.append(Matched(symbol, exchange, want))
            continue
        differing.add(inst_id)
        if have == 0:
            orphaned.append(Orphaned(symbol, exchange, want, ids))
        elif want == 0:
            missing.append(Missing(symbol, exchange, have))
        else:
            mismatched.append(Mismatched(symbol, exchange, want, have, have - want, ids))
    ignored.sort(key=lambda r: (r.symbol, r.exchange, r.product))
    return ReconciliationReport(
        matched=tuple(matched),
        orphaned=tuple(orphaned),
        missing=tuple(missing),
        mismatched=tuple(mismatched),
        ignored=tuple(ignored),
        instruments_with_differences=tuple(i for i in config.instruments if i in differing),
    )


def reconciliation_blocks(
    report: ReconciliationReport, config: DomainConfig, now: dt.datetime
) -> Mapping[str, Block]:
    """Blocks to set with reconciliation_fail_closed: one per instrument that differs."""
    if not config.portfolio.reconciliation_fail_closed:
        return {}
    return {
        inst: Block("reconciliation", now, {"source": "reconciliation"})
        for inst in report.instruments_with_differences
    }
