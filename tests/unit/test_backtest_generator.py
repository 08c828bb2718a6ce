"""The throughput benchmark's signal generator: seeded, realistic, and mostly executed."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path
from types import ModuleType

from pm_core.backtest import parse_jsonl, run
from pm_core.config import default_config

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "backtest_throughput.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("backtest_throughput", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_is_seeded_and_covers_every_kind_of_alert() -> None:
    bench = _bench()
    lines = bench.generate(3000, seed=7)
    assert lines == bench.generate(3000, seed=7)
    assert lines != bench.generate(3000, seed=8)
    assert len(lines) == 3000
    payloads = [json.loads(line) for line in lines]
    kinds = Counter((p["instrument"], p["type"]) for p in payloads)
    for instrument in ("BANK_NIFTY", "GOLD_MINI"):
        for type_ in ("BASE_ENTRY", "PYRAMID", "EXIT"):
            assert kinds[(instrument, type_)] > 0
    assert any(p["position"] == "ALL" for p in payloads)
    assert any(p["type"] == "EXIT" and p["lots"] > 0 for p in payloads)
    assert any("price" not in p for p in payloads)  # a few invalid lines
    assert any(isinstance(p["timestamp"], int) for p in payloads)  # epoch milliseconds too


def test_generated_signals_mostly_execute() -> None:
    config = default_config()
    lines = _bench().generate(3000, seed=11)
    parsed = parse_jsonl("\n".join(lines), "bench.jsonl", config)
    result = run(parsed, config, capital=20_000_000)
    stats = result.stats
    executed = {t: counts["executed"] for t, counts in stats.outcomes.items()}
    assert all(n > 0 for n in executed.values())
    assert sum(executed.values()) > 0.8 * stats.signals_processed
    assert stats.duplicates > 0
    assert stats.trades > 100
