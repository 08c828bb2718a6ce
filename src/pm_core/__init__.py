"""pm_core: the pure rules of pm (sizing, gates, stops, P&L, rollover, backtest)."""

__version__ = "0.1.0"
