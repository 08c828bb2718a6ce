"""Execute committed order intents outside any transaction (service.md 2.4).

Each leg: a rate token, a committed claim (pending -> sending) under the fence, the broker
call, then state transitions and fills. Unknown sends are resolved from the books and never
re-sent. Legs of one position run in order (hedge first); a failed leg of an entry unwinds
the filled ones, a failed exit leg is retried with a new attempt.

A LIMIT intent (``PM_SIGNAL_ORDER_STYLE=ladder``) is sent as the limit ladder of domain 9.7:
P_0 from a fresh quote, a poll after the placement and after every modification, then cancel
and, with ``rollover_market_fallback``, a MARKET order for what remains (a new attempt).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal, TypeVar

import attrs

from pm_core.config import DomainConfig
from pm_core.errors import RateBudgetExceeded
from pm_core.model import Fill, OrderIntent, Quote
from pm_core.orders import client_order_id, match_unknown
from pm_core.ports import (
    TERMINAL_INTENT_STATES,
    Accepted,
    Definitive,
    Fence,
    IntentState,
    Ok,
    OrderRequest,
    OrderStatus,
    Ports,
    StoredIntent,
    SubmitResult,
    TradeRow,
    UnitOfWork,
)
from pm_core.rollover import LadderPlan, ladder_plan, positive_ltp
from pm_core.service.api import NullObserver, Observer
from pm_core.service.limits import ServiceLimits
from pm_core.service.mode import BrokerModeGuard, mismatch_message, parse_mismatch
from pm_core.service.tx import RetryPolicy, in_transaction

log = logging.getLogger("pm.executor")
T = TypeVar("T")

_FINAL_FILL_STATE: Mapping[str, str] = {
    "filled": "filled",
    "partially_filled": "partially_filled",
    "cancelled": "cancelled",
    "rejected": "rejected",
    "failed": "failed",
    "not_found": "not_found",
    "abandoned": "failed",
    "ambiguous": "failed",
    "unknown": "failed",
    "pending": "failed",
    "sending": "failed",
    "accepted": "failed",
}


_STORED_FIELDS = frozenset(f.name for f in attrs.fields(StoredIntent))


def fill_of(stored: StoredIntent) -> Fill:
    """The Fill an intent's recorded state amounts to."""
    state = _FINAL_FILL_STATE.get(stored.state, "failed")
    if state == "cancelled" and stored.filled_quantity >= stored.intent.quantity:
        state = "filled"
    mismatch = parse_mismatch(stored.last_error)
    return Fill(
        client_order_id=stored.intent.client_order_id,
        filled_quantity=stored.filled_quantity,
        average_price=stored.average_price,
        state=state,  # type: ignore[arg-type]
        detail=stored.last_error or "",
        code="broker_mode_mismatch" if mismatch else "order_failed",
        params={"mode": mismatch[0], "expected": mismatch[1]} if mismatch else {},
    )


@attrs.frozen
class GroupResult:
    """Every intent of the group as finally recorded, follow-ups (retries, unwinds) included."""

    intents: tuple[StoredIntent, ...]
    attention: bool = False

    def fills(self) -> dict[str, Fill]:
        """Fills keyed by client order id, for apply_fills."""
        return {s.intent.client_order_id: fill_of(s) for s in self.intents}


class Executor:
    """Sends a signal's intents and follows them to a terminal state."""

    def __init__(
        self,
        ports: Ports,
        limits: ServiceLimits,
        config: DomainConfig,
        observer: Observer | None = None,
        mode_guard: BrokerModeGuard | None = None,
    ) -> None:
        self.ports = ports
        self.limits = limits
        self.config = config  # tick sizes and the ladder settings (LIMIT intents)
        self.mode_guard = mode_guard
        self.observer = observer or NullObserver()
        self.policy = RetryPolicy(
            limits.tx_attempts,
            limits.tx_backoff_base_ms / 1000,
            limits.tx_backoff_cap_ms / 1000,
            limits.tx_budget_background_ms / 1000,
        )

    # ------------------------------------------------------------------ transactions

    def _tx(self, work: Callable[[UnitOfWork], T]) -> T:
        return in_transaction(
            self.ports.uow,
            work,
            self.ports.clock,
            self.policy,
            on_retry=lambda exc: self.observer.tx_retry(type(exc).__name__),
        )

    def _get(self, intent_id: int) -> StoredIntent:
        stored = self._tx(lambda u: u.intents.get(intent_id))
        assert stored is not None, f"intent {intent_id} vanished"
        return stored

    def _move(
        self, stored: StoredIntent, to: IntentState, data: Mapping[str, Any] | None = None
    ) -> StoredIntent:
        frm = stored.state
        values = dict(data or {})
        moved = self._tx(lambda u: u.intents.transition(stored.id, frm, to, values))
        if not moved:
            return self._get(stored.id)  # it changed under us: read what it is now
        self.observer.intent_state(frm, -1)
        self.observer.intent_state(to, 1)
        # The conditional update succeeded, so the row is exactly this: no re-read needed.
        kept = {k: v for k, v in values.items() if k in _STORED_FIELDS}
        return attrs.evolve(stored, state=to, **kept)

    # ------------------------------------------------------------------ group

    def run_group(
        self, fence: Fence, intents: Sequence[StoredIntent], resolve_by: float | None = None
    ) -> GroupResult:
        """Execute a signal's intents, position by position, legs in seq order.

        ``resolve_by`` (monotonic) bounds the broker look-ups for intents already unknown
        (recovery's PM_RECOVERY_BROKER_BUDGET_S); see ``resolve_unknown``.
        """
        by_position: dict[int, list[StoredIntent]] = {}
        for stored in sorted(intents, key=lambda s: s.intent.seq):
            by_position.setdefault(stored.intent.position_id, []).append(stored)
        done: list[StoredIntent] = []
        attention = False
        for legs in by_position.values():
            finals, needs_attention = self._run_position(fence, legs, resolve_by)
            done.extend(finals)
            attention = attention or needs_attention
        return GroupResult(tuple(done), attention)

    def _run_position(
        self, fence: Fence, legs: Sequence[StoredIntent], resolve_by: float | None
    ) -> tuple[list[StoredIntent], bool]:
        finals: list[StoredIntent] = []
        opening = legs[0].intent.action == "BUY" and legs[0].intent.leg in ("CE", "FUT")
        failed = False
        for index, stored in enumerate(legs):
            if failed:
                # A leg after a failed one is never sent: the position must stay hedged.
                if stored.state == "pending":
                    stored = self._move(stored, "abandoned", {"last_error": "previous leg failed"})
                finals.append(stored)
                continue
            final = self.execute(fence, stored, resolve_by)
            if final.state not in TERMINAL_INTENT_STATES:
                # Unknown or ambiguous: the next legs wait (pending) for its resolution.
                finals.append(final)
                finals.extend(legs[index + 1 :])
                return finals, False
            if self._filled_lots(final) < final.intent.lots:
                if not opening:
                    final = self._retry_leg(
                        fence, final, _EXIT_RETRY_STATES, self.limits.exit_leg_window_s
                    )
                elif final.state in _ENTRY_RETRY_STATES:
                    # Complete the missing quantity while the entry is young and nothing was
                    # definitively rejected (service.md 2.4); else the filled legs unwind.
                    # The entry's age runs from the alert's receipt, so an old alert (an
                    # operator's `not placed` long after) is never completed late.
                    age = self._alert_age_s(final)
                    if age is None:
                        sent = final.sent_at
                        now = self.ports.clock.now()
                        age = (now - _utc(sent)).total_seconds() if sent else 0.0
                    final = self._retry_leg(
                        fence, final, _ENTRY_RETRY_STATES, self.limits.max_resume_age_s - age
                    )
            finals.append(final)
            if self._filled_lots(final) < final.intent.lots:
                failed = True
        attention = False
        if opening:
            # An unwind that falls short leaves unhedged lots at the broker: block entries
            # until an operator resolves it (service.md 2.4, failed unwind).
            attention = not self._unwind_excess(fence, finals)
        elif failed and any(self._filled_lots(f) > 0 for f in finals):
            attention = True
        return finals, attention

    def _alert_age_s(self, stored: StoredIntent) -> float | None:
        """Seconds since the intent's alert arrived (None for leader-origin intents)."""
        signal_id = stored.signal_id
        if signal_id is None:
            return None
        row = self._tx(lambda u: u.signals.get(signal_id))
        if row is None:
            return None
        return (self.ports.clock.now() - _utc(row.received_at)).total_seconds()

    @staticmethod
    def _filled_lots(stored: StoredIntent) -> int:
        per_lot = stored.intent.quantity // stored.intent.lots if stored.intent.lots else 1
        return stored.filled_quantity // per_lot if per_lot else 0

    def _retry_leg(
        self, fence: Fence, stored: StoredIntent, states: frozenset[str], window_s: float
    ) -> StoredIntent:
        """Retry a leg's missing lots (new attempts) up to PM_EXIT_LEG_ATTEMPTS in the window,
        while the latest attempt ended in one of ``states``."""
        clock = self.ports.clock
        started = clock.monotonic()
        current = stored  # the latest attempt
        total = stored  # every attempt's fills so far, under the first attempt's id
        attempt = stored.intent.attempt
        # Until the leg is whole: a partly filled retry is retried again, and lots filled by
        # an earlier attempt stay counted when later attempts fail.
        while (
            self._filled_lots(total) < total.intent.lots
            and attempt < self.limits.exit_leg_attempts
            and clock.monotonic() - started < window_s
            and current.state in states
        ):
            attempt += 1
            remaining_lots = total.intent.lots - self._filled_lots(total)
            follow = self._follow_up(
                current, attempt, remaining_lots, current.intent.action, "signal"
            )
            result = self.execute(fence, follow)
            if self._filled_lots(result) > 0 or result.state == "filled":
                total = self._merge(total, result)
            current = result
        return total

    def _merge(self, first: StoredIntent, later: StoredIntent) -> StoredIntent:
        """A retried leg's total: quantities add up, the price is their weighted average."""
        quantity = first.filled_quantity + later.filled_quantity
        average = later.average_price
        if first.filled_quantity and first.average_price is not None:
            if not later.filled_quantity or later.average_price is None:
                average = first.average_price
            else:
                average = (
                    first.average_price * first.filled_quantity
                    + later.average_price * later.filled_quantity
                ) / quantity
        return attrs.evolve(
            later,
            average_price=average,
            intent=attrs.evolve(
                later.intent,
                client_order_id=first.intent.client_order_id,
                lots=first.intent.lots,
                quantity=first.intent.quantity,
            ),
            filled_quantity=quantity,
            state="filled" if quantity >= first.intent.quantity else later.state,
        )

    def _unwind_excess(self, fence: Fence, finals: Sequence[StoredIntent]) -> bool:
        """Entry legs filled unequally: sell back what exceeds the smallest filled leg.

        Returns False when some excess could not be sold back.
        """
        if len(finals) < 2:
            return True
        complete = True
        keep = min(self._filled_lots(f) for f in finals)
        for stored in finals:
            excess = self._filled_lots(stored) - keep
            if excess <= 0:
                continue
            action = "SELL" if stored.intent.action == "BUY" else "BUY"
            # An unwind removes unhedged risk: MARKET whatever the signal order style.
            follow = self._follow_up(
                stored, stored.intent.attempt + 1, excess, action, "unwind", "MARKET"
            )
            result = self.execute(fence, follow)
            if self._filled_lots(result) < excess:
                complete = False
                log.error(
                    "unwind incomplete",
                    extra={"client_order_id": follow.intent.client_order_id},
                )
        return complete

    def _follow_up(
        self,
        stored: StoredIntent,
        attempt: int,
        lots: int,
        action: str,
        origin: str,
        pricetype: Literal["MARKET", "LIMIT"] | None = None,
    ) -> StoredIntent:
        """A new attempt for ``lots`` of a leg; the price type is the leg's unless given."""
        intent = stored.intent
        per_lot = intent.quantity // intent.lots if intent.lots else 1
        label_no, leg = _label_and_leg(intent.client_order_id)
        new = attrs.evolve(
            intent,
            client_order_id=client_order_id(intent.group_id, label_no, leg, attempt),
            attempt=attempt,
            lots=lots,
            quantity=lots * per_lot,
            action=action,  # type: ignore[arg-type]
            origin=origin,  # type: ignore[arg-type]
            pricetype=pricetype or intent.pricetype,
        )
        signal_id = stored.signal_id
        (new_id,) = self._tx(lambda u: u.intents.add([new], signal_id))
        return self._get(new_id)

    def abandon(self, stored: StoredIntent, why: str) -> StoredIntent:
        """A pending intent that will never be sent (recovery of a stale entry)."""
        if stored.state != "pending":
            return stored
        return self._move(stored, "abandoned", {"last_error": why})

    # ------------------------------------------------------------------ one leg

    def execute(
        self, fence: Fence, stored: StoredIntent, resolve_by: float | None = None
    ) -> StoredIntent:
        """Send one pending intent and follow it to a terminal (or ambiguous) state; an
        unknown send whose books cannot be read in time is returned still unknown."""
        if stored.state in ("unknown", "sending"):
            return self.resolve_unknown(stored, resolve_by)
        if stored.state in ("accepted", "partially_filled") and stored.broker_order_id:
            return self.await_fill(stored)
        if stored.state != "pending":
            return stored
        if self.mode_guard is not None:
            mismatch = self.mode_guard.mismatch()
            if mismatch is not None:
                return self._move(stored, "failed", {"last_error": mismatch_message(*mismatch)})
        if stored.intent.pricetype == "LIMIT" and stored.intent.limit_price is None:
            return self._ladder(fence, stored)
        return self._send(fence, stored, _order_request(stored.intent), None, self.await_fill)

    def _send(
        self,
        fence: Fence,
        stored: StoredIntent,
        request: OrderRequest,
        limit: Decimal | None,
        follow: Callable[[StoredIntent], StoredIntent],
    ) -> StoredIntent:
        """Token, claim and place ``request``; an accepted order not filled at once is left to
        ``follow``. ``limit`` is the fill price when the broker reports none (a LIMIT order)."""
        clock = self.ports.clock
        first_claim: float | None = None
        give_up_at: float | None = None  # monotonic; set at the first refused token
        while True:
            try:
                self.ports.rate.take("order")
            except RateBudgetExceeded as exc:
                # No token is an error for this call only: the intent stays pending and asks
                # again while its alert is younger than PM_MAX_RESUME_AGE_S (openalgo.md 7;
                # leader-origin intents, which have no alert, give up at once).
                if give_up_at is None:
                    age = self._alert_age_s(stored)
                    left = self.limits.max_resume_age_s - age if age is not None else 0.0
                    give_up_at = clock.monotonic() + left
                if clock.monotonic() >= give_up_at:
                    return self._move(stored, "failed", {"last_error": f"rate budget: {exc}"})
                log.warning(
                    "no order token yet; the intent stays pending",
                    extra={"client_order_id": stored.intent.client_order_id},
                )
                clock.sleep(self.limits.rate_retry_ms / 1000)
                continue
            claimed = self._claim(stored.id, fence)
            if claimed is None:
                return self._get(stored.id)  # someone else owns it now
            self.observer.intent_state("pending", -1)
            self.observer.intent_state("sending", 1)
            claimed_at = clock.monotonic()
            first_claim = first_claim if first_claim is not None else claimed_at
            result = self.ports.broker.place(request)
            if isinstance(result, Accepted):
                if self.mode_guard is not None:
                    self.mode_guard.observed(result.mode)
                bound: dict[str, Any] = {
                    "broker_order_id": result.order_id,
                    "broker_mode": result.mode,
                    "acked_at": clock.now(),
                }
                # Read the status at once (service.md 2.4): a market order usually filled
                # already, and one transition then records both the order id and the fill. A
                # crash before it leaves the intent `sending`: recovery finds it in the books.
                status = self.ports.broker.order_status(
                    result.order_id, claimed.intent.client_order_id
                )
                if isinstance(status, Ok) and status.value.status.upper() == "COMPLETE":
                    average = self._fill_price(status.value, limit)
                    bound.update(filled_quantity=claimed.intent.quantity, average_price=average)
                    return self._move(claimed, "filled", bound)
                return follow(self._move(claimed, "accepted", bound))
            if isinstance(result, Definitive):
                in_time = (clock.monotonic() - first_claim) * 1000 < self.limits.send_deadline_ms
                if result.resend_allowed and in_time:
                    stored = self._move(claimed, "pending", {"last_error": result.message})
                    continue
                terminal: IntentState = (
                    "rejected"
                    if result.reason_code in ("broker_rejected", "broker_auth")
                    else "failed"
                )
                intent = claimed.intent
                detail = (
                    f"{intent.symbol} {intent.action} {intent.quantity} rejected ({result.message})"
                )
                return self._move(claimed, terminal, {"last_error": detail})
            unknown = self._move(claimed, "unknown", {"last_error": result.message})
            return self.resolve_unknown(unknown)

    # ------------------------------------------------------------------ limit ladder

    def _ladder(self, fence: Fence, stored: StoredIntent) -> StoredIntent:
        """One leg as the limit ladder of domain 9.7, prices from the original LTP."""
        intent = stored.intent
        ltp = positive_ltp(self._quote(intent))
        if ltp is None:
            return self._move(
                stored,
                "failed",
                {
                    "last_error": f"{intent.symbol} {intent.action} {intent.quantity} "
                    "quote_unavailable: no positive last price for the limit ladder"
                },
            )
        tick = self.config.instrument(intent.instrument).tick_size
        plan = ladder_plan(intent.action, ltp, tick, self.config.portfolio)
        request = attrs.evolve(_order_request(intent), pricetype="LIMIT", price=plan.prices[0])
        return self._send(
            fence,
            stored,
            request,
            plan.prices[0],
            lambda accepted: self._climb(fence, accepted, plan, request),
        )

    def _climb(
        self, fence: Fence, stored: StoredIntent, plan: LadderPlan, request: OrderRequest
    ) -> StoredIntent:
        """Poll after P_0 and after every modification to P_k; then cancel (domain 9.7 3-5)."""
        clock = self.ports.clock
        broker = self.ports.broker
        intent = stored.intent
        order_id = stored.broker_order_id or ""
        tag = intent.client_order_id
        price = plan.prices[0]  # the limit the order rests at now
        k = 0
        while True:
            clock.sleep(plan.poll_interval_s)
            status = broker.order_status(order_id, tag)
            if isinstance(status, Ok):
                state = status.value.status.upper()
                if state == "COMPLETE":
                    return self._completed(stored, status.value, price)
                if state in ("REJECTED", "CANCELLED"):
                    filled, traded = self._trade_fill(order_id)
                    if not filled:
                        return self._finish(
                            stored, "rejected", 0, None, f"leg_failed ({status.value.status})"
                        )
                    return self._remainder(fence, stored, plan, filled, traded or price)
            if k + 1 >= len(plan.prices):
                break
            k += 1
            quote = self._quote(intent)
            bid, ask = _book_side(quote)
            target = plan.price_at(k, bid, ask)
            modified = attrs.evolve(request, price=target)
            if self._order_call(functools.partial(broker.modify, order_id, modified)):
                price = target
        final = self._cancel_confirmed(stored)
        if final is None:
            return stored  # still live: followed again later, no MARKET order meanwhile
        if final.status.upper() == "COMPLETE":
            return self._completed(stored, final, price)
        filled, traded = self._trade_fill(order_id)
        if filled >= intent.quantity:
            return self._finish(stored, "filled", intent.quantity, traded or price)
        return self._remainder(fence, stored, plan, filled, (traded or price) if filled else None)

    def _remainder(
        self,
        fence: Fence,
        stored: StoredIntent,
        plan: LadderPlan,
        filled: int,
        average: Decimal | None,
    ) -> StoredIntent:
        """The ladder ended short: MARKET for the rest (rollover_market_fallback), else
        ``leg_timeout``; what filled stays counted either way."""
        intent = stored.intent
        if not plan.market_fallback:
            state: IntentState = "cancelled" if filled else "failed"
            return self._finish(stored, state, filled, average, "leg_timeout")
        ended = self._finish(
            stored, "cancelled", filled, average, "ladder ended; MARKET for the rest"
        )
        left = intent.lots - self._filled_lots(ended)
        if left <= 0:
            return ended
        market = self._follow_up(
            ended, intent.attempt + 1, left, intent.action, intent.origin, "MARKET"
        )
        return self._merge(ended, self.execute(fence, market))

    def _cancel_confirmed(self, stored: StoredIntent) -> OrderStatus | None:
        """Cancel the intent's order and re-read it: its final status once terminal (a fill
        that raced the cancel counts), or None while that is not confirmed.

        An order whose cancel is not confirmed may still fill, so nothing is sent for its lots
        (no retry, no MARKET remainder) until it is followed again: the intent stays
        ``accepted``, its signal held, and the resolver looks again.
        """
        order_id, tag = stored.broker_order_id or "", stored.intent.client_order_id
        self._order_call(functools.partial(self.ports.broker.cancel, order_id, tag))
        again = self.ports.broker.order_status(order_id, tag)
        if isinstance(again, Ok) and again.value.status.upper() in _TERMINAL_ORDER_STATUSES:
            return again.value
        log.warning(
            "cancel not confirmed; the order is followed again later",
            extra={"client_order_id": tag, "broker_order_id": order_id},
        )
        return None

    def _quote(self, intent: OrderIntent) -> Quote | None:
        quote = self.ports.broker.quote(intent.symbol, intent.exchange)
        return quote.value if isinstance(quote, Ok) else None

    def _order_call(self, call: Callable[[], SubmitResult]) -> bool:
        """A modify or cancel under an order token; False when it was not (known to be) done.

        Neither is ever fatal here: the next status read says what the order is.
        """
        try:
            self.ports.rate.take("order")
        except RateBudgetExceeded:
            return False
        return isinstance(call(), Accepted)

    def _claim(self, intent_id: int, fence: Fence) -> StoredIntent | None:
        me = self.limits.instance_id
        return self._tx(lambda u: u.intents.claim(intent_id, me, fence))

    def await_fill(self, stored: StoredIntent) -> StoredIntent:
        """Poll orderstatus (growing interval) until terminal or the fill timeout, then cancel."""
        clock = self.ports.clock
        broker = self.ports.broker
        order_id = stored.broker_order_id or ""
        tag = stored.intent.client_order_id
        deadline = clock.monotonic() + self.limits.fill_timeout_s
        delay = self.limits.fill_poll_first_ms / 1000
        while True:
            status = broker.order_status(order_id, tag)
            if isinstance(status, Ok):
                state = status.value.status.upper()
                if state == "COMPLETE":
                    return self._completed(stored, status.value)
                if state in ("REJECTED", "CANCELLED"):
                    filled, average = self._trade_fill(order_id)
                    final: IntentState = (
                        "cancelled" if filled or state == "CANCELLED" else "rejected"
                    )
                    return self._finish(stored, final, filled, average, status.value.status)
            if clock.monotonic() >= deadline:
                ended = self._cancel_confirmed(stored)
                if ended is None:
                    return stored  # still live: followed again later, nothing sent for it
                if ended.status.upper() == "COMPLETE":
                    return self._completed(stored, ended)
                filled, average = self._trade_fill(order_id)
                return self._finish(stored, "cancelled", filled, average, "fill timeout")
            clock.sleep(delay)
            delay = min(delay * 2, self.limits.fill_poll_max_ms / 1000)

    def _fill_price(self, status: OrderStatus, limit: Decimal | None = None) -> Decimal | None:
        """A complete order's price (openalgo.md 2): the reported average, else the trade
        book's, else (a LIMIT order) its limit."""
        return status.average_price or self._trade_fill(status.order_id)[1] or limit

    def _completed(
        self, stored: StoredIntent, status: OrderStatus, limit: Decimal | None = None
    ) -> StoredIntent:
        """Record a COMPLETE order: the whole quantity at its fill price."""
        return self._finish(
            stored, "filled", stored.intent.quantity, self._fill_price(status, limit)
        )

    def _trade_fill(self, order_id: str) -> tuple[int, Decimal | None]:
        trades = self.ports.broker.trade_book()
        if not isinstance(trades, Ok):
            return 0, None
        rows: list[TradeRow] = [t for t in trades.value if t.order_id == order_id]
        quantity = sum(t.quantity for t in rows if t.quantity > 0 and t.average_price > 0)
        if not quantity:
            return 0, None
        value = sum(
            (t.average_price * t.quantity for t in rows if t.quantity > 0 and t.average_price > 0),
            Decimal(0),
        )
        return quantity, value / quantity

    def _finish(
        self,
        stored: StoredIntent,
        state: IntentState,
        filled: int,
        average: Decimal | None,
        detail: str | None = None,
    ) -> StoredIntent:
        data: dict[str, Any] = {"filled_quantity": filled, "average_price": average}
        if detail and state != "filled":
            intent = stored.intent
            data["last_error"] = f"{intent.symbol} {intent.action} {intent.quantity} {detail}"
        return self._move(stored, state, data)

    def resolve_unknown(
        self, stored: StoredIntent, resolve_by: float | None = None
    ) -> StoredIntent:
        """Find an unknown order in the books by its parameters (openalgo.md 5, service.md 2.4).

        One match binds (then its fills are followed), several are ``ambiguous``. Declaring
        ``not_found`` (never placed, so its lots may be sent again) needs evidence: two
        readable look-ups PM_LOOKUP_SPACING_S apart without a match, PM_NOT_FOUND_AFTER_S or
        more after the send. A send still unmatched on a later exchange day is ``ambiguous``.
        While the books cannot be read nothing is concluded: at ``resolve_by`` (monotonic;
        by default the not-found wait plus two spacings from now) the intent is returned
        still ``unknown``, its signal held, and it is looked up again later.
        """
        clock = self.ports.clock
        broker = self.ports.broker
        limits = self.limits
        if resolve_by is None:
            resolve_by = clock.monotonic() + limits.not_found_after_s + 2 * limits.lookup_spacing_s
        current = stored
        if current.state == "sending":
            current = self._move(current, "unknown", {"last_error": "send outcome unknown"})
        sent_at = current.sent_at or clock.now()
        taken: frozenset[str] | None = None
        lookups = 0  # readable look-ups that found nothing
        while True:
            book = broker.order_book()
            trades = broker.trade_book()
            if isinstance(book, Ok) and isinstance(trades, Ok):
                match = match_unknown(
                    current.intent,
                    sent_at,
                    book.value,
                    trades.value,
                    taken or (),
                    limits.match_window_s,
                )
                if match.kind != "none" and taken is None:
                    # Orders bound to other intents are never candidates (openalgo.md 5): an
                    # identical earlier order of ours would otherwise look like a second match.
                    taken = self._bound_since(current, sent_at)
                    match = match_unknown(
                        current.intent,
                        sent_at,
                        book.value,
                        trades.value,
                        taken,
                        limits.match_window_s,
                    )
                if match.kind == "bind" and match.order_id:
                    bound = self._move(current, "accepted", {"broker_order_id": match.order_id})
                    return self.await_fill(bound)
                if match.kind == "ambiguous":
                    return self._move(
                        current, "ambiguous", {"last_error": "several broker orders match"}
                    )
                lookups += 1
            if self._day_over(sent_at):
                return self._move(
                    current,
                    "ambiguous",
                    {"last_error": "send outcome still unknown after its exchange day"},
                )
            waited_s = (clock.now() - _utc(sent_at)).total_seconds()
            if lookups >= 2 and waited_s >= limits.not_found_after_s:
                return self._move(
                    current,
                    "not_found",
                    {"last_error": "not found in the books (not venue confirmation)"},
                )
            if clock.monotonic() >= resolve_by:
                log.warning(
                    "unknown order unresolved for now; looked up again later",
                    extra={
                        "client_order_id": current.intent.client_order_id,
                        "readable_lookups": lookups,
                    },
                )
                return current
            clock.sleep(limits.lookup_spacing_s)

    def _day_over(self, sent_at: dt.datetime) -> bool:
        """The exchange day of the send has ended (portfolio time zone)."""
        zone = self.config.portfolio.tz
        return (
            self.ports.clock.now().astimezone(zone).date() > _utc(sent_at).astimezone(zone).date()
        )

    def _bound_since(self, current: StoredIntent, sent_at: dt.datetime) -> frozenset[str]:
        """Broker order ids of other intents sent since the match window opened.

        Intent ids grow with creation, so a bounded scan around ``current`` finds every intent
        that may own a candidate order; it stops once a run of older sends is seen.
        """
        earliest = sent_at - dt.timedelta(seconds=self.limits.match_window_s)

        def scan(u: UnitOfWork) -> frozenset[str]:
            found: set[str] = set()
            older = 0
            for intent_id in range(current.id + _BOUND_SCAN_AHEAD, current.id - _BOUND_SCAN, -1):
                if intent_id <= 0 or older >= _BOUND_SCAN_OLDER_RUN:
                    break
                other = u.intents.get(intent_id) if intent_id != current.id else None
                if other is None:
                    continue
                if other.sent_at is not None and other.sent_at < earliest:
                    older += 1
                    continue
                older = 0
                if other.broker_order_id:
                    found.add(other.broker_order_id)
            return frozenset(found)

        return self._tx(scan)


_TERMINAL_ORDER_STATUSES = frozenset({"COMPLETE", "CANCELLED", "REJECTED"})

# Exits retry any failed attempt; entries only complete what was not definitively refused.
_EXIT_RETRY_STATES = frozenset({"rejected", "failed", "cancelled", "not_found"})
_ENTRY_RETRY_STATES = frozenset({"cancelled", "not_found"})

# How far the bound-order scan looks around an unknown intent's id (see _bound_since).
_BOUND_SCAN = 5000
_BOUND_SCAN_AHEAD = 200
_BOUND_SCAN_OLDER_RUN = 50


def _order_request(intent: OrderIntent) -> OrderRequest:
    price = (
        intent.limit_price if intent.limit_price is not None else Decimal(repr(intent.ref_price))
    )
    return OrderRequest(
        symbol=intent.symbol,
        exchange=intent.exchange,
        action=intent.action,
        product=intent.product,
        pricetype=intent.pricetype,
        quantity=intent.quantity,
        price=price,
        tag=intent.client_order_id,
    )


def _utc(at: dt.datetime) -> dt.datetime:
    """A stored instant as an aware UTC datetime (SQLite returns them naive)."""
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at


def _book_side(quote: Quote | None) -> tuple[Decimal | None, Decimal | None]:
    """Fresh bid and ask for a ladder modification; each defaults to the last price."""
    if quote is None:
        return None, None
    return quote.bid or quote.ltp, quote.ask or quote.ltp


def _label_and_leg(client_id: str) -> tuple[int, str]:
    """Label number and leg from ``pm-<fp>-<label>-<leg>-<attempt>``."""
    parts = client_id.split("-")
    try:
        return int(parts[2]), parts[3]
    except (IndexError, ValueError):
        return 0, "FUT"
