"""Crash recovery (service.md 8): invariants, orphan takeover, unknown intents, locks.

Runs at every start and from ``pm recover``. It re-uses the service's execute and settle, so a
recovered signal ends exactly as it would have without the crash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import attrs

from pm_core.errors import ClaimLost, DatabaseUnavailable, PmError, StaleVersionError
from pm_core.model import PortfolioSnapshot
from pm_core.ports import TERMINAL_INTENT_STATES, StoredIntent, StoredSignal, UnitOfWork
from pm_core.service.pipeline import SignalService

log = logging.getLogger("pm.recovery")


@attrs.frozen
class RecoveryWarning:
    """One failed invariant: a stable code, what it concerns and the detail."""

    code: str
    subject: str
    detail: str


@attrs.frozen
class RecoveryReport:
    """What recovery found and did."""

    warnings: tuple[RecoveryWarning, ...] = ()
    takeovers: tuple[int, ...] = ()
    finished: tuple[tuple[int, str], ...] = ()  # (signal id, final status)
    left_pending: tuple[int, ...] = ()
    intents_unresolved: int = 0
    released_locks: int = 0
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data (``pm recover --json``)."""
        return {
            "dry_run": self.dry_run,
            "warnings": [attrs.asdict(w) for w in self.warnings],
            "takeovers": list(self.takeovers),
            "finished": [{"signal_id": i, "status": s} for i, s in self.finished],
            "left_pending": list(self.left_pending),
            "intents_unresolved": self.intents_unresolved,
            "released_locks": self.released_locks,
        }


def check_invariants(
    snapshot: PortfolioSnapshot, group_intents: list[StoredIntent]
) -> list[RecoveryWarning]:
    """Domain 7.7 and service.md 8 step 7 invariants of a snapshot, each failure a warning.

    ``group_intents``: the non-terminal intents, and every intent of a signal still in flight
    (an owner that died between its last fill and its settle leaves a reservation whose
    intents are all terminal; its signal's resume settles it).
    """
    found: list[RecoveryWarning] = []
    ids = {p.id for p in snapshot.positions}
    for p in snapshot.positions:
        if p.lots <= 0:
            found.append(RecoveryWarning("lots_not_positive", p.key, f"lots {p.lots}"))
        if p.quantity != p.lots * p.lot_size:
            found.append(
                RecoveryWarning(
                    "quantity_mismatch", p.key, f"{p.quantity} != {p.lots} x {p.lot_size}"
                )
            )
        if not p.is_base_position and p.anchor_base_id is None:
            found.append(RecoveryWarning("pyramid_without_anchor", p.key, "no anchor_base_id"))
        if p.status in ("pending_open", "closing") and not any(
            s.intent.position_id == p.id for s in group_intents
        ):
            found.append(
                RecoveryWarning("reservation_without_intents", p.key, f"status {p.status}")
            )
    bases: dict[str, int] = {}
    for p in snapshot.positions:
        if p.is_base_position:
            bases[p.instrument] = bases.get(p.instrument, 0) + 1
    for instrument, count in sorted(bases.items()):
        if count > 1:
            found.append(RecoveryWarning("several_open_bases", instrument, f"{count} open bases"))
    for instrument, state in sorted(snapshot.pyramiding.items()):
        if state.base_position_id is not None and state.base_position_id not in ids:
            found.append(
                RecoveryWarning(
                    "anchor_not_open", instrument, f"base_position_id {state.base_position_id}"
                )
            )
    return found


def recover(
    service: SignalService,
    is_live: Callable[[str], bool],
    *,
    dry_run: bool = False,
    release_locks: bool = True,
    check: bool = True,
) -> RecoveryReport:
    """Take over and finish the signals of dead owners; report every invariant warning."""
    ports = service.ports
    me = service.limits.instance_id

    def read(u: UnitOfWork) -> tuple[PortfolioSnapshot, list[StoredSignal], list[StoredIntent]]:
        return u.portfolio.read(), list(u.signals.in_flight()), list(u.intents.unresolved())

    with ports.uow.begin("signal", read_only=True) as unit:
        snapshot, in_flight, open_intents = read(unit)
        settling = (
            [s for row in in_flight for s in unit.intents.for_signal(row.id)] if check else []
        )
    # Invariants are a start-up check (service.md 8 step 7); the periodic sweep runs while
    # signals settle, where a reservation between its reads would look like a breach.
    warnings = check_invariants(snapshot, open_intents + settling) if check else []
    for w in warnings:
        log.warning("recovery invariant", extra={"code": w.code, "subject": w.subject})
    orphans = [
        row
        for row in in_flight
        if row.owner_instance_id != me
        and (row.owner_instance_id is None or not is_live(row.owner_instance_id))
    ]
    if dry_run:
        return RecoveryReport(
            warnings=tuple(warnings),
            takeovers=tuple(r.id for r in orphans),
            intents_unresolved=sum(
                1 for s in open_intents if s.state not in TERMINAL_INTENT_STATES
            ),
            dry_run=True,
        )
    takeovers: list[int] = []
    finished: list[tuple[int, str]] = []
    pending: list[int] = []
    # Unknown orders get this much broker time in all; what is left unresolved stays held
    # (barriered) and this instance's resolver keeps looking (service.md 8 step 8).
    resolve_by = ports.clock.monotonic() + service.limits.recovery_broker_budget_s
    for row in orphans:
        seen = row.claim_epoch

        def take(u: UnitOfWork, row_id: int = row.id, seen_epoch: int = seen) -> int | None:
            u.portfolio.lock()  # takeovers serialize with every state change
            return u.signals.take_over(row_id, seen_epoch, me)

        try:
            epoch = service._tx(take)
        except (DatabaseUnavailable, StaleVersionError) as exc:
            log.warning("takeover failed", extra={"signal_id": row.id, "error": str(exc)})
            pending.append(row.id)
            continue
        if epoch is None:
            continue  # someone else took it first
        takeovers.append(row.id)
        current = attrs.evolve(row, claim_epoch=epoch, owner_instance_id=me)
        try:
            answer = service.resume(
                current,
                epoch,
                abandon_after_s=service.limits.max_resume_age_s,
                resolve_by=resolve_by,
            )
        except (ClaimLost, DatabaseUnavailable, StaleVersionError, PmError) as exc:
            log.warning("resume failed", extra={"signal_id": row.id, "error": str(exc)})
            pending.append(row.id)
            if isinstance(exc, DatabaseUnavailable | StaleVersionError):
                # Taken over: this live instance owns it now, so no later sweep would.
                service.finish_later(row.fingerprint)
            continue
        status = str(answer.result.body.get("status"))
        if answer.terminal:
            finished.append((row.id, status))
        else:
            pending.append(row.id)
    released = 0
    if release_locks:
        try:
            released = ports.lock.release_orphans(is_live)
        except PmError as exc:
            log.warning("orphan lock release failed", extra={"error": str(exc)})
    with ports.uow.begin("signal", read_only=True) as unit:
        left = sum(1 for s in unit.intents.unresolved() if s.state not in TERMINAL_INTENT_STATES)
    return RecoveryReport(
        warnings=tuple(warnings),
        takeovers=tuple(takeovers),
        finished=tuple(finished),
        left_pending=tuple(pending),
        intents_unresolved=left,
        released_locks=released,
    )
