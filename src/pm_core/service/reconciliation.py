"""Reconciliation against the broker's position book (domain 10, service.md 8 step 10).

Instruments with a signal or an order group in flight are skipped (their books are moving). With
``reconciliation_fail_closed`` each differing instrument is blocked for entries; a clean
diff lifts a reconciliation block. A broker outage changes nothing and never blocks start-up.
"""

from __future__ import annotations

from typing import Any

import attrs

from pm_core.calendar import instrument_for_symbol
from pm_core.config import DomainConfig
from pm_core.model import Position
from pm_core.ports import Ok, Ports, UnitOfWork
from pm_core.reconcile import ReconciliationReport, diff, reconciliation_blocks


@attrs.frozen
class ReconciliationRun:
    """One run: the diff (None when the broker did not answer) and the blocks it changed."""

    report: ReconciliationReport | None
    skipped: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()
    unblocked: tuple[str, ...] = ()
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready summary (``pm reconcile --json``)."""
        report = self.report
        return {
            "clean": report.clean if report is not None else None,
            "error": self.error,
            "skipped_in_flight": list(self.skipped),
            "blocked": list(self.blocked),
            "unblocked": list(self.unblocked),
            "matched": [attrs.asdict(r) for r in report.matched] if report else [],
            "orphaned": [attrs.asdict(r) for r in report.orphaned] if report else [],
            "missing": [attrs.asdict(r) for r in report.missing] if report else [],
            "mismatched": [attrs.asdict(r) for r in report.mismatched] if report else [],
            "ignored": [attrs.asdict(r) for r in report.ignored] if report else [],
        }


def reconcile(
    ports: Ports, config: DomainConfig, *, apply_blocks: bool = True
) -> ReconciliationRun:
    """Diff database legs against the broker and, fail-closed, block the differing instruments.

    The database is read before and after the broker's book. An instrument is compared only
    if, in both reads, no signal of it was in flight (processing or queued: its orders may be
    filled at the broker but not yet settled here), no intent of it was open, and its legs did
    not change in between (a signal that ran while the book was read).
    """

    def read(u: UnitOfWork) -> tuple[list[Position], set[str]]:
        snapshot = u.portfolio.read()
        busy = {i for i in config.instruments if u.intents.open_for(i)}
        busy.update(row.signal.instrument for row in u.signals.in_flight())
        return list(snapshot.positions), busy

    with ports.uow.begin("signal", read_only=True) as unit:
        before, busy_before = read(unit)
    book = ports.broker.positions()
    if not isinstance(book, Ok):
        return ReconciliationRun(None, error=f"{book.kind}: {book.message}")
    with ports.uow.begin("signal", read_only=True) as unit:
        positions, busy_after = read(unit)
    moved = {leg[0] for leg in _position_versions(before) ^ _position_versions(positions)}
    skip = busy_before | busy_after | moved
    busy = tuple(i for i in config.instruments if i in skip)
    rows = [r for r in book.value if _instrument_id(r.symbol, r.exchange, config) not in busy]
    kept = [p for p in positions if p.instrument not in busy]
    report = diff(kept, rows, config)
    if not apply_blocks:
        return ReconciliationRun(report, skipped=busy)
    wanted = reconciliation_blocks(report, config, ports.clock.now())
    blocked: list[str] = []
    unblocked: list[str] = []
    with ports.uow.begin("repair") as unit:
        unit.portfolio.lock()
        for instrument in config.instruments:
            if instrument in busy:
                continue
            current = unit.blocks.get(instrument)
            if instrument in wanted and current is None:
                unit.blocks.set(instrument, wanted[instrument])
                blocked.append(instrument)
            elif (
                instrument not in wanted
                and current is not None
                and current.reason == "reconciliation"
            ):
                unit.blocks.clear(instrument)
                unblocked.append(instrument)
        unit.commit()
    return ReconciliationRun(report, busy, tuple(blocked), tuple(unblocked))


def _position_versions(positions: list[Position]) -> set[tuple[str, int, int]]:
    """(instrument, position id, version) of each live position: what a change would move."""
    return {(p.instrument, p.id, p.version) for p in positions}


def _instrument_id(symbol: str, exchange: str, config: DomainConfig) -> str | None:
    inst = instrument_for_symbol(symbol, config, exchange)
    return inst.id if inst is not None else None


def acknowledge(ports: Ports, instrument: str) -> bool:
    """An operator lifts a reconciliation block (``pm reconcile --ack``); False if none."""
    with ports.uow.begin("repair") as unit:
        unit.portfolio.lock()
        current = unit.blocks.get(instrument)
        if current is None:
            return False
        unit.blocks.clear(instrument)
        unit.commit()
    return True
