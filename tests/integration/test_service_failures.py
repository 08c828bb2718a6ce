"""Failure scenarios of service.md 15 that concern signal processing, with real processes.

Each runs `pm serve` subprocesses against PostgreSQL (+ Redis) and the OpenAlgo simulator and
then checks exactly-once from both sides: the database (one signal row per fingerprint, each
intent sent once) and the simulator's call log (no order placed twice).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.kit.postgres import PgServer
from tests.kit.redis_server import RedisServer
from tests.kit.serve import (
    SCENARIO_QUOTES,
    SIM_API_KEY,
    ServeProcess,
    Sim,
    bn_payload,
    db_rows,
    gold_payload,
    pm_cli,
    prepare_postgres,
    start_all,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GOLD_BASE = gold_payload("BASE_ENTRY")


@pytest.fixture
def sim() -> Iterator[Sim]:
    simulator = Sim()
    simulator.quotes(SCENARIO_QUOTES)
    yield simulator
    simulator.close()


def pg_env(pg_url: str, sim: Sim, redis_url: str | None = None, **extra: str) -> dict[str, str]:
    prepare_postgres(pg_url)
    env = {"PM_DATABASE_URL": pg_url, **sim.env(), **extra}
    if redis_url:
        env["PM_REDIS_URL"] = redis_url
        env["PM_REDIS_PREFIX"] = f"fail{uuid.uuid4().hex[:6]}:"
    return env


def unfinished(pg_url: str) -> list[Any]:
    return db_rows(pg_url, "SELECT id FROM signal_log WHERE status IN ('processing', 'queued')")


def check_once(pg_url: str, sim: Sim, signals: int) -> list[Any]:
    """``signals`` rows, all terminal; every intent sent once; the simulator agrees."""
    rows = db_rows(pg_url, "SELECT fingerprint, status FROM signal_log")
    assert len(rows) == signals, rows
    assert len({r.fingerprint for r in rows}) == signals
    intents = db_rows(
        pg_url, "SELECT client_order_id, broker_order_id, attempts, state FROM order_intents"
    )
    assert all(i.attempts == 1 for i in intents), intents
    bound = [i.broker_order_id for i in intents if i.broker_order_id]
    assert len(bound) == len(set(bound))
    placed = sim.placed()
    assert Counter(c["response_orderid"] for c in placed) == Counter(bound), (placed, intents)
    return rows


def placing(sim: Sim) -> bool:
    """An order request reached the simulator (it may still be waiting out a latency rule)."""
    return any(c["endpoint"] == "placeorder" for c in sim.state()["calls"])


def stream(signal_count: int) -> list[dict[str, Any]]:
    """Alternating Gold BASE_ENTRY / EXIT ALL, ten minutes apart."""
    out = []
    for r in range(signal_count // 2):
        hour, minute = divmod(9 * 60 + 20 + 10 * r, 60)
        stamp = f"2025-12-01T{hour:02d}:{minute:02d}:00"
        exit_stamp = f"2025-12-01T{hour:02d}:{minute + 5:02d}:00"
        out += [
            gold_payload("BASE_ENTRY", timestamp=stamp),
            gold_payload("EXIT", position="ALL", stop=0, timestamp=exit_stamp),
        ]
    return out


def deliver(
    pm: ServeProcess,
    payload: dict[str, Any],
    timeout_s: float = 30.0,
    codes: list[int] | None = None,
) -> dict[str, Any]:
    """Re-deliver like a patient sender until the answer is final (200); 503/202 retry.

    Every HTTP status seen is appended to ``codes`` (0 for a failed connection).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            response = pm.post(payload, timeout=10.0)
        except httpx.HTTPError:
            response = None
        if codes is not None:
            codes.append(response.status_code if response is not None else 0)
        if response is not None and response.status_code == 200:
            body: dict[str, Any] = response.json()
            return body
        if response is not None:
            assert response.status_code in (202, 503), response.text
        assert time.monotonic() < deadline, f"no final answer for {payload}:\n{pm.tail()}"
        time.sleep(0.2)


# --------------------------------------------------------------------------- rows 3-5

KILL_CASES = {
    # Accepted at once, filled only after 2 s: killed after acceptance, before fills (row 4).
    "gold-accepted": (GOLD_BASE, {"type": "fill", "after_ms": 2000}, [("GOLD_MINI_Long_1", 3)]),
    # Killed while the order request is still on the wire: the heir finds it in the book
    # by its parameters (row 3).
    "gold-on-the-wire": (GOLD_BASE, {"type": "latency_ms", "ms": 1500}, [("GOLD_MINI_Long_1", 3)]),
    # Killed after the first Bank Nifty leg was accepted: the heir completes the group (row 5).
    "bank-nifty-between-legs": (
        bn_payload("BASE_ENTRY"),
        {"type": "fill", "after_ms": 2000},
        [("BANK_NIFTY_Long_1", 7)],
    ),
}


@pytest.mark.parametrize("case", list(KILL_CASES))
def test_kill9_between_send_and_settle_resumes_with_one_order_per_leg(
    case: str, pg_url: str, redis_server: RedisServer, sim: Sim, tmp_path: Path
) -> None:
    payload, effect, expected = KILL_CASES[case]
    env = pg_env(pg_url, sim, redis_server.url, PM_NOT_FOUND_AFTER_S="8")
    sim.rules([{"match": {"endpoint": "placeorder"}, "effect": effect}])
    first = ServeProcess(env, workdir=tmp_path, name="victim").start()
    try:
        poster = threading.Thread(target=lambda: _swallow(lambda: first.post(payload)))
        poster.start()
        wait_for(lambda: placing(sim), 10, what="the order reached the simulator")
        if effect["type"] == "fill":
            wait_for(lambda: sim.placed(), 10, what="the order was accepted")
        first.kill9()
        poster.join(timeout=30)
    finally:
        first.close()
    sim.rules([])
    assert unfinished(pg_url), "the signal must still be in flight when its owner died"

    with ServeProcess(env, workdir=tmp_path, name="heir") as heir:
        heir.start()
        wait_for(lambda: not unfinished(pg_url), 30, what="takeover finished the signal")
        rows = check_once(pg_url, sim, 1)
        assert rows[0].status == "executed"
        legs = len(db_rows(pg_url, "SELECT id FROM order_intents"))
        assert legs == (2 if payload["instrument"] == "BANK_NIFTY" else 1)
        assert len(sim.placed()) == legs, "one order per leg"
        positions = heir.positions()["positions"]
        assert [(p["key"], p["lots"]) for p in positions] == expected
        assert {p["status"] for p in positions} == {"open"}
        again = heir.post(payload)
        assert again.status_code == 200
        assert again.json()["status"] == "duplicate"
        assert again.json()["original"]["body"]["status"] == "executed"
    assert len(sim.placed()) == legs
    nets = sim.net_positions()
    assert sorted(abs(q) for q in nets.values()) == sorted([210, 210] if legs == 2 else [3]), nets


def _swallow(call: Callable[[], Any]) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the server was killed under the request
        call()


# --------------------------------------------------------------------------- row 18


def test_broker_timeout_after_accept_resolves_by_book_match_without_resending(
    pg_url: str, sim: Sim, tmp_path: Path
) -> None:
    env = pg_env(pg_url, sim, PM_OPENALGO_ORDER_TIMEOUT_S="0.3")
    # The first order is accepted, but its answer comes after the client gave up.
    sim.rules(
        [
            {
                "match": {"endpoint": "placeorder", "nth": 1},
                "effect": {"type": "accept_then_timeout", "delay_ms": 1500},
            }
        ]
    )
    with ServeProcess(env, workdir=tmp_path, name="timeout") as pm:
        pm.start()
        response = pm.post(GOLD_BASE)
        body = response.json()
        if response.status_code == 202:
            body = deliver(pm, GOLD_BASE)
            assert body["status"] == "duplicate"
            body = body["original"]["body"]
        assert body["status"] == "executed", body
        (order,) = body["orders"]
        placed = sim.placed()
        assert len(placed) == 1, "an unknown send must never be re-sent"
        assert order["broker_order_id"] == placed[0]["response_orderid"]
        assert order["state"] == "filled"
        assert [r["applied"] for r in sim.state()["rules"]] == [1]
    (intent,) = db_rows(pg_url, "SELECT state, attempts, broker_order_id FROM order_intents")
    assert (intent.state, intent.attempts) == ("filled", 1)
    check_once(pg_url, sim, 1)


def test_unknown_send_with_unreadable_books_is_held_then_resolved_without_resending(
    pg_url: str, sim: Sim, tmp_path: Path
) -> None:
    """The reply to an accepted order is lost and the order and trade books answer 503 for
    longer than PM_NOT_FOUND_AFTER_S: nothing may be concluded (a not_found would let the
    entry send its lots again). The signal is held; once the books answer, the instance's
    resolver finds the order and settles the signal with the one order."""
    env = pg_env(
        pg_url,
        sim,
        PM_OPENALGO_ORDER_TIMEOUT_S="0.3",
        PM_NOT_FOUND_AFTER_S="1",
        PM_LOOKUP_SPACING_S="0.2",
        PM_HELD_RESULT_RETRY_MS="200",
    )
    lost = {
        "match": {"endpoint": "placeorder", "nth": 1},
        "effect": {"type": "accept_then_timeout", "delay_ms": 1500},
    }
    blind = [
        {"match": {"endpoint": book}, "effect": {"type": "http_error", "status": 503}}
        for book in ("orderbook", "tradebook")
    ]
    sim.rules([lost, *blind])
    with ServeProcess(env, workdir=tmp_path, name="blind") as pm:
        pm.start()
        first = pm.post(GOLD_BASE)
        assert first.status_code == 202, (first.text, pm.tail())
        time.sleep(3)  # three times PM_NOT_FOUND_AFTER_S with the books unreadable
        (intent,) = db_rows(pg_url, "SELECT state, attempts FROM order_intents")
        assert (intent.state, intent.attempts) == ("unknown", 1)
        assert unfinished(pg_url), "the signal is held, not settled"
        again = pm.post(GOLD_BASE)
        assert again.status_code == 202, again.text  # still in progress for the sender
        sim.rules([])  # the books answer again
        body = deliver(pm, GOLD_BASE)
        assert body["status"] == "duplicate"
        original = body["original"]["body"]
        assert original["status"] == "executed", original
        (order,) = original["orders"]
        placed = sim.placed()
        assert len(placed) == 1, "an unknown send must never be re-sent"
        assert order["broker_order_id"] == placed[0]["response_orderid"]
    check_once(pg_url, sim, 1)


# --------------------------------------------------------------------------- rows 10-11


def test_redis_killed_mid_stream_database_only_no_loss_no_duplicate(
    pg_url: str,
    redis_server_factory: Callable[[], RedisServer],
    sim: Sim,
    tmp_path: Path,
) -> None:
    redis = redis_server_factory()
    env = pg_env(pg_url, sim, redis.url)
    pair = start_all([ServeProcess(env, workdir=tmp_path, name=f"r{i}") for i in (1, 2)])
    try:
        signals = stream(24)
        modes: set[str] = set()
        for n, payload in enumerate(signals):
            if n == 8:
                redis.kill()
            if n == 18:
                redis.start()
            answers = [deliver(pm, payload) for pm in pair]
            statuses = sorted(a["status"] for a in answers)
            assert statuses == ["duplicate", "executed"], statuses
            if n == 14:
                ready = wait_for(
                    lambda: all(pm.wait_ready()["mode"] == "database-only" for pm in pair),
                    10,
                    what="database-only mode",
                )
                assert ready
                modes.add("database-only")
        assert modes == {"database-only"}
        wait_for(
            lambda: all(pm.wait_ready()["mode"] == "normal" for pm in pair),
            15,
            what="normal mode after Redis came back",
        )
        rows = check_once(pg_url, sim, 24)
        assert Counter(r.status for r in rows) == {"executed": 24}
        assert len(sim.placed()) == 24
        assert all(q == 0 for q in sim.net_positions().values())
    finally:
        for pm in pair:
            pm.close()


# --------------------------------------------------------------------------- row 12


def test_postgres_restarted_mid_stream_every_signal_answered_once(
    pg_server: PgServer, pg_url: str, redis_server: RedisServer, sim: Sim, tmp_path: Path
) -> None:
    env = pg_env(pg_url, sim, redis_server.url, PM_TX_BUDGET_MS="500,3000")
    pm = ServeProcess(env, workdir=tmp_path, name="pgrestart").start()
    try:
        signals = stream(16)
        seen: Counter[int] = Counter()
        codes: list[int] = []
        outage = threading.Thread(target=_bounce, args=(pg_server, 3.0))
        for n, payload in enumerate(signals):
            if n == 5:
                outage.start()
            body = deliver(pm, payload, timeout_s=60, codes=codes)
            if body["status"] == "duplicate":
                body = body["original"]["body"]
            assert body["status"] == "executed", body
            seen[body["signal_id"]] += 1
        outage.join()
        assert 503 in codes, "the outage must have been seen by the stream"
        assert len(seen) == 16 and set(seen.values()) == {1}
        wait_for(lambda: not unfinished(pg_url), 30, what="no signal left in flight")
        rows = check_once(pg_url, sim, 16)
        assert Counter(r.status for r in rows) == {"executed": 16}
        assert len(sim.placed()) == 16
        assert pm.wait_ready()["checks"]["database"]["status"] == "ok"
    finally:
        pm.close()
        if not pg_server.is_running():
            pg_server.start()


def _bounce(server: PgServer, down_s: float) -> None:
    server.stop("fast")
    time.sleep(down_s)
    server.start()


# --------------------------------------------------------------------------- row 16


def test_owner_slower_than_lock_ttl_other_instance_hits_l3_no_second_order(
    pg_url: str, redis_server: RedisServer, sim: Sim, tmp_path: Path
) -> None:
    env = pg_env(pg_url, sim, redis_server.url, PM_SIGNAL_LOCK_TTL_MS="200")
    # Every order call takes 1.5 s: far beyond the 200 ms signal lock.
    sim.rules([{"match": {"endpoint": "placeorder"}, "effect": {"type": "latency_ms", "ms": 1500}}])
    owner, other = start_all(
        [ServeProcess(env, workdir=tmp_path, name=n) for n in ("owner", "other")]
    )
    try:
        payload = bn_payload("BASE_ENTRY")
        results: list[httpx.Response] = []
        poster = threading.Thread(target=lambda: results.append(owner.post(payload)))
        poster.start()
        wait_for(lambda: placing(sim), 10, what="the owner is at the broker")
        time.sleep(0.4)  # the owner's lock has expired; it is still waiting on the broker
        late = other.post(payload)
        assert late.status_code == 202, late.text
        assert late.json()["status"] == "in_progress"
        poster.join(timeout=30)
        assert results
        first = results[0].json()
        if results[0].status_code == 202:
            wait_for(lambda: not unfinished(pg_url), 30, what="the owner finished")
        else:
            assert first["status"] == "executed", first
        replay = other.post(payload)
        assert replay.status_code == 200
        assert replay.json()["status"] == "duplicate"
        assert replay.json()["original"]["body"]["status"] == "executed"
        rows = check_once(pg_url, sim, 1)
        assert rows[0].status == "executed"
        assert len(sim.placed()) == 2, "one order per leg"
    finally:
        owner.close()
        other.close()


def test_postgres_down_while_order_at_broker_signal_still_finishes_once(
    pg_server: PgServer, pg_url: str, sim: Sim, tmp_path: Path
) -> None:
    """The broker answers while the database is down: the result is not lost (row 12)."""
    env = pg_env(pg_url, sim, PM_HELD_RESULT_RETRY_MS="200")
    sim.rules([{"match": {"endpoint": "placeorder"}, "effect": {"type": "latency_ms", "ms": 1500}}])
    pm = ServeProcess(env, workdir=tmp_path, name="held").start()
    try:
        first: list[httpx.Response] = []
        poster = threading.Thread(target=lambda: first.append(pm.post(GOLD_BASE)))
        poster.start()
        wait_for(lambda: placing(sim), 10, what="the order is at the broker")
        pg_server.stop("fast")
        try:
            poster.join(timeout=30)
            time.sleep(1.5)  # the broker answered; every write since failed
        finally:
            pg_server.start()
        assert first and first[0].status_code in (202, 503), first[0].text
        body = deliver(pm, GOLD_BASE, timeout_s=30)
        assert body["status"] == "duplicate", body
        assert body["original"]["body"]["status"] == "executed", body
        wait_for(lambda: not unfinished(pg_url), 10, what="no signal left in flight")
        rows = check_once(pg_url, sim, 1)
        assert rows[0].status == "executed"
        assert len(sim.placed()) == 1
    finally:
        pm.close()
        if not pg_server.is_running():
            pg_server.start()


# --------------------------------------------------------------------------- rows 17 and 24


def test_slow_broker_answers_202_at_the_deadline_then_completes(sim: Sim, tmp_path: Path) -> None:
    """Embedded SQLite with OpenAlgo: a 1.2 s order call outlives a 300 ms response deadline."""
    env = {**sim.env(), "PM_RESPONSE_DEADLINE_MS": "300"}
    sim.rules([{"match": {"endpoint": "placeorder"}, "effect": {"type": "latency_ms", "ms": 1200}}])
    with ServeProcess(env, workdir=tmp_path, name="slow") as pm:
        pm.start()
        started = time.monotonic()
        first = pm.post(GOLD_BASE)
        assert time.monotonic() - started < 1.0
        assert first.status_code == 202
        assert first.json()["status"] == "in_progress"
        # Another signal on another instrument is not held up by the slow one.
        other = pm.post(bn_payload("EXIT", position="ALL", stop=0))
        assert other.status_code == 200
        assert other.json()["reason_codes"] == ["position_not_open"]
        final = deliver(pm, GOLD_BASE, timeout_s=15)
        assert final["status"] == "duplicate"
        assert final["original"]["body"]["status"] == "executed"
        assert final["signal_id"] == first.json()["signal_id"]
    assert len(sim.placed()) == 1


def test_sigterm_with_a_signal_in_flight_leaves_it_for_takeover(
    pg_url: str, redis_server: RedisServer, sim: Sim, tmp_path: Path
) -> None:
    env = pg_env(pg_url, sim, redis_server.url, PM_SHUTDOWN_TIMEOUT_S="0.5")
    sim.rules([{"match": {"endpoint": "placeorder"}, "effect": {"type": "latency_ms", "ms": 2500}}])
    leaving = ServeProcess(env, workdir=tmp_path, name="leaving").start()
    try:
        answers: list[httpx.Response] = []
        poster = threading.Thread(target=lambda: answers.append(leaving.post(GOLD_BASE)))
        poster.start()
        wait_for(lambda: placing(sim), 10, what="the order is at the broker")
        assert leaving.terminate() == 0
        poster.join(timeout=30)
        # The request in flight still gets a documented answer, never uvicorn's 500.
        assert [(a.status_code, a.json()["status"]) for a in answers] == [(202, "in_progress")]
    finally:
        leaving.close()
    sim.rules([])
    with ServeProcess(env, workdir=tmp_path, name="heir") as heir:
        heir.start()
        wait_for(lambda: not unfinished(pg_url), 30, what="takeover finished the signal")
        rows = check_once(pg_url, sim, 1)
        assert rows[0].status == "executed"
        again = heir.post(GOLD_BASE)
        assert again.json()["status"] == "duplicate"
    assert len(sim.placed()) == 1
    statuses = db_rows(pg_url, "SELECT instance_name, status FROM instance_metadata")
    assert ("leaving", "stopped") in [(s.instance_name, s.status) for s in statuses]


def test_kill9_then_pm_recover_cli_finishes_the_signal(
    pg_url: str, redis_server: RedisServer, sim: Sim, tmp_path: Path
) -> None:
    env = pg_env(pg_url, sim, redis_server.url)
    sim.rules([{"match": {"endpoint": "placeorder"}, "effect": {"type": "fill", "after_ms": 1000}}])
    victim = ServeProcess(env, workdir=tmp_path, name="victim").start()
    try:
        poster = threading.Thread(target=lambda: _swallow(lambda: victim.post(GOLD_BASE)))
        poster.start()
        wait_for(lambda: sim.placed(), 10, what="the order was accepted")
        victim.kill9()
        poster.join(timeout=30)
    finally:
        victim.close()
    (signal_id,) = [r.id for r in unfinished(pg_url)]
    time.sleep(1.5)  # PM_INSTANCE_STALE_S = 1: the victim now counts as dead

    dry = json.loads(pm_cli(env, "recover", "--dry-run", "--json", cwd=tmp_path))
    assert dry["dry_run"] is True
    assert dry["takeovers"] == [signal_id]
    assert unfinished(pg_url), "a dry run changes nothing"

    report = json.loads(pm_cli(env, "recover", "--json", cwd=tmp_path))
    assert report["takeovers"] == [signal_id]
    assert report["finished"] == [{"signal_id": signal_id, "status": "executed"}]
    assert report["warnings"] == []
    assert not unfinished(pg_url)
    check_once(pg_url, sim, 1)
    assert len(sim.placed()) == 1


def test_kill9_with_an_exit_queued_behind_the_entry_both_finish_in_order(
    pg_url: str, redis_server: RedisServer, sim: Sim, tmp_path: Path
) -> None:
    env = pg_env(pg_url, sim, redis_server.url)
    sim.rules([{"match": {"endpoint": "placeorder"}, "effect": {"type": "fill", "after_ms": 2000}}])
    exit_all = gold_payload("EXIT", position="ALL", stop=0, timestamp="2025-12-01T10:05:00")
    victim = ServeProcess(env, workdir=tmp_path, name="victim").start()
    try:
        poster = threading.Thread(target=lambda: _swallow(lambda: victim.post(GOLD_BASE)))
        poster.start()
        wait_for(lambda: sim.placed(), 10, what="the entry was accepted")
        queued = victim.post(exit_all)
        assert queued.status_code == 202
        assert queued.json()["state"] == "queued"
        victim.kill9()
        poster.join(timeout=30)
    finally:
        victim.close()
    sim.rules([])
    with ServeProcess(env, workdir=tmp_path, name="heir") as heir:
        heir.start()
        wait_for(lambda: not unfinished(pg_url), 30, what="both signals finished")
        rows = check_once(pg_url, sim, 2)
        assert [r.status for r in rows] == ["executed", "executed"]
        replay = heir.post(exit_all)
        assert replay.json()["status"] == "duplicate"
        closed = replay.json()["original"]["body"]["decision"]["positions"]
        assert [(p["key"], p["lots"]) for p in closed] == [("GOLD_MINI_Long_1", 3)]
        assert heir.status()["portfolio"]["open_positions"] == 0
    actions = [c["action"] for c in sim.placed()]
    assert actions == ["BUY", "SELL"]
    assert all(q == 0 for q in sim.net_positions().values())


def test_unknown_send_never_matches_an_order_already_bound_to_another_intent(
    sim: Sim, tmp_path: Path
) -> None:
    """Row 18 after a round trip: the book still shows the earlier identical BUY (bound to
    the first entry); only the new order may bind, not 'several matches' (openalgo.md 5)."""
    env = {**sim.env(), "PM_OPENALGO_ORDER_TIMEOUT_S": "0.3"}
    second_entry = gold_payload("BASE_ENTRY", timestamp="2025-12-01T10:10:00")
    sim.rules(
        [
            {
                "match": {"endpoint": "placeorder", "nth": 3},
                "effect": {"type": "accept_then_timeout", "delay_ms": 1500},
            }
        ]
    )
    with ServeProcess(env, workdir=tmp_path, name="rebind") as pm:
        pm.start()
        assert deliver(pm, GOLD_BASE)["status"] == "executed"
        exit_all = gold_payload("EXIT", position="ALL", stop=0, timestamp="2025-12-01T10:05:00")
        assert deliver(pm, exit_all)["status"] == "executed"
        body = deliver(pm, second_entry)
        if body["status"] == "duplicate":
            body = body["original"]["body"]
        assert body["status"] == "executed", body
        placed = sim.placed()
        assert len(placed) == 3
        assert body["orders"][0]["broker_order_id"] == placed[2]["response_orderid"]
        assert pm.status()["blocked_instruments"] == {}
        assert [r["applied"] for r in sim.state()["rules"]] == [1]


def test_partial_second_leg_and_incomplete_unwind_blocks_the_instrument(
    sim: Sim, tmp_path: Path
) -> None:
    """Rows 5/19 with partial fills: every SELL fills only half of what it asks. The PE leg is
    completed as far as the attempts allow, the CE excess is sold back, but that unwind too
    falls short. The position records the hedged lots; the broker still holds unhedged CE
    lots, so the instrument must be blocked for entries."""
    sim.rules(
        [
            {
                "match": {"endpoint": "placeorder", "action": "SELL"},
                "effect": {"type": "partial", "fraction": 0.5, "rest": "cancel"},
            }
        ]
    )
    with ServeProcess({**sim.env(), "PM_FILL_TIMEOUT_S": "0.5"}, workdir=tmp_path) as pm:
        pm.start()
        body = pm.post(bn_payload("BASE_ENTRY")).json()
        pe_sells = [o for o in body["orders"] if o["symbol"].endswith("PE")]
        assert [o["quantity"] for o in pe_sells] == [210, 120, 60]  # 3 + 2 + 1 lots filled
        nets = sim.net_positions()
        hedged = -nets["BANKNIFTY30DEC2552000PE"] // 30
        assert hedged == 6
        positions = pm.positions()["positions"]
        assert [(p["key"], p["lots"]) for p in positions] == [("BANK_NIFTY_Long_1", hedged)]
        assert nets["BANKNIFTY30DEC2552000CE"] > hedged * 30, "the unwind fell short"
        assert pm.status()["blocked_instruments"] == {"BANK_NIFTY": "unwind_failed"}
        sim.rules([])
        refused = pm.post(
            bn_payload("BASE_ENTRY", position="Long_2", timestamp="2025-12-01T10:10:00")
        )
        assert refused.json()["status"] in ("rejected", "blocked")
        assert "instrument_blocked" in refused.json()["reason_codes"]


def test_exit_leg_partly_filled_then_rejected_keeps_the_filled_part(
    sim: Sim, tmp_path: Path
) -> None:
    """Exit retries (service.md 2.4): the CE sell fills 3 of 7 lots, both retries of the
    remainder are rejected. The 3 lots sold must stay sold in the books of pm."""
    with ServeProcess({**sim.env(), "PM_FILL_TIMEOUT_S": "0.5"}, workdir=tmp_path) as pm:
        pm.start()
        assert pm.post(bn_payload("BASE_ENTRY")).json()["status"] == "executed"
        # Calls 2, 3, 4 of the exit: the CE sell fills half, then two rejects.
        partial = {"type": "partial", "fraction": 0.5, "rest": "cancel"}
        reject = {"type": "reject_sync", "message": "RMS: circuit limit"}
        sim.rules(
            [
                {"match": {"endpoint": "placeorder", "nth": 2}, "effect": partial},
                {"match": {"endpoint": "placeorder", "nth": 2}, "effect": reject},
                {"match": {"endpoint": "placeorder", "nth": 2}, "effect": reject},
            ]
        )
        exit_all = bn_payload("EXIT", position="ALL", stop=0, timestamp="2025-12-01T10:05:00")
        body = pm.post(exit_all).json()
        attempts = [(o["client_order_id"][-4:], o["state"]) for o in body["orders"]]
        assert attempts == [
            ("PE-1", "filled"),
            ("CE-1", "cancelled"),
            ("CE-2", "rejected"),
            ("CE-3", "rejected"),
        ]
        nets = sim.net_positions()
        assert nets["BANKNIFTY30DEC2552000CE"] == 120  # 4 of 7 lots still held
        closed = [(p["key"], p["lots"]) for p in body["decision"]["positions"]]
        assert closed == [("BANK_NIFTY_Long_1", 3)], body["decision"]
        positions = pm.positions()["positions"]
        assert [(p["key"], p["lots"]) for p in positions] == [("BANK_NIFTY_Long_1", 4)]
        assert pm.status()["blocked_instruments"] == {"BANK_NIFTY": "unwind_failed"}


def test_entry_leg_partly_filled_is_completed_before_the_next_leg(sim: Sim, tmp_path: Path) -> None:
    """service.md 2.4: on a leg failure, complete the missing quantity while the entry is
    young and no leg was definitively rejected; only otherwise unwind."""
    sim.rules(
        [
            {
                "match": {"endpoint": "placeorder", "nth": 1},
                "effect": {"type": "partial", "fraction": 0.5, "rest": "cancel"},
            }
        ]
    )
    with ServeProcess({**sim.env(), "PM_FILL_TIMEOUT_S": "0.5"}, workdir=tmp_path) as pm:
        pm.start()
        body = pm.post(bn_payload("BASE_ENTRY")).json()
        assert body["status"] == "executed", body
        sent = [(o["client_order_id"][-4:], o["quantity"], o["state"]) for o in body["orders"]]
        assert sent == [
            ("CE-1", 210, "cancelled"),
            ("CE-2", 120, "filled"),
            ("PE-1", 210, "filled"),
        ]
        assert [(p["key"], p["lots"]) for p in body["decision"]["positions"]] == [
            ("BANK_NIFTY_Long_1", 7)
        ]
        nets = sim.net_positions()
        assert nets == {"BANKNIFTY30DEC2552000CE": 210, "BANKNIFTY30DEC2552000PE": -210}
        assert pm.status()["blocked_instruments"] == {}


def test_ambiguous_send_blocks_until_pm_intents_resolve_binds_it(
    pg_url: str, redis_server: RedisServer, sim: Sim, tmp_path: Path
) -> None:
    """Row 18, several matches: a manual order with the same parameters sits in the book when
    pm's send times out. The intent is ambiguous, the instrument blocked and the signal held;
    `pm intents resolve --orderid` binds it and the signal then settles (one pm order)."""
    env = pg_env(
        pg_url,
        sim,
        redis_server.url,
        PM_OPENALGO_ORDER_TIMEOUT_S="0.3",
        PM_RECONCILE_INTERVAL_S="3600",
        # The answer asserted is the hold (202 processing), not a deadline's 503 on a busy
        # machine before T1 committed.
        PM_RESPONSE_DEADLINE_MS="10000",
    )
    manual = {
        "apikey": SIM_API_KEY,
        "strategy": "manual",
        "symbol": "GOLDM05JAN26FUT",
        "exchange": "MCX",
        "action": "BUY",
        "product": "NRML",
        "pricetype": "MARKET",
        "quantity": 3,
        "price": 0,
    }
    with ServeProcess(env, workdir=tmp_path, name="amb") as pm:
        pm.start()
        # The leader reconciles once right after its election. Run after the manual order,
        # that would block GOLD_MINI for the foreign lots (rightly) before the ambiguous
        # send could: wait for it to have read the position book first.
        wait_for(
            lambda: any(c["endpoint"] == "positionbook" for c in sim.state()["calls"]),
            15,
            what="the leader's first reconciliation",
        )
        placed = sim.client.post("/api/v1/placeorder", json=manual)
        assert placed.status_code == 200, placed.text
        sim.rules(
            [
                {
                    "match": {"endpoint": "placeorder", "nth": 1},
                    "effect": {"type": "accept_then_timeout", "delay_ms": 1000},
                }
            ]
        )
        first = pm.post(GOLD_BASE)
        assert first.status_code == 202
        wait_for(
            lambda: pm.status()["blocked_instruments"].get("GOLD_MINI") == "ambiguous_order",
            15,
            what="the instrument is blocked",
        )
        assert pm.post(GOLD_BASE).json()["status"] == "in_progress"
        listing = pm_cli(env, "intents", "list", cwd=tmp_path)
        (line,) = [x for x in listing.splitlines() if "ambiguous" in x]
        client_order_id = line.split()[0]
        ours = [c for c in sim.placed() if str(c["strategy"]).startswith("pm")]
        assert len(ours) == 1
        out = pm_cli(
            env, "intents", "resolve", client_order_id, "--orderid", ours[0]["response_orderid"]
        )
        assert "bound to" in out
        body = deliver(pm, GOLD_BASE, timeout_s=20)
        assert body["status"] == "duplicate"
        assert body["original"]["body"]["status"] == "executed"
        assert (
            body["original"]["body"]["orders"][0]["broker_order_id"]
            == (ours[0]["response_orderid"])
        )
        assert pm.status()["blocked_instruments"] == {}
    assert len([c for c in sim.placed() if str(c["strategy"]).startswith("pm")]) == 1
