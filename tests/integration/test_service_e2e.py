"""End to end over real HTTP (issue 5 proof 1): a real `pm serve`, a full trade per instrument.

Twice: the embedded default (SQLite file, paper broker, no Redis) and PostgreSQL + Redis +
the OpenAlgo simulator. BASE_ENTRY, a PYRAMID that passes every gate, a partial EXIT and
EXIT ALL, for Bank Nifty (webhook.md 1.3's second trade) and Gold Mini; then the positions,
the equity and (with the simulator) the broker's books must agree.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.kit.redis_server import RedisServer
from tests.kit.serve import (
    ADMIN_TOKEN,
    GOLD_SYMBOL,
    SCENARIO_NET_PNL,
    SCENARIO_QUOTES,
    SIM_API_KEY,
    ServeProcess,
    Sim,
    bn_trade,
    check_decided,
    db_rows,
    gold_payload,
    gold_trade,
    pm_cli,
    prepare_postgres,
    serving,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CAPITAL = 5_000_000.0


def run_trades(pm: ServeProcess, sim: Sim | None = None) -> list[dict[str, Any]]:
    """Post both trades in order; every answer is 200 executed with the expected facts.

    With a simulator, after every step its net positions equal what pm's positions hold.
    """
    bodies = []
    for trade in (bn_trade(), gold_trade()):
        for payload, expected in trade:
            response = pm.post(payload)
            assert response.status_code == 200, response.text
            body = response.json()
            check_decided(body, expected)
            bodies.append(body)
            if sim is not None:
                held = {k: v for k, v in sim.net_positions().items() if v}
                assert held == expected_nets(pm.positions()["positions"]), payload
    return bodies


def expected_nets(positions: list[dict[str, Any]]) -> dict[str, int]:
    """Broker net quantity per symbol implied by pm's positions (BN: +CE/-PE units; Gold lots)."""
    nets: dict[str, int] = {}
    for p in positions:
        for symbol in p["legs"]:
            if symbol.endswith("CE"):
                qty = p["quantity"]
            elif symbol.endswith("PE"):
                qty = -p["quantity"]
            else:
                qty = p["lots"]  # Gold Mini orders are in lots
            nets[symbol] = nets.get(symbol, 0) + qty
    return {k: v for k, v in nets.items() if v}


def check_status_flat(status: dict[str, Any]) -> None:
    portfolio = status["portfolio"]
    assert portfolio["open_positions"] == 0
    assert portfolio["closed_equity"] == pytest.approx(CAPITAL + SCENARIO_NET_PNL, abs=0.01)
    assert portfolio["equity"] == pytest.approx(CAPITAL + SCENARIO_NET_PNL, abs=0.01)
    assert portfolio["total_risk_percent"] == 0
    stats = status["statistics"]
    assert stats["entries_executed"] == 2
    assert stats["pyramids_executed"] == 2
    # One per label EXIT, one per position an EXIT ALL closes (domain 7.5): 1 + 2 per trade.
    assert stats["exits_executed"] == 6
    assert stats["orders_placed"] == 15


def check_replay(pm: ServeProcess, payload: dict[str, Any], original: dict[str, Any]) -> None:
    """A re-delivery answers 200 duplicate with the stored answer and sends nothing."""
    response = pm.post(payload)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "duplicate"
    assert body["duplicate_layer"] in ("l1", "l2", "l3")
    assert body["signal_id"] == original["signal_id"]
    assert body["original"]["body"]["orders"] == original["orders"]


def test_embedded_default_full_trades(tmp_path: Path) -> None:
    with serving({}, workdir=tmp_path, name="embedded") as pm:
        ready = pm.wait_ready()
        assert ready["checks"]["database"]["dialect"] == "sqlite"
        assert ready["checks"]["redis"]["status"] == "disabled"
        assert ready["checks"]["broker"]["name"] == "paper"
        bodies = run_trades(pm)
        check_replay(pm, bn_trade()[1][0], bodies[1])
        check_status_flat(pm.status())
        assert pm.positions()["positions"] == []
        assert pm.terminate() == 0
    assert (tmp_path / "pm.sqlite3").exists()
    # The CLI reads the same file the service wrote.
    doc = json.loads(pm_cli({}, "status", "--json", cwd=tmp_path))
    check_status_flat(doc)


@pytest.fixture
def sim() -> Any:
    simulator = Sim()
    simulator.quotes(SCENARIO_QUOTES)
    yield simulator
    simulator.close()


def test_postgres_redis_simulator_full_trades(
    pg_url: str, redis_server: RedisServer, sim: Sim, tmp_path: Path
) -> None:
    prepare_postgres(pg_url, CAPITAL)
    env = {
        "PM_DATABASE_URL": pg_url,
        "PM_REDIS_URL": redis_server.url,
        "PM_REDIS_PREFIX": f"e2e{uuid.uuid4().hex[:6]}:",
        **sim.env(),
    }
    with serving(env, workdir=tmp_path, name="pg") as pm:
        ready = pm.wait_ready()
        assert ready["mode"] == "normal"
        assert ready["checks"]["database"]["dialect"] == "postgresql"
        assert ready["checks"]["broker"]["name"] == "openalgo"
        bodies = run_trades(pm, sim)
        check_replay(pm, gold_trade()[1][0], bodies[5])
        check_status_flat(pm.status())
        assert pm.terminate() == 0

    # The simulator's books agree: one order per leg, each bound to exactly one intent.
    orders_in_answers = [o for b in bodies for o in b["orders"]]
    placed = sim.placed()
    assert len(placed) == len(orders_in_answers) == 15
    state = sim.state()
    assert all(o["status"] == "complete" for o in state["orders"])
    assert {o["orderid"] for o in state["orders"]} == {
        o["broker_order_id"] for o in orders_in_answers
    }
    by_id = {o["orderid"]: o for o in state["orders"]}
    for order in orders_in_answers:
        at_broker = by_id[order["broker_order_id"]]
        assert (at_broker["symbol"], at_broker["action"], at_broker["quantity"]) == (
            order["symbol"],
            order["action"],
            order["quantity"],
        )
        assert float(at_broker["average_price"]) == order["average_price"]
    nets = sim.net_positions()
    assert nets and all(q == 0 for q in nets.values()), nets

    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT client_order_id, broker_order_id, state FROM order_intents")
            ).all()
            signals = conn.execute(
                sa.text("SELECT fingerprint, status FROM signal_log ORDER BY id")
            ).all()
    finally:
        engine.dispose()
    assert len(rows) == 15
    assert {r.state for r in rows} == {"filled"}
    assert len({r.broker_order_id for r in rows}) == 15
    assert len(signals) == 8 and {s.status for s in signals} == {"executed"}

    cli_env = {**env, "PM_ADMIN_TOKEN": ADMIN_TOKEN}
    out = pm_cli(cli_env, "status", "--json", cwd=tmp_path)
    check_status_flat(json.loads(out))
    # Secrets never reach logs or output.
    for secret in (SIM_API_KEY, ADMIN_TOKEN):
        assert secret not in out
        assert secret not in pm.log_path.read_text()


def test_memory_instance_full_trades(tmp_path: Path) -> None:
    """PM_DATABASE_URL=memory:// serves the same trades with nothing on disk."""
    with serving({"PM_DATABASE_URL": "memory://"}, workdir=tmp_path, name="memory") as pm:
        assert pm.wait_ready()["checks"]["database"]["dialect"] == "memory"
        bodies = run_trades(pm)
        check_replay(pm, bn_trade()[3][0], bodies[3])
        check_status_flat(pm.status())
        assert pm.terminate() == 0
    assert not (tmp_path / "pm.sqlite3").exists()


def test_ladder_partial_fill_then_market_over_the_simulator(
    pg_url: str, sim: Sim, tmp_path: Path
) -> None:
    """PM_SIGNAL_ORDER_STYLE=ladder against OpenAlgo: a LIMIT order that fills in part and
    never again, five modifications, the cancel, then MARKET for the rest; the leg's fill is
    both orders at their weighted average."""
    prepare_postgres(pg_url, CAPITAL)
    config = tmp_path / "pm.toml"
    config.write_text("[portfolio]\nrollover_retry_interval_s = 0.05\n")
    gold = {"exchange": "MCX", "symbol": GOLD_SYMBOL, "ltp": 78500, "bid": 78000, "ask": 79000}
    sim.control("quotes", {"quotes": [gold]})
    # The first gold order fills one lot in three at 78690 and rests; the ask (79000) stays
    # above every ladder step, so nothing more fills until the MARKET order.
    partial = {"partial": {"fraction": 0.34, "price": 78690}}
    sim.rules(
        [{"match": {"endpoint": "placeorder", "symbol": GOLD_SYMBOL, "nth": 1}, "effect": partial}]
    )
    env = {
        "PM_DATABASE_URL": pg_url,
        "PM_SIGNAL_ORDER_STYLE": "ladder",
        "PM_CONFIG": str(config),
        **sim.env(),
    }
    with serving(env, workdir=tmp_path, name="ladder") as pm:
        pm.wait_ready()
        response = pm.post(gold_payload("BASE_ENTRY"))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "executed", body
        (position,) = pm.positions()["positions"]
        assert pm.terminate() == 0

    # Only this signal traded: every order call in the log is the gold leg's.
    endpoints = [c["endpoint"] for c in sim.state()["calls"]]
    order_calls = [e for e in endpoints if e in ("placeorder", "modifyorder", "cancelorder")]
    assert order_calls == ["placeorder"] + ["modifyorder"] * 5 + ["cancelorder", "placeorder"]
    orders = {o["orderid"]: o for o in sim.state()["orders"]}
    limit, market = (orders[c["response_orderid"]] for c in sim.placed())
    assert (limit["pricetype"], limit["status"]) == ("LIMIT", "cancelled")
    assert float(limit["price"]) == 78893.0  # P_5 = ceil(78500 × 1.005)
    assert (market["pricetype"], market["status"]) == ("MARKET", "complete")
    lots = position["lots"]
    assert lots == 3
    assert int(market["quantity"]) == lots - 1  # one lot filled on the ladder
    # The answer lists both broker orders as they are; the position holds the leg's total.
    ladder, rest = body["orders"]
    assert (ladder["quantity"], ladder["state"], ladder["average_price"]) == (
        lots,
        "cancelled",
        78690,
    )
    assert (rest["quantity"], rest["state"], rest["average_price"]) == (lots - 1, "filled", 79000)
    (stored,) = db_rows(pg_url, "SELECT lots, entry_fill_price FROM portfolio_positions")
    expected = (78690 + 79000 * (lots - 1)) / lots
    assert stored.lots == lots
    assert float(stored.entry_fill_price) == pytest.approx(expected, rel=1e-12)
