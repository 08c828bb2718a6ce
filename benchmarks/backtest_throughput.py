"""Backtest throughput: seeded realistic signals through ``pm backtest --json`` and the fold.

Generates N (default 100,000) webhook payloads for BANK_NIFTY and GOLD_MINI from a seeded
random walk with a trend-following alert logic (base entries, pyramids on new highs, partial
exits, trailing-stop exits per label or EXIT ALL, plus resends, stray exits and bad lines),
writes them as JSONL to a temporary directory, then times:

* end to end: ``pm backtest --json --capital C FILE`` as a subprocess (wall clock, output to
  a file), i.e. interpreter start, imports, reading, validation, the fold and the JSON;
* core: ``pm_core.backtest.run`` alone over already-parsed signals (best of --repeat).

The last line printed is one JSON object with ``signals_per_s_end_to_end`` and
``signals_per_s_core``. ``--profile`` prints the top of a cProfile of the core fold.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import json
import os
import pstats
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/alerts.py
from alerts import TrendAlerts

from pm_core.backtest import parse_jsonl, run
from pm_core.config import default_config

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
START = dt.datetime(2019, 1, 1, 9, 15, tzinfo=IST)

# (instrument, start price, ATR as a fraction of price, initial stop ATR multiple, max labels)
MARKETS = (
    ("BANK_NIFTY", 27_000.0, 0.0067, 1.5, 6),
    ("GOLD_MINI", 31_000.0, 0.0058, 1.0, 4),
)


def _timestamp(rng: random.Random, when: dt.datetime) -> str | int:
    roll = rng.random()
    if roll < 0.05:
        return int(when.timestamp() * 1000)
    if roll < 0.15:
        return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return when.isoformat()


def generate(count: int, seed: int) -> list[str]:
    """``count`` JSONL lines of realistic alerts (about 1 % resends, 0.3 % invalid)."""
    rng = random.Random(seed)
    markets = [TrendAlerts(rng, *spec) for spec in MARKETS]
    lines: list[str] = []
    when = START
    while len(lines) < count:
        when += dt.timedelta(minutes=rng.randint(5, 55), seconds=rng.randint(0, 59))
        market = rng.choice(markets)
        market.move()
        for offset, (_kind, payload) in enumerate(market.alerts()):
            payload["timestamp"] = _timestamp(rng, when + dt.timedelta(seconds=3 * offset))
            line = json.dumps(payload, separators=(",", ":"))
            lines.append(line)
            roll = rng.random()
            if roll < 0.01:
                lines.append(line)  # TradingView resent the alert
            elif roll < 0.013:
                broken = dict(payload)
                del broken["price"]
                lines.append(json.dumps(broken, separators=(",", ":")))
    return lines[:count]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _pm_command() -> list[str]:
    pm = shutil.which("pm")
    if pm is not None:
        return [pm]
    return [sys.executable, "-c", "import sys; from pm_cli.main import cli; sys.exit(cli())"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--signals", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=20251128)
    parser.add_argument("--capital", type=float, default=20_000_000.0)
    parser.add_argument("--repeat", type=int, default=3, help="core runs; the best counts")
    parser.add_argument("--profile", action="store_true", help="cProfile the core fold")
    parser.add_argument("--keep", type=Path, help="also write the generated JSONL here")
    args = parser.parse_args()

    config = default_config()
    started = time.perf_counter()
    lines = generate(args.signals, args.seed)
    print(f"generated {len(lines):,} signals in {time.perf_counter() - started:.2f} s")
    with tempfile.TemporaryDirectory(prefix="pm-bench-") as tmp:
        path = Path(tmp) / "signals.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        if args.keep is not None:
            shutil.copyfile(path, args.keep)
        out_path = Path(tmp) / "result.json"

        command = [*_pm_command(), "backtest", "--json", "--capital", str(args.capital), str(path)]
        with out_path.open("wb") as out:
            cpu_before = _children_cpu()
            started = time.perf_counter()
            done = subprocess.run(command, stdout=out, stderr=subprocess.PIPE)
            end_to_end_s = time.perf_counter() - started
            end_to_end_cpu = _children_cpu() - cpu_before
        if done.returncode != 0:
            sys.stderr.write(done.stderr.decode("utf-8", "replace"))
            raise SystemExit(f"pm backtest exited {done.returncode}")
        document = orjson.loads(out_path.read_bytes())
        output_mb = out_path.stat().st_size / 1e6

        data = path.read_bytes()
        started = time.perf_counter()
        parsed = parse_jsonl(data, path.name, config, loads=orjson.loads)
        parse_s = time.perf_counter() - started

    core_runs: list[float] = []
    core_cpu: list[float] = []
    result = None
    for _ in range(max(1, args.repeat)):
        cpu_started = time.process_time()
        started = time.perf_counter()
        result = run(parsed, config, capital=args.capital)
        core_runs.append(time.perf_counter() - started)
        core_cpu.append(time.process_time() - cpu_started)
    assert result is not None
    core_s = min(core_runs)
    started = time.perf_counter()
    text = result.to_json()
    document_s = time.perf_counter() - started
    if text.encode("utf-8") != json.dumps(document, ensure_ascii=False, separators=(",", ":")
                                          ).encode("utf-8"):  # fmt: skip
        print("WARNING: the CLI document differs from the in-process one", file=sys.stderr)

    stats = result.stats
    executed = sum(counts.get("executed", 0) for counts in stats.outcomes.values())
    print(
        f"signals: {len(lines):,} lines, {len(parsed.signals):,} valid, "
        f"{len(parsed.errors):,} input errors, {stats.duplicates:,} duplicates"
    )
    print(f"outcomes: {json.dumps(stats.outcomes, sort_keys=True)}")
    print(
        f"trades: {stats.trades:,} closes, win rate {stats.win_rate_pct or 0:.1f} %, "
        f"final equity {stats.final_equity:,.0f}"
    )
    print(
        f"end to end (pm backtest --json): {end_to_end_s:.2f} s wall, {end_to_end_cpu:.2f} s CPU,"
        f" output {output_mb:.1f} MB"
    )
    print(f"parse + validate in process: {parse_s:.2f} s")
    runs = ", ".join(f"{s:.2f}" for s in core_runs)
    print(
        f"core fold (run), best of {len(core_runs)}: {core_s:.2f} s wall, "
        f"{min(core_cpu):.2f} s CPU (runs: {runs})"
    )
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"document to JSON: {document_s:.2f} s")

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run(parsed, config, capital=args.capital)
        profiler.disable()
        buffer = io.StringIO()
        pstats.Stats(profiler, stream=buffer).sort_stats("tottime").print_stats(25)
        print(buffer.getvalue())

    figures = {
        "signals": len(lines),
        "executed": executed,
        "seconds_end_to_end": round(end_to_end_s, 3),
        "seconds_core": round(core_s, 3),
        "cpu_signals_per_s_end_to_end": round(len(lines) / end_to_end_cpu),
        "cpu_signals_per_s_core": round(len(parsed.signals) / min(core_cpu)),
        "signals_per_s_end_to_end": round(len(lines) / end_to_end_s),
        "signals_per_s_core": round(len(parsed.signals) / core_s),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
