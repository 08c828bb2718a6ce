"""Market reads before T1 (architecture 7): which quotes and funds a decision may use."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import attrs

from pm_core.calendar import entry_contract
from pm_core.config import DomainConfig
from pm_core.model import Funds, MarketContext, Quote, Signal
from pm_core.ports import Broker, Clock, Ok
from pm_core.rollover import reference_quotes_for


@attrs.frozen
class MarketNeeds:
    """Quotes (exchange, symbol) and whether broker funds are wanted."""

    quotes: tuple[tuple[str, str], ...] = ()
    funds: bool = False


def market_needs(signal: Signal, config: DomainConfig, now: dt.datetime) -> MarketNeeds:
    """The broker reads decide may use for this signal (pure; exits need none)."""
    if signal.type == "EXIT":
        return MarketNeeds()
    instrument = config.instruments.get(signal.instrument)
    if instrument is None:
        return MarketNeeds()
    quotes: tuple[tuple[str, str], ...] = ()
    if instrument.kind == "synthetic_future" and instrument.reference_quotes:
        try:
            expiry = entry_contract(instrument, signal.timestamp, config).expiry
            quotes = tuple(dict.fromkeys(reference_quotes_for(instrument, expiry, expiry)))
        except ValueError:
            pass  # no contract can be named for that instant: decide rejects it, no_contract
    return MarketNeeds(quotes, config.portfolio.equity_source == "broker")


def read_market(broker: Broker, needs: MarketNeeds, clock: Clock, timeout_ms: int) -> MarketContext:
    """Read what ``needs`` lists within ``timeout_ms``; a missing value takes its fallback."""
    if not needs.quotes and not needs.funds:
        return MarketContext(as_of=clock.now())
    quotes: dict[tuple[str, str], Quote] = {}
    funds: list[Funds] = []

    def work() -> None:
        for exchange, symbol in needs.quotes:
            got = broker.quote(symbol, exchange)
            if isinstance(got, Ok) and got.value.ltp > Decimal(0):
                quotes[(exchange, symbol)] = got.value
                break  # the first positive LTP is the reference (domain 9.6)
        if needs.funds:
            f = broker.funds()
            if isinstance(f, Ok):
                funds.append(f.value)

    # The reads run on a helper thread so that a slow broker costs at most the timeout.
    reader = threading.Thread(target=work, name="pm-market-read", daemon=True)
    reader.start()
    reader.join(timeout_ms / 1000.0)
    return MarketContext(quotes=dict(quotes), funds=funds[0] if funds else None, as_of=clock.now())
