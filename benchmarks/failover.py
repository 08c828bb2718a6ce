"""Failover benchmark (service.md 3 and 16): leader takeover after kill -9 and after resignation.

Each trial runs two candidate processes (tests/kit/candidate.py) with the default lease,
renewal and tick (2700/900/250 ms) over PostgreSQL + Redis, both throwaway servers started
here. kill -9: the leader is killed at a random point of its renewal cycle; the takeover time
runs from the kill to the survivor's ``leader`` event. Resignation: the leader gets SIGTERM
(stops its jobs, resigns: compare-and-delete, fence released, ``leader_released``); the time
runs from the signal to the survivor's ``leader`` event. Trials run in a few independent
pairs in parallel (own database and key prefix each) to keep the run short.

Lock round trips: one thread, Redis L2 ``acquire`` (SET NX PX + INCR) + ``release`` (Lua
compare-and-delete) per second; PostgreSQL: the database-only lease ``acquire`` (the fence's
conditional UPDATE ... RETURNING + history row) + ``release`` per second.

Usage: python benchmarks/failover.py [--trials 20] [--pairs 4] [--seconds 3]
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from tests.kit.candidate import CandidateProcess  # noqa: E402
from tests.kit.postgres import running_server  # noqa: E402
from tests.kit.redis_server import RedisServer, find_redis_binary  # noqa: E402

from pm_adapters.redis.client import make_client  # noqa: E402
from pm_adapters.redis.lock import RedisSignalLock  # noqa: E402
from pm_adapters.sql.fence import SqlFence  # noqa: E402
from pm_adapters.sql.retry import create_engine  # noqa: E402
from pm_adapters.sql.tables import metadata  # noqa: E402

DEFAULTS = {"lease_ms": 2700, "renew_ms": 900, "tick_ms": 250}


class Pair:
    """Two candidates on their own database and key prefix; replaces whoever leaves."""

    def __init__(self, db_url: str, redis_url: str, name: str) -> None:
        self.config: dict[str, Any] = {
            "db": db_url,
            "redis": redis_url,
            "prefix": f"bench{uuid.uuid4().hex[:6]}:",
            **DEFAULTS,
        }
        self.name = name
        self.serial = 0
        self.members: list[CandidateProcess] = []

    def fill(self) -> None:
        while len(self.members) < 2:
            self.serial += 1
            candidate = CandidateProcess({**self.config, "id": f"{self.name}-{self.serial}"})
            if candidate.wait_for("ready", 60) is None:
                raise RuntimeError(f"candidate {candidate.id} did not start")
            self.members.append(candidate)

    def leader(self, timeout_s: float) -> CandidateProcess:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for member in self.members:
                events = [e for e in member.events if e["event"] in ("leader", "follower")]
                if events and events[-1]["event"] == "leader":
                    return member
            time.sleep(0.01)
        raise RuntimeError("no leader")

    def trial(self, kind: str, rng: random.Random) -> float:
        self.fill()
        leader = self.leader(30)
        # Land the failure anywhere in the renewal cycle.
        time.sleep(rng.uniform(0.3, 0.3 + DEFAULTS["renew_ms"] / 1000))
        survivor = next(m for m in self.members if m is not leader)
        if kind == "kill9":
            sent = leader.kill9()
        else:
            sent = leader.terminate()
        event = survivor.wait_for("leader", 15, after=sent)
        leader.close()
        self.members.remove(leader)
        if event is None:
            raise RuntimeError(f"{kind}: no takeover within 15 s")
        return float(event["t"]) - sent

    def close(self) -> None:
        for member in self.members:
            member.close()


def run_trials(pairs: list[Pair], kind: str, trials: int, seed: int) -> list[float]:
    results: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    counter = iter(range(trials))

    def worker(pair: Pair, rng: random.Random) -> None:
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            try:
                took = pair.trial(kind, rng)
            except BaseException as exc:  # reported after the run
                with lock:
                    errors.append(exc)
                return
            with lock:
                results.append(took)
                print(f"{kind} trial {len(results)}: {took:.3f} s", flush=True)

    threads = [
        threading.Thread(target=worker, args=(pair, random.Random(seed + i)))
        for i, pair in enumerate(pairs)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def redis_lock_rate(url: str, seconds: float) -> float:
    client = make_client(url, 250)
    lock = RedisSignalLock(client, "bench-lock", prefix=f"lk{uuid.uuid4().hex[:6]}:")
    done = 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        handle = lock.acquire(uuid.uuid4().hex * 2, 30_000)
        assert handle is not None
        lock.release(handle)
        done += 1
    rate = done / (time.perf_counter() - started)
    client.close()
    return rate


def pg_lock_rate(url: str, seconds: float) -> float:
    engine = create_engine(url)
    fence = SqlFence(engine)
    done = 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        epoch = fence.acquire("bench-lease", 2700)
        assert epoch is not None
        fence.release("bench-lease", epoch)
        done += 1
    rate = done / (time.perf_counter() - started)
    engine.dispose()
    return rate


def percentile50(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    binary = find_redis_binary()
    if binary is None:
        raise SystemExit("redis-server binary not found")
    with tempfile.TemporaryDirectory(prefix="pm-bench-redis-") as workdir, running_server() as pg:
        redis_server = RedisServer(binary, Path(workdir))
        redis_server.start()
        pairs: list[Pair] = []
        try:
            for i in range(args.pairs):
                url = pg.create_database("failover")
                engine = create_engine(url)
                metadata.create_all(engine)
                engine.dispose()
                pairs.append(Pair(url, redis_server.url, f"p{i}"))
            started = time.monotonic()
            kill9 = run_trials(pairs, "kill9", args.trials, args.seed)
            resign = run_trials(pairs, "resign", args.trials, args.seed + 100)
            elapsed = time.monotonic() - started
            lock_db = pg.create_database("locks")
            engine = create_engine(lock_db)
            metadata.create_all(engine)
            engine.dispose()
            redis_rate = redis_lock_rate(redis_server.url, args.seconds)
            pg_rate = pg_lock_rate(lock_db, args.seconds)
        finally:
            for pair in pairs:
                pair.close()
            redis_server.kill()
    result = {
        "benchmark": "failover",
        "trials": args.trials,
        "pairs": args.pairs,
        "lease_ms": DEFAULTS["lease_ms"],
        "renew_ms": DEFAULTS["renew_ms"],
        "tick_ms": DEFAULTS["tick_ms"],
        "kill9_takeover_p50_s": round(percentile50(kill9), 3),
        "kill9_takeover_mean_s": round(statistics.fmean(kill9), 3),
        "kill9_takeover_max_s": round(max(kill9), 3),
        "resign_takeover_p50_s": round(percentile50(resign), 3),
        "resign_takeover_max_s": round(max(resign), 3),
        "redis_lock_roundtrips_per_s": round(redis_rate, 1),
        "pg_lock_roundtrips_per_s": round(pg_rate, 1),
        "targets_met": max(kill9) < 3.0 and max(resign) < 1.0,
        "trials_wall_s": round(elapsed, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
