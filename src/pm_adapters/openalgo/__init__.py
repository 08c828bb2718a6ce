"""OpenAlgo broker adapter (openalgo.md); the simulator lives in ``.simulator`` (tests only)."""

from pm_adapters.openalgo.client import OpenAlgoBroker, OpenAlgoSettings

__all__ = ["OpenAlgoBroker", "OpenAlgoSettings"]
