"""Two `pm serve` processes on one PostgreSQL + Redis + simulator (issue 5 proof 2).

- The same signal posted to both at once, for 100 different signals: one processing and one
  order group each (service.md 15 row 7); the simulator never gets an order twice.
- Two different signals that only one cap allows, one to each instance at once: exactly one
  passes (row 8: the portfolio lock serializes them, the second sees the first's reservation).
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.kit.redis_server import RedisServer
from tests.kit.serve import (
    SCENARIO_QUOTES,
    ServeProcess,
    Sim,
    bn_payload,
    db_rows,
    gold_payload,
    post_at_once,
    prepare_postgres,
    start_all,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
UNFINISHED = "SELECT id FROM signal_log WHERE status IN ('processing', 'queued')"


@pytest.fixture
def sim() -> Iterator[Sim]:
    simulator = Sim()
    simulator.quotes(SCENARIO_QUOTES)
    yield simulator
    simulator.close()


def start_pair(env: Mapping[str, str], tmp_path: Path) -> list[ServeProcess]:
    return start_all([ServeProcess(env, workdir=tmp_path, name=f"inst{i}") for i in (1, 2)])


def cluster_env(pg_url: str, redis_url: str, sim: Sim, **extra: str) -> dict[str, str]:
    prepare_postgres(pg_url)
    return {
        "PM_DATABASE_URL": pg_url,
        "PM_REDIS_URL": redis_url,
        "PM_REDIS_PREFIX": f"two{uuid.uuid4().hex[:6]}:",
        **sim.env(),
        **extra,
    }


def hundred_signals(rounds: int = 25) -> list[dict[str, Any]]:
    """``rounds`` x (Gold BASE, Bank Nifty BASE, Gold EXIT ALL, Bank Nifty EXIT ALL)."""
    start = dt.datetime(2025, 12, 1, 9, 20, tzinfo=IST)
    signals = []
    for r in range(rounds):
        t = start + dt.timedelta(minutes=10 * r)
        stamp = (t + dt.timedelta(minutes=5)).isoformat()
        signals += [
            gold_payload("BASE_ENTRY", timestamp=t.isoformat()),
            bn_payload("BASE_ENTRY", timestamp=t.isoformat()),
            gold_payload("EXIT", position="ALL", stop=0, timestamp=stamp),
            bn_payload("EXIT", position="ALL", stop=0, timestamp=stamp),
        ]
    return signals


@pytest.mark.parametrize(
    ("coordination", "rounds"), [("redis", 25), ("database-only", 5)], ids=["redis", "no-redis"]
)
def test_same_signal_to_both_instances_runs_once_for_100_signals(
    coordination: str,
    rounds: int,
    pg_url: str,
    redis_server: RedisServer,
    sim: Sim,
    tmp_path: Path,
) -> None:
    """100 signals with Redis (L2 + L3); 20 without Redis, where L3 alone decides."""
    env = cluster_env(pg_url, redis_server.url, sim)
    if coordination == "database-only":
        env.pop("PM_REDIS_URL")
    pair = start_pair(env, tmp_path)
    total = 4 * rounds
    try:
        signals = hundred_signals(rounds)
        answers: list[tuple[str, str]] = []
        for payload in signals:
            first, second = post_at_once(pair, [payload, payload])
            statuses = sorted([first.json()["status"], second.json()["status"]])
            assert all(r.status_code in (200, 202) for r in (first, second)), statuses
            # One instance processed it; the other answered from L2/L3 (or saw it in flight).
            assert statuses.count("executed") <= 1, statuses
            assert set(statuses) <= {"executed", "duplicate", "in_progress"}, statuses
            assert first.json()["fingerprint"] == second.json()["fingerprint"]
            answers.append((statuses[0], statuses[1]))
        wait_for(
            lambda: (
                not db_rows(
                    pg_url, "SELECT id FROM signal_log WHERE status IN ('processing', 'queued')"
                )
            ),
            30,
            what="every signal finished",
        )
        # Each signal was processed exactly once, and all 100 executed.
        rows = db_rows(pg_url, "SELECT fingerprint, status FROM signal_log")
        assert len(rows) == total
        assert len({r.fingerprint for r in rows}) == total
        assert Counter(r.status for r in rows) == {"executed": total}
        # One order group each: rounds x (1 + 2 + 1 + 2) intents, each sent and bound once.
        intents = db_rows(
            pg_url, "SELECT client_order_id, broker_order_id, attempts, state FROM order_intents"
        )
        assert len(intents) == 6 * rounds
        assert {(i.attempts, i.state) for i in intents} == {(1, "filled")}
        assert len({i.broker_order_id for i in intents}) == 6 * rounds
        placed = sim.placed()
        assert len(placed) == 6 * rounds, "the simulator got an order twice"
        assert {c["response_orderid"] for c in placed} == {i.broker_order_id for i in intents}
        assert all(q == 0 for q in sim.net_positions().values())
        # Every delivery pair had exactly one processing instance answering it.
        assert sum(1 for a in answers if "executed" in a) >= 0.95 * total, Counter(answers)
        if coordination == "database-only":
            assert all(pm.wait_ready()["checks"]["redis"]["status"] == "disabled" for pm in pair)
        for proc in pair:
            assert proc.terminate() == 0
    finally:
        for proc in pair:
            proc.close()


def test_two_signals_only_one_cap_allows_exactly_one_passes(
    pg_url: str, redis_server: RedisServer, sim: Sim, tmp_path: Path
) -> None:
    # Bank Nifty base alone: risk 0.42 %; Gold base alone: 0.18 %; both: 0.60 % > 0.45 %.
    config = tmp_path / "caps.toml"
    config.write_text("[portfolio]\nmax_portfolio_risk_percent = 0.45\n")
    env = cluster_env(pg_url, redis_server.url, sim, PM_CONFIG=str(config))
    pair = start_pair(env, tmp_path)
    try:
        bn, gold = post_at_once(pair, [bn_payload("BASE_ENTRY"), gold_payload("BASE_ENTRY")])
        bodies = [bn.json(), gold.json()]
        assert bn.status_code == gold.status_code == 200, bodies
        assert sorted(b["status"] for b in bodies) == ["blocked", "executed"], bodies
        loser = next(b for b in bodies if b["status"] == "blocked")
        assert loser["reason_codes"] == ["portfolio_risk_limit"]
        winner = next(b for b in bodies if b["status"] == "executed")
        status = pair[0].status()
        assert status["portfolio"]["open_positions"] == 1
        assert status["portfolio"]["total_risk_percent"] <= 0.45
        placed = sim.placed()
        assert len(placed) == len(winner["orders"])
        assert {c["symbol"] for c in placed} == {o["symbol"] for o in winner["orders"]}
    finally:
        for proc in pair:
            proc.close()


def test_exit_on_one_instance_while_its_entry_fills_on_the_other_is_queued_then_executed(
    pg_url: str, redis_server: RedisServer, sim: Sim, tmp_path: Path
) -> None:
    pair = start_pair(cluster_env(pg_url, redis_server.url, sim), tmp_path)
    sim.rules(
        [{"match": {"endpoint": "placeorder", "nth": 1}, "effect": {"fill": {"after_ms": 1500}}}]
    )
    try:
        entry = gold_payload("BASE_ENTRY")
        exit_all = gold_payload("EXIT", position="ALL", stop=0, timestamp="2025-12-01T10:05:00")
        answers: list[Any] = []
        poster = threading.Thread(target=lambda: answers.append(pair[0].post(entry)))
        poster.start()
        wait_for(lambda: sim.placed(), 10, what="the entry is at the broker")
        queued = pair[1].post(exit_all)
        assert queued.status_code == 202
        assert (queued.json()["status"], queued.json()["state"]) == ("in_progress", "queued")
        poster.join(timeout=30)
        assert answers[0].json()["status"] == "executed"
        wait_for(lambda: not db_rows(pg_url, UNFINISHED), 10, what="the exit ran")
        final = pair[1].post(exit_all).json()
        assert final["status"] == "duplicate"
        assert final["original"]["body"]["status"] == "executed"
        assert "position_not_open" not in final["original"]["body"]["reason_codes"]
        assert [c["action"] for c in sim.placed()] == ["BUY", "SELL"]
        assert pair[0].status()["portfolio"]["open_positions"] == 0
    finally:
        for proc in pair:
            proc.close()


def test_survivor_leader_sweep_finishes_a_killed_instances_signal(
    pg_url: str, redis_server: RedisServer, sim: Sim, tmp_path: Path
) -> None:
    """service.md 15 rows 4 and 14 together: no restart, the other running instance's
    leader sweep takes the orphan over (after PM_INSTANCE_STALE_S) and finishes it once."""
    pair = start_pair(cluster_env(pg_url, redis_server.url, sim), tmp_path)
    victim, survivor = pair
    sim.rules([{"match": {"endpoint": "placeorder"}, "effect": {"fill": {"after_ms": 1500}}}])
    try:
        entry = gold_payload("BASE_ENTRY")
        poster = threading.Thread(target=lambda: _swallow(lambda: victim.post(entry)))
        poster.start()
        wait_for(lambda: sim.placed(), 10, what="the entry was accepted")
        victim.kill9()
        poster.join(timeout=30)
        assert db_rows(pg_url, UNFINISHED)
        wait_for(lambda: not db_rows(pg_url, UNFINISHED), 20, what="the sweep finished it")
        (row,) = db_rows(pg_url, "SELECT status, owner_instance_id FROM signal_log")
        assert row.status == "executed"
        assert row.owner_instance_id.startswith("inst2-")
        assert len(sim.placed()) == 1
        replay = survivor.post(entry).json()
        assert replay["status"] == "duplicate"
        assert replay["original"]["body"]["status"] == "executed"
        # The sweep marks the owner crashed right after its takeover (the signal may be
        # seen finished a moment before that).
        crashed = "SELECT 1 FROM instance_metadata WHERE instance_name = 'inst1'"
        wait_for(
            lambda: db_rows(pg_url, crashed + " AND status = 'crashed'"), 2, what="inst1 crashed"
        )
    finally:
        for proc in pair:
            proc.close()


def _swallow(call: Any) -> None:
    try:
        call()
    except httpx.HTTPError:
        return  # the server was killed under the request
