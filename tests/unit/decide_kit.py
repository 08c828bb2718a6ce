"""Helpers for decision-flow tests: build signals, fold them, read the state."""

from __future__ import annotations

from typing import Any

import attrs

from pm_core.config import DomainConfig, LotSizeEntry, bank_nifty, default_config
from pm_core.decide import StepResult, step
from pm_core.model import PortfolioSnapshot, Position, ReceivedSignal
from pm_core.signal import fingerprint, validate


def bn35_config(**portfolio: Any) -> DomainConfig:
    """Config "BN-35": BANK_NIFTY with lot size 35 throughout, all else default."""
    config = default_config(**portfolio)
    bn = attrs.evolve(bank_nifty(), lot_size_history=(LotSizeEntry(None, 35),))
    return attrs.evolve(config, instruments={**config.instruments, "BANK_NIFTY": bn})


def payload(
    type_: str,
    position: str,
    price: float,
    ts: str,
    *,
    instrument: str = "BANK_NIFTY",
    stop: float = 0.0,
    lots: int = 0,
    atr: float = 350.0,
    er: float = 1.0,
    reason: str | None = None,
) -> dict[str, Any]:
    """A webhook payload with sensible defaults."""
    out: dict[str, Any] = {
        "type": type_,
        "instrument": instrument,
        "position": position,
        "price": price,
        "stop": stop,
        "lots": lots,
        "atr": atr,
        "er": er,
        "supertrend": stop,
        "timestamp": ts,
    }
    if type_ == "EXIT":
        out["reason"] = reason or "Exit"
    return out


class Fold:
    """A portfolio driven signal by signal through the live decision code."""

    def __init__(self, config: DomainConfig, capital: float = 5_000_000.0) -> None:
        self.config = config
        self.snapshot = PortfolioSnapshot.initial(capital)
        self.results: list[StepResult] = []

    def send(self, body: dict[str, Any], *, dedup: bool = True) -> StepResult:
        """Validate and fold one payload; returns the step result."""
        signal = validate(body, self.config)
        assert not isinstance(signal, tuple), signal
        received = ReceivedSignal(signal, fingerprint(signal), signal.timestamp)
        result = step(self.snapshot, received, self.config, dedup=dedup)
        self.snapshot = result.snapshot
        self.results.append(result)
        return result

    def position(self, instrument: str, label: str) -> Position | None:
        """The live position of a label, if any."""
        return self.snapshot.position_by_label(instrument, label)

    def realized_total(self) -> float:
        """Sum of every trade's P&L so far."""
        return sum((t.pnl for r in self.results for t in r.trades), 0.0)
