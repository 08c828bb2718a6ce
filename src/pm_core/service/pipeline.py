"""SignalService: one webhook signal from L1 to its stored answer (service.md 2).

reserve (T1) -> execute (no transaction) -> settle (T2), with L1 (this process), L2 (the
SignalLock port) and L3 (the unique signal row) in front. Everything decided is decided by
the pure core; this module only sequences port calls.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import attrs

from pm_core import codes as reason
from pm_core.config import DomainConfig
from pm_core.decide import apply_fills, decide, remap_intents, settle_decision
from pm_core.errors import ClaimLost, DatabaseUnavailable, PmError, StaleVersionError
from pm_core.model import (
    Block,
    Code,
    Decision,
    MarketContext,
    OrderIntent,
    PortfolioSnapshot,
    ReceivedSignal,
    RecordedSignals,
    Signal,
)
from pm_core.ports import (
    TERMINAL_INTENT_STATES,
    TERMINAL_SIGNAL_STATES,
    Claimed,
    Existing,
    LockHandle,
    Ports,
    SignalFence,
    StoredIntent,
    StoredSignal,
    UnitOfWork,
)
from pm_core.service.api import NullObserver, Observer, ServiceUnavailable, SignalResult
from pm_core.service.executor import Executor, GroupResult
from pm_core.service.l1 import L1Cache
from pm_core.service.limits import ServiceLimits
from pm_core.service.market import market_needs, read_market
from pm_core.service.mode import BrokerModeGuard
from pm_core.service.responses import (
    decided_body,
    duplicate_body,
    in_progress_body,
    order_rows,
    original_of,
)
from pm_core.service.tx import RetryPolicy, in_transaction
from pm_core.signal import find_duplicate

log = logging.getLogger("pm.service")
T = TypeVar("T")

# Intents a held signal's resolver follows again: the broker may yet tell their outcome.
_FOLLOWED_LATER = frozenset({"unknown", "sending", "accepted", "partially_filled"})


@attrs.frozen
class Reservation:
    """T1 committed a reservation: the intents to send for this signal."""

    signal_id: int
    epoch: int
    decision: Decision
    intents: tuple[StoredIntent, ...]


@attrs.frozen
class Answer:
    """T1 (or a duplicate layer) already settled the answer."""

    result: SignalResult
    signal_id: int | None
    terminal: bool


class SignalService:
    """Processes signals exactly once through the ports (architecture 7)."""

    def __init__(
        self,
        ports: Ports,
        config: DomainConfig,
        limits: ServiceLimits,
        observer: Observer | None = None,
    ) -> None:
        self.ports = ports
        self.config = config
        self.limits = limits
        self.observer: Observer = observer or NullObserver()
        self.mode_guard = (
            BrokerModeGuard(
                ports.broker, limits.expected_broker_mode, ports.clock, limits.broker_mode_check_s
            )
            if limits.expected_broker_mode
            else None
        )
        self.executor = Executor(ports, limits, config, self.observer, self.mode_guard)
        self.l1 = L1Cache(limits.l1_size)
        self.request_policy = RetryPolicy(
            limits.tx_attempts,
            limits.tx_backoff_base_ms / 1000,
            limits.tx_backoff_cap_ms / 1000,
            limits.tx_budget_request_ms / 1000,
        )
        self._pool = ThreadPoolExecutor(limits.signal_workers, thread_name_prefix="pm-signal")
        self._slots = threading.BoundedSemaphore(limits.signal_workers + limits.signal_queue)
        self._inflight = 0
        self._inflight_lock = threading.Lock()
        self._idle = threading.Condition(self._inflight_lock)
        # Duplicates of the L1/L2/L3 layers and invalid requests record no outcome row, so
        # their counters are buffered here and flushed by the runtime (service.md 11).
        self._stats: dict[str, float] = {}
        self._stats_lock = threading.Lock()
        # Fingerprints whose processing the database interrupted after T1 (service.md 5).
        self._held: set[str] = set()
        self._held_lock = threading.Lock()
        self._closing = threading.Event()

    def count(self, name: str, delta: float = 1) -> None:
        """Add to a buffered statistics counter."""
        with self._stats_lock:
            self._stats[name] = self._stats.get(name, 0) + delta

    def take_counts(self) -> dict[str, float]:
        """The buffered counters, emptied (the caller writes them)."""
        with self._stats_lock:
            taken, self._stats = self._stats, {}
        return taken

    def flush_counts(self) -> None:
        """Write the buffered counters; on failure they are kept for the next flush."""
        taken = self.take_counts()
        if not taken:
            return
        try:
            self._tx(lambda u: u.statistics.add(taken))
        except PmError:
            for name, delta in taken.items():
                self.count(name, delta)
            raise

    def set_observer(self, observer: Observer) -> None:
        """Report to ``observer`` from now on."""
        self.observer = observer
        self.executor.observer = observer

    # ------------------------------------------------------------------ pool

    def submit(self, received: ReceivedSignal, request_id: str) -> Future[SignalResult]:
        """Queue a signal on the worker pool; ServiceUnavailable(overloaded) when full."""
        if not self._slots.acquire(blocking=False):
            raise ServiceUnavailable("overloaded", 1)
        with self._inflight_lock:
            self._inflight += 1
        self.observer.inflight(1)
        try:
            future = self._pool.submit(self.handle, received, request_id)
        except RuntimeError:  # pool shut down
            self._done(None)
            raise ServiceUnavailable("draining", 5) from None
        future.add_done_callback(self._done)
        return future

    def _done(self, _future: Future[SignalResult] | None) -> None:
        self._slots.release()
        self.observer.inflight(-1)
        with self._inflight_lock:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no signal is in flight here (graceful shutdown); False on timeout."""
        with self._inflight_lock:
            return self._idle.wait_for(lambda: self._inflight == 0, timeout_s)

    def shutdown(self) -> None:
        """Stop taking work; running signals finish."""
        self._closing.set()
        self._pool.shutdown(wait=False, cancel_futures=False)

    # ------------------------------------------------------------------ held signals

    def finish_later(self, fingerprint: str) -> None:
        """Finish a held signal of this instance in the background.

        The database failed mid-signal, or an order's outcome is unknown and the books could
        not be read yet (the outbox resolver of service.md 2.4). Its owner is this live
        instance, so no takeover would ever pick it up; without this it would answer 202 for
        ever (service.md 5: results obtained meanwhile are written on return). A send whose
        answer was lost is resolved from the books, never re-sent.
        """
        with self._held_lock:
            if fingerprint in self._held:
                return
            self._held.add(fingerprint)
        thread = threading.Thread(
            target=self._finish_held, args=(fingerprint,), name="pm-held", daemon=True
        )
        thread.start()

    def _finish_held(self, fp: str) -> None:
        clock = self.ports.clock
        # Bounds how long the database may stay unusable; unknown orders are looked up until
        # they resolve (or turn ambiguous when their exchange day ends).
        deadline = clock.monotonic() + self.limits.held_result_max_s
        try:
            while clock.monotonic() < deadline:
                if self._closing.wait(self.limits.held_result_retry_ms / 1000):
                    return
                entry = self.l1.get(fp)
                if entry is not None and entry.terminal is not None:
                    return
                if not self.l1.begin(fp):
                    continue  # a delivery is working on it in this process right now
                answer: Answer | None = None
                try:
                    row = self._tx(lambda u: u.signals.by_fingerprint(fp))
                    if (
                        row is None
                        or row.status in TERMINAL_SIGNAL_STATES
                        or row.status == "queued"
                        or row.owner_instance_id != self.limits.instance_id
                    ):
                        return  # never committed, done, waiting its turn, or taken over
                    # Deliveries meanwhile are answered 202 in_progress with this id.
                    self.l1.note_signal_id(fp, row.id)
                    answer = self.resume(
                        row, row.claim_epoch, abandon_after_s=self.limits.max_resume_age_s
                    )
                    if answer.terminal or not self._awaits_broker(row.id):
                        return  # done, or an ambiguous order waits for an operator
                    deadline = clock.monotonic() + self.limits.held_result_max_s
                except (DatabaseUnavailable, StaleVersionError) as exc:
                    log.info("held signal waits for the database", extra={"error": str(exc)})
                except PmError as exc:
                    log.warning("held signal left for recovery", extra={"error": str(exc)})
                    return
                finally:
                    if answer is not None and answer.terminal:
                        self.l1.finish(fp, answer.signal_id, answer.result, clock.now())
                    else:
                        self.l1.forget(fp)
            log.error("held signal not finished in time; recovery finishes it", extra={"fp": fp})
        finally:
            with self._held_lock:
                self._held.discard(fp)

    # ------------------------------------------------------------------ handle

    def handle(self, received: ReceivedSignal, request_id: str) -> SignalResult:
        """Process one validated signal and return its HTTP answer."""
        clock = self.ports.clock
        started = clock.monotonic()
        signal = received.signal
        fp = received.fingerprint
        entry = self.l1.get(fp)
        if entry is not None:
            if entry.terminal is not None:
                self.observer.duplicate("l1")
                self.count("duplicates_l1")
                self.observer.signal_finished(
                    "duplicate", signal.instrument, signal.type, clock.monotonic() - started
                )
                return self._duplicate(
                    request_id,
                    "l1",
                    entry.signal_id,
                    fp,
                    original_of(
                        entry.terminal.http_status, entry.completed_at, entry.terminal.body
                    ),
                )
            return self.in_progress(received, request_id)
        if not self.l1.begin(fp):
            return self.in_progress(received, request_id)
        handle: LockHandle | None = None
        answer: Answer | None = None
        try:
            handle = self._acquire_lock(fp)
            if handle is None:
                answer = self._wait_for_owner(fp, request_id)
            if answer is None:
                market = self._market(signal)
                answer = self._process(received, market, request_id, started)
            return answer.result
        except (DatabaseUnavailable, StaleVersionError) as exc:
            log.warning("database unavailable while processing", extra={"error": str(exc)})
            answer = None
            # T1 may have committed even though its COMMIT failed: check again later.
            self.finish_later(fp)
            return SignalResult(
                503,
                {
                    "status": "unavailable",
                    "request_id": request_id,
                    "reason": "database_unavailable",
                    "retry_after_s": 5,
                },
                retry_after_s=5,
            )
        finally:
            if handle is not None:
                self._release_lock(handle)
            if answer is not None and answer.terminal:
                self.l1.finish(fp, answer.signal_id, answer.result, clock.now())
            else:
                self.l1.forget(fp)
            self.observer.signal_finished(
                str(answer.result.body.get("status")) if answer else "error",
                signal.instrument,
                signal.type,
                clock.monotonic() - started,
            )

    def in_progress(self, received: ReceivedSignal, request_id: str) -> SignalResult:
        """The answer past the response deadline: 202 once T1 committed, else 503.

        No 2xx before T1 commits (service.md 5): if the signal is still waiting for its
        reservation, the caller is told to retry; a retry is answered from the stored row.
        """
        fp = received.fingerprint
        entry = self.l1.get(fp)
        if entry is not None and entry.terminal is not None:
            terminal = entry.terminal
            if terminal.body.get("request_id") == request_id:
                return terminal  # this delivery's own outcome, finished past its deadline
            # Another delivery of the signal finished it while this one waited for a worker:
            # a repeat is answered as a duplicate (webhook.md 1.3), never as a new decision.
            self.observer.duplicate("l1")
            self.count("duplicates_l1")
            original = original_of(terminal.http_status, entry.completed_at, terminal.body)
            return self._duplicate(request_id, "l1", entry.signal_id, fp, original)
        signal_id = entry.signal_id if entry is not None else None
        if signal_id is None:
            body = {
                "status": "unavailable",
                "request_id": request_id,
                "reason": "overloaded",
                "retry_after_s": 1,
            }
            return SignalResult(503, body, retry_after_s=1)
        return SignalResult(202, in_progress_body(request_id, signal_id, fp, "processing"))

    # ------------------------------------------------------------------ L2

    def _acquire_lock(self, fp: str) -> LockHandle | None:
        try:
            handle = self.ports.lock.acquire(fp, self.limits.signal_lock_ttl_ms)
        except PmError as exc:
            self.observer.lock_failure("store_down")
            log.warning("signal lock unavailable", extra={"error": str(exc)})
            return LockHandle(fp, "", self.limits.instance_id, degraded=True)
        if handle is None:
            self.observer.lock_failure("held")
        return handle

    def _release_lock(self, handle: LockHandle) -> None:
        if handle.degraded:
            return
        try:
            self.ports.lock.release(handle)
        except PmError as exc:
            log.warning("signal lock release failed", extra={"error": str(exc)})

    def _wait_for_owner(self, fp: str, request_id: str) -> Answer | None:
        """L2 held elsewhere: poll for the owner's row a short while, else fall through to L3."""
        clock = self.ports.clock
        deadline = clock.monotonic() + self.limits.lock_wait_ms / 1000
        while True:
            row = self._tx(lambda u: u.signals.by_fingerprint(fp))
            if row is not None:
                return self._answer_existing(row, request_id, "l2")
            if clock.monotonic() >= deadline:
                return None
            clock.sleep(self.limits.lock_poll_ms / 1000)

    def _answer_existing(self, row: StoredSignal, request_id: str, layer: str) -> Answer:
        if row.status in TERMINAL_SIGNAL_STATES:
            self.observer.duplicate(layer)
            self.count(f"duplicates_{layer}")
            if row.status == "duplicate":
                original = self._tx(lambda u: self._near_original(u, row.signal, row.id))
            else:
                original = original_of(
                    row.http_status, row.completed_at, row.response or row.outcome
                )
            return Answer(
                self._duplicate(request_id, layer, row.id, row.fingerprint, original), row.id, True
            )
        return Answer(
            SignalResult(202, in_progress_body(request_id, row.id, row.fingerprint, row.status)),
            row.id,
            False,
        )

    def _duplicate(
        self,
        request_id: str,
        layer: str,
        signal_id: int | None,
        fp: str,
        original: Mapping[str, Any] | None,
    ) -> SignalResult:
        code = Code("duplicate_fingerprint", {"fingerprint": fp})
        body = duplicate_body(
            request_id, layer, code.code, reason.render(code), signal_id or 0, fp, original
        )
        return SignalResult(200, body)

    # ------------------------------------------------------------------ market

    def _market(self, signal: Signal) -> MarketContext:
        needs = market_needs(signal, self.config, self.ports.clock.now())
        return read_market(
            self.ports.broker, needs, self.ports.clock, self.limits.market_data_timeout_ms
        )

    # ------------------------------------------------------------------ phases

    def _tx(self, work: Callable[[UnitOfWork], T]) -> T:
        return in_transaction(
            self.ports.uow,
            work,
            self.ports.clock,
            self.request_policy,
            on_retry=lambda exc: self.observer.tx_retry(type(exc).__name__),
        )

    def _process(
        self,
        received: ReceivedSignal,
        market: MarketContext,
        request_id: str,
        started: float,
        claimed: tuple[int, int] | None = None,
    ) -> Answer:
        outcome = self._reserve(received, market, request_id, started, claimed)
        if isinstance(outcome, Answer):
            return outcome
        try:
            group = self.executor.run_group(
                SignalFence(outcome.signal_id, outcome.epoch), outcome.intents
            )
            answer = self._settle(received, outcome, group, request_id, started)
        except (ClaimLost, DatabaseUnavailable, StaleVersionError) as exc:
            in_progress = Answer(
                SignalResult(
                    202,
                    in_progress_body(
                        request_id, outcome.signal_id, received.fingerprint, "processing"
                    ),
                ),
                outcome.signal_id,
                False,
            )
            if isinstance(exc, ClaimLost):
                log.warning("claim lost; the new owner finishes", extra={"error": str(exc)})
                return in_progress
            # T1 committed: never 503 now (webhook.md 1.2); this instance finishes it later.
            log.warning("database lost after T1; finishing later", extra={"error": str(exc)})
            self.finish_later(received.fingerprint)
            return in_progress
        self._run_queued_safely(received.signal.instrument)
        return answer

    def _reserve(
        self,
        received: ReceivedSignal,
        market: MarketContext,
        request_id: str,
        started: float,
        claimed: tuple[int, int] | None,
    ) -> Answer | Reservation:
        signal = received.signal
        fp = received.fingerprint
        config = self.config
        clock = self.ports.clock
        me = self.limits.instance_id

        new_row: list[int] = []  # the committed attempt's claim, if it inserted the row

        def work(u: UnitOfWork) -> Answer | Reservation:
            new_row.clear()
            if claimed is None:
                claim = u.signals.claim(signal, fp, received.received_at, me, 1)
                if isinstance(claim, Existing):
                    return self._answer_l3(claim, request_id, fp, u, signal)
                assert isinstance(claim, Claimed)
                signal_id, epoch = claim.id, claim.epoch
                new_row.append(signal_id)
            else:
                signal_id, epoch = claimed
            snapshot = u.portfolio.lock()
            near = [
                r
                for r in u.signals.near(
                    signal.instrument,
                    signal.type,
                    signal.position,
                    signal.timestamp,
                    config.portfolio.near_duplicate_window_s,
                )
                if r.signal_id != signal_id
            ]
            recorded = RecordedSignals(near)
            dup = find_duplicate(recorded, signal, fp, config.portfolio.near_duplicate_window_s)
            if dup is not None:
                original = dup[1]
                u.signals.mark_duplicate(signal_id, original.signal_id or 0, "near", epoch)
                u.statistics.add({"duplicates_near": 1})
                return self._answer_near(u, signal_id, fp, request_id, original.signal_id)
            if self._barriered(u, snapshot, signal.instrument, signal_id):
                u.signals.set_state(signal_id, "queued", epoch)
                return Answer(
                    SignalResult(202, in_progress_body(request_id, signal_id, fp, "queued")),
                    signal_id,
                    False,
                )
            now = clock.now()
            mine = attrs.evolve(received, signal_id=signal_id)
            decision = decide(snapshot, mine, market, config, now, check_duplicates=False)
            if not decision.intents:
                u.portfolio.save(decision.changes, snapshot.version)
                body = decided_body(
                    request_id, signal_id, fp, signal, decision, (), self._elapsed_ms(started)
                )
                u.signals.finish(signal_id, decision, epoch, 200, body)
                return Answer(SignalResult(200, body), signal_id, True)
            ids = u.portfolio.save(decision.changes, snapshot.version)
            intents = self._order_style(remap_intents(decision.intents, ids))
            intent_ids = u.intents.add(intents, signal_id)
            stored = tuple(
                StoredIntent(id=i, intent=intent, state="pending", signal_id=signal_id)
                for i, intent in zip(intent_ids, intents, strict=True)
            )
            return Reservation(signal_id, epoch, decision, stored)

        result = self._tx(work)
        if new_row:
            # T1 committed a new signal row. Counted here, buffered and flushed by the runtime,
            # so that no counter row is locked inside T1 (it serialized every signal).
            self.count("signals_received")
        if isinstance(result, Reservation):
            self.l1.note_signal_id(fp, result.signal_id)  # committed: 202s may name it
        return result

    def _order_style(self, intents: tuple[OrderIntent, ...]) -> tuple[OrderIntent, ...]:
        """Signal legs as LIMIT intents under ``PM_SIGNAL_ORDER_STYLE=ladder``: the executor
        prices them from a fresh quote when it sends them (domain 9.7)."""
        if self.limits.signal_order_style != "ladder":
            return intents
        return tuple(
            i.replace(pricetype="LIMIT") if i.origin == "signal" and i.pricetype == "MARKET" else i
            for i in intents
        )

    def _answer_l3(
        self, claim: Existing, request_id: str, fp: str, u: UnitOfWork, signal: Signal
    ) -> Answer:
        self.observer.duplicate("l3")
        self.count("duplicates_l3")
        if claim.status in TERMINAL_SIGNAL_STATES:
            if claim.status == "duplicate":
                # A near duplicate stores no response: replay the original it duplicated.
                original = self._near_original(u, signal, claim.id)
            else:
                original = original_of(
                    claim.http_status, claim.completed_at, claim.response or claim.outcome
                )
            return Answer(self._duplicate(request_id, "l3", claim.id, fp, original), claim.id, True)
        return Answer(
            SignalResult(202, in_progress_body(request_id, claim.id, fp, claim.status)),
            claim.id,
            False,
        )

    @staticmethod
    def _row_original(row: StoredSignal | None) -> Mapping[str, Any] | None:
        """What a near duplicate replays: the original's stored answer, or its state."""
        if row is None:
            return None
        if row.status in TERMINAL_SIGNAL_STATES:
            return original_of(row.http_status, row.completed_at, row.response or row.outcome)
        return {"state": row.status, "signal_id": row.id}

    def _near_original(
        self, u: UnitOfWork, signal: Signal, own_id: int
    ) -> Mapping[str, Any] | None:
        """The original a stored near duplicate (``own_id``) duplicated, found as T1 found it."""
        window = self.config.portfolio.near_duplicate_window_s
        for r in u.signals.near(
            signal.instrument, signal.type, signal.position, signal.timestamp, window
        ):
            if r.signal_id and r.signal_id != own_id:
                return self._row_original(u.signals.get(r.signal_id))
        return None

    def _answer_near(
        self, u: UnitOfWork, signal_id: int, fp: str, request_id: str, of_id: int | None
    ) -> Answer:
        self.observer.duplicate("near")
        original_row = u.signals.get(of_id) if of_id else None
        original = self._row_original(original_row)
        code = Code(
            "duplicate_near_window",
            {
                "window": self.config.portfolio.near_duplicate_window_s,
                "original_ts": original_row.signal.timestamp.isoformat() if original_row else "",
            },
        )
        body = duplicate_body(
            request_id, "near", code.code, reason.render(code), signal_id, fp, original
        )
        return Answer(SignalResult(200, body), signal_id, True)

    def _barriered(
        self, u: UnitOfWork, snapshot: PortfolioSnapshot, instrument: str, signal_id: int
    ) -> bool:
        """An order group in flight, or an older queued signal, on the instrument.

        A group is in flight until its T2: between its last fill and T2 (longer when the
        database fails there) its intents are terminal but its reservation stands, and a
        signal deciding now would act on positions not yet settled.
        """
        open_intents = u.intents.open_for(instrument)
        if any(s.state not in ("ambiguous",) for s in open_intents):
            return True
        oldest = u.signals.oldest_queued(instrument)
        if oldest is not None and oldest.id != signal_id:
            return True
        if open_intents or not any(
            p.instrument == instrument and p.status in ("pending_open", "closing")
            for p in snapshot.positions
        ):
            return False  # an ambiguous order does not queue signals; no reservation stands
        return any(
            row.id != signal_id
            and row.status == "processing"
            and row.signal.instrument == instrument
            and u.intents.for_signal(row.id)
            for row in u.signals.in_flight()
        )

    def _awaits_broker(self, signal_id: int) -> bool:
        """Some order of the signal is still unknown or live (the broker may yet tell)."""
        stored = self._tx(lambda u: u.intents.for_signal(signal_id))
        return any(s.state in _FOLLOWED_LATER for s in stored)

    def _hold(
        self,
        received: ReceivedSignal,
        reservation: Reservation,
        unresolved: list[StoredIntent],
        request_id: str,
    ) -> Answer:
        """An intent is still unknown or ambiguous: settle nothing yet (openalgo.md 5).

        The signal stays processing and its instrument barriered. An unknown order, or one
        whose cancel was not confirmed, is followed again in the background
        (``finish_later``); an ambiguous one also blocks new entries until
        ``pm intents resolve`` (which then settles the signal).
        """
        signal = received.signal
        if any(s.state in _FOLLOWED_LATER for s in unresolved):
            self.finish_later(received.fingerprint)
        ambiguous = [s for s in unresolved if s.state == "ambiguous"]
        if ambiguous:
            ids = [s.intent.client_order_id for s in ambiguous]
            log.error(
                "ambiguous order: an operator must resolve it with pm intents resolve",
                extra={"signal_id": reservation.signal_id, "client_order_ids": ids},
            )

            def block(u: UnitOfWork) -> None:
                u.portfolio.lock()
                if u.blocks.get(signal.instrument) is None:
                    u.blocks.set(
                        signal.instrument,
                        Block(
                            "ambiguous_order",
                            self.ports.clock.now(),
                            {"signal_id": reservation.signal_id, "client_order_ids": ids},
                        ),
                    )

            self._tx(block)
        return Answer(
            SignalResult(
                202,
                in_progress_body(
                    request_id, reservation.signal_id, received.fingerprint, "processing"
                ),
            ),
            reservation.signal_id,
            False,
        )

    def resolve_signal(self, signal_id: int) -> Answer | None:
        """Settle a signal whose intents an operator resolved (``pm intents resolve``).

        Takes the signal over whoever owns it, follows bound orders to their fills, settles,
        and lifts the instrument's ambiguous_order block when nothing ambiguous is left.
        """
        me = self.limits.instance_id

        def take(u: UnitOfWork) -> tuple[StoredSignal, int] | None:
            u.portfolio.lock()
            row = u.signals.get(signal_id)
            if row is None or row.status not in ("processing", "queued"):
                return None
            epoch = u.signals.take_over(row.id, row.claim_epoch, me)
            return None if epoch is None else (row, epoch)

        taken = self._tx(take)
        if taken is None:
            return None
        row, epoch = taken
        instrument = row.signal.instrument

        def unblock(u: UnitOfWork) -> None:
            u.portfolio.lock()
            block = u.blocks.get(instrument)
            if block is None or block.reason != "ambiguous_order":
                return
            if not any(s.state == "ambiguous" for s in u.intents.open_for(instrument)):
                u.blocks.clear(instrument)

        # Lift the block first: settling runs the instrument's queued signals, and queued
        # entries must not be rejected by a block that no longer has a reason.
        self._tx(unblock)
        return self.resume(attrs.evolve(row, claim_epoch=epoch), epoch, abandon_after_s=None)

    def _settle(
        self,
        received: ReceivedSignal,
        reservation: Reservation,
        group: GroupResult,
        request_id: str,
        started: float,
    ) -> Answer:
        signal = received.signal
        config = self.config
        unresolved = [s for s in group.intents if s.state not in TERMINAL_INTENT_STATES]
        if unresolved:
            return self._hold(received, reservation, unresolved, request_id)
        fills = group.fills()
        intents = [s.intent for s in group.intents]

        def work(u: UnitOfWork) -> Answer:
            # This signal's intents are terminal and only its owner writes them: read before
            # the portfolio lock, which every instance's T1 and T2 queue on.
            stored = u.intents.for_signal(reservation.signal_id)
            # Every order the broker took for this signal: retries and unwinds included.
            sent = sum(1 for s in stored if s.broker_order_id)
            snapshot = u.portfolio.lock()
            changes = apply_fills(snapshot, intents, fills, config)
            if sent:
                counts = {**changes.statistics}
                counts["orders_placed"] = counts.get("orders_placed", 0) + sent
                changes = attrs.evolve(changes, statistics=counts)
            u.portfolio.save(changes, snapshot.version)
            final = settle_decision(reservation.decision, changes.settlement)
            if reservation.decision.codes and final.outcome == "failed":
                # Abandoned: the reason is the crash, not a broker failure.
                final = attrs.evolve(
                    final,
                    codes=reservation.decision.codes,
                    messages=reservation.decision.messages,
                )
            if group.attention:
                u.blocks.set(
                    signal.instrument,
                    Block(
                        "unwind_failed",
                        self.ports.clock.now(),
                        {"signal_id": reservation.signal_id},
                    ),
                )
            body = decided_body(
                request_id,
                reservation.signal_id,
                received.fingerprint,
                signal,
                final,
                order_rows(stored),
                self._elapsed_ms(started),
            )
            u.signals.finish(reservation.signal_id, final, reservation.epoch, 200, body)
            return Answer(SignalResult(200, body), reservation.signal_id, True)

        return self._tx(work)

    def resume(
        self,
        row: StoredSignal,
        epoch: int,
        *,
        abandon_after_s: float | None,
        resolve_by: float | None = None,
    ) -> Answer:
        """Finish a signal taken over from a dead owner (service.md 8 step 8).

        Its committed intents are executed or resolved (never re-sent once sent); an entry
        none of whose legs was sent is abandoned when older than ``abandon_after_s``.
        """
        clock = self.ports.clock
        started = clock.monotonic()
        received = ReceivedSignal(row.signal, row.fingerprint, row.received_at, signal_id=row.id)
        if row.status == "queued":
            # A dead owner's queued signal: run the instrument's queue now if nothing is in
            # flight there (else the T2 that clears the barrier runs it).
            self._run_queued(row.signal.instrument)
            return Answer(
                SignalResult(202, in_progress_body("recovery", row.id, row.fingerprint, "queued")),
                row.id,
                False,
            )
        intents = tuple(self._tx(lambda u: u.intents.for_signal(row.id)))
        if not intents:
            # T1 never committed a reservation for it: decide it now, as a fresh signal would.
            market = self._market(row.signal)
            return self._process(received, market, f"recovery-{row.id}", started, (row.id, epoch))
        age = (clock.now() - row.received_at).total_seconds()
        unsent = all(s.state == "pending" and s.attempts == 0 for s in intents)
        entry = row.signal.type in ("BASE_ENTRY", "PYRAMID")
        abandon = entry and unsent and abandon_after_s is not None and age > abandon_after_s
        if abandon:
            finals = tuple(self.executor.abandon(s, "abandoned after a crash") for s in intents)
            group = GroupResult(finals)
            base = Decision(
                outcome="pending",
                codes=(Code("abandoned_after_crash", {"age": age}),),
                messages=(reason.render(Code("abandoned_after_crash", {"age": age})),),
            )
        else:
            group = self.executor.run_group(SignalFence(row.id, epoch), intents, resolve_by)
            base = Decision(
                outcome="pending", total_pnl=0.0 if row.signal.position == "ALL" else None
            )
        reservation = Reservation(row.id, epoch, base, intents)
        answer = self._settle(received, reservation, group, f"recovery-{row.id}", started)
        self._run_queued(row.signal.instrument)
        return answer

    def run_queued(self) -> None:
        """Run every instrument's queued signals whose barrier is clear (the leader sweep).

        The T2 that clears a barrier runs the queue; this catches queues nobody ran (that
        instance died right after T2, or the database failed there) whose owner is alive,
        which no takeover would ever pick up (service.md 2.6).
        """
        for instrument in self.config.instruments:
            self._run_queued_safely(instrument)

    def _run_queued_safely(self, instrument: str) -> None:
        # The signal that cleared the barrier is settled: a database failure here must not
        # turn its answer into a 503; the sweep runs what is left queued.
        try:
            self._run_queued(instrument)
        except (DatabaseUnavailable, StaleVersionError) as exc:
            log.warning("queued signals left for the sweep", extra={"error": str(exc)})

    def _run_queued(self, instrument: str) -> None:
        """After T2 cleared the barrier, this instance claims the oldest queued signal."""
        me = self.limits.instance_id
        for _ in range(1000):  # bounded: each pass finishes one queued signal

            def claim(u: UnitOfWork) -> tuple[StoredSignal, int] | None:
                # Usually nothing is queued: look for that first, it is one read.
                row = u.signals.oldest_queued(instrument)
                if row is None or any(u.intents.open_for(instrument)):
                    return None
                epoch = u.signals.take_over(row.id, row.claim_epoch, me)
                if epoch is None:
                    return None
                u.signals.set_state(row.id, "processing", epoch)
                return row, epoch

            taken = self._tx(claim)
            if taken is None:
                return
            row, epoch = taken
            received = ReceivedSignal(
                row.signal, row.fingerprint, row.received_at, queued=True, signal_id=row.id
            )
            market = self._market(row.signal)
            clock = self.ports.clock
            try:
                answer = self._process(
                    received, market, f"queued-{row.id}", clock.monotonic(), (row.id, epoch)
                )
            except (DatabaseUnavailable, StaleVersionError, ClaimLost) as exc:
                log.warning("queued signal left for recovery", extra={"error": str(exc)})
                if not isinstance(exc, ClaimLost):
                    self.finish_later(row.fingerprint)  # it is ours now: no takeover comes
                return
            if not answer.terminal:
                # Held, or queued again (a group of the instrument filled but not yet
                # settled): the T2 that clears the barrier runs the queue.
                return
            self.l1.finish(row.fingerprint, row.id, answer.result, clock.now())

    def _elapsed_ms(self, started: float) -> int:
        return round((self.ports.clock.monotonic() - started) * 1000)
