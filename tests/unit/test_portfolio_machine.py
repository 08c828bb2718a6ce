"""Stateful test of the portfolio: after every signal the domain 7.7 invariants hold."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from pm_core.config import default_config
from pm_core.model import LIVE_STATUSES
from tests.unit.decide_kit import Fold, payload

INSTRUMENTS = {"BANK_NIFTY": (52000.0, 500.0), "GOLD_MINI": (78000.0, 400.0)}
labels = st.sampled_from([f"Long_{n}" for n in range(1, 7)])
instruments = st.sampled_from(sorted(INSTRUMENTS))


class PortfolioMachine(RuleBasedStateMachine):
    """Random signal sequences through the live decision code."""

    @initialize(exit_on_stop=st.booleans(), as_signalled=st.booleans())
    def start(self, exit_on_stop: bool, as_signalled: bool) -> None:
        config = default_config(
            exit_on_stop_hit=exit_on_stop,
            sizing_mode="as_signalled" if as_signalled else "tom_basso",
        )
        self.fold = Fold(config)
        self.now = dt.datetime(2025, 12, 1, 4, 0, tzinfo=dt.UTC)
        self.prices = {k: v[0] for k, v in INSTRUMENTS.items()}
        self.anchor_at_entry: dict[int, int | None] = {}
        self.opened_lots: dict[int, int] = {}

    def _tick(self, instrument: str, move: float) -> tuple[float, str]:
        self.now += dt.timedelta(minutes=7)
        self.prices[instrument] = max(1000.0, self.prices[instrument] + move)
        return self.prices[instrument], self.now.isoformat()

    def _send(self, body: dict[str, Any]) -> None:
        state = self.fold.snapshot.pyramiding.get(body["instrument"])
        anchor = state.base_position_id if state else None
        result = self.fold.send(body)
        for p in result.snapshot.positions:
            self.anchor_at_entry.setdefault(p.id, None if p.is_base_position else anchor)
            self.opened_lots.setdefault(p.id, p.lots)

    @rule(
        instrument=instruments,
        label=labels,
        move=st.floats(-300, 300),
        stop_gap=st.floats(-100, 800),
        atr=st.floats(0, 600),
        er=st.floats(0, 1.5),
        lots=st.integers(0, 8),
    )
    def entry(
        self,
        instrument: str,
        label: str,
        move: float,
        stop_gap: float,
        atr: float,
        er: float,
        lots: int,
    ) -> None:
        price, ts = self._tick(instrument, move)
        body = payload(
            "BASE_ENTRY",
            label,
            price,
            ts,
            instrument=instrument,
            stop=price - stop_gap,
            atr=atr,
            er=er,
            lots=lots,
        )
        self._send(body)

    @rule(
        instrument=instruments,
        label=labels,
        move=st.floats(-200, 600),
        stop_gap=st.floats(-100, 800),
        atr=st.floats(0, 600),
        lots=st.integers(0, 5),
    )
    def pyramid(
        self, instrument: str, label: str, move: float, stop_gap: float, atr: float, lots: int
    ) -> None:
        price, ts = self._tick(instrument, move)
        body = payload(
            "PYRAMID",
            label,
            price,
            ts,
            instrument=instrument,
            stop=price - stop_gap,
            atr=atr,
            lots=lots,
        )
        self._send(body)

    @rule(
        instrument=instruments,
        label=st.one_of(labels, st.just("ALL")),
        move=st.floats(-400, 400),
        lots=st.integers(0, 6),
    )
    def exit(self, instrument: str, label: str, move: float, lots: int) -> None:
        price, ts = self._tick(instrument, move)
        self._send(payload("EXIT", label, price, ts, instrument=instrument, lots=lots, atr=200))

    @invariant()
    def positions_are_consistent(self) -> None:
        snap = self.fold.snapshot
        keys = [p.key for p in snap.positions]
        assert len(keys) == len(set(keys)), "a label is open twice"
        assert [p.id for p in snap.positions] == sorted(p.id for p in snap.positions)
        for p in snap.positions:
            assert p.status in LIVE_STATUSES and p.status in ("open", "partial")
            assert p.lots > 0
            assert p.quantity == p.lots * p.lot_size
            assert p.initial_stop < p.entry_price
            assert p.current_stop >= p.initial_stop

    @invariant()
    def pyramids_open_only_under_their_anchor(self) -> None:
        snap = self.fold.snapshot
        for p in snap.positions:
            if not p.is_base_position:
                assert p.anchor_base_id is not None
                assert p.anchor_base_id == self.anchor_at_entry.get(p.id)
        for instrument, state in snap.pyramiding.items():
            anchor = snap.position_by_id(state.base_position_id or 0)
            assert anchor is not None and anchor.is_base_position
            assert anchor.instrument == instrument
            bases = [q for q in snap.positions if q.instrument == instrument and q.is_base_position]
            assert bases == [anchor]

    @invariant()
    def closed_equity_is_capital_plus_realised(self) -> None:
        snap = self.fold.snapshot
        realised = self.fold.realized_total()
        assert abs(snap.closed_equity - (snap.initial_capital + realised)) < 1e-6

    @invariant()
    def every_lot_is_closed_at_most_once(self) -> None:
        snap = self.fold.snapshot
        closed: dict[int, int] = {}
        for result in self.fold.results:
            for trade in result.trades:
                closed[trade.position_id] = closed.get(trade.position_id, 0) + trade.lots
        for pid, opened in self.opened_lots.items():
            live = snap.position_by_id(pid)
            held = live.lots if live is not None else 0
            assert closed.get(pid, 0) + held == opened, (pid, opened, closed.get(pid), held)


PortfolioMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None
)
TestPortfolioMachine = PortfolioMachine.TestCase
