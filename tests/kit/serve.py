"""Real `pm serve` processes, the OpenAlgo simulator and scenario payloads for service tests.

``ServeProcess`` starts ``pm serve`` as a subprocess on a free port with the environment it is
given (nothing of the caller's ``PM_*`` leaks in), waits for ``/ready``, posts webhooks and
stops with SIGTERM (graceful) or SIGKILL (a crash). Every response it returns has been checked
against the committed OpenAPI document. Timings are short (``FAST_ENV``) so tests stay fast.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from pm_adapters.openalgo.simulator import RunningSimulator, start_in_thread
from tests.kit.openapi import assert_http_matches

ADMIN_TOKEN = "admin-token-for-tests"
SIM_API_KEY = "test-key"

# Short timings everywhere: fill polls, lock waits, heartbeats, sweeps, leases.
FAST_ENV: dict[str, str] = {
    "PM_FILL_POLL_MS": "5,20",
    "PM_FILL_TIMEOUT_S": "3",
    "PM_LOCK_WAIT_MS": "50",
    "PM_LOCK_POLL_MS": "10",
    "PM_NOT_FOUND_AFTER_S": "1",
    "PM_LOOKUP_SPACING_S": "0.1",
    "PM_HEARTBEAT_MS": "200",
    "PM_DB_HEARTBEAT_S": "0.2",
    "PM_INSTANCE_STALE_S": "1",
    "PM_SWEEP_INTERVAL_S": "0.5",
    "PM_LOCK_CLEANUP_S": "1",
    "PM_LEADER_LEASE_MS": "600",
    "PM_LEADER_RENEW_MS": "150",
    "PM_ELECTION_TICK_MS": "50",
    "PM_STATS_FLUSH_S": "0.5",
    "PM_SHUTDOWN_TIMEOUT_S": "5",
    "PM_REDIS_COOLDOWN_S": "0.5",
    "PM_REDIS_PROBE_MS": "100",
    "PM_DB_CONNECT_RETRIES": "1",
    "PM_DB_CONNECT_BACKOFF": "0.2",
    "PM_MARKET_DATA_TIMEOUT_MS": "500",
    "PM_OPENALGO_READ_BACKOFF": "0.05,0.1",
    "PM_OPENALGO_MATCH_WINDOW_S": "30",
    "PM_RECOVERY_BROKER_BUDGET_S": "5",
    "PM_WEBHOOK_RATE": "0",
    "PM_ADMIN_TOKEN": ADMIN_TOKEN,
    "PM_LOG_LEVEL": "INFO",
    "PM_LOG_FORMAT": "json",
}


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_environ() -> dict[str, str]:
    """The test process environment without any PM_* variable."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PM_")}


class ServeProcess:
    """One ``pm serve`` subprocess; its log goes to ``log_path``."""

    def __init__(self, env: Mapping[str, str], *, workdir: Path | None = None, name: str = "pm"):
        self.port = free_port()
        self.name = name
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="pm-serve-"))
        self.log_path = self.workdir / f"{name}-{self.port}.log"
        self.env = {
            **clean_environ(),
            **FAST_ENV,
            "PM_INSTANCE_NAME": name,
            **env,
            "PM_HTTP_PORT": str(self.port),
            "PM_HTTP_HOST": "127.0.0.1",
        }
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=self.url, timeout=30.0)

    def start(self, *, wait: bool = True, timeout_s: float = 30.0) -> ServeProcess:
        """Start the process and (by default) wait until GET /ready answers 200."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps its own descriptor
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from pm_cli.main import cli; cli()", "serve"],
            env=self.env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if wait:
            self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Poll /ready until 200; fail with the log tail if the process dies or times out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited {self.process.returncode}:\n{self.tail()}"
                )
            try:
                response = self.client.get("/ready", timeout=2.0)
            except httpx.HTTPError:
                time.sleep(0.05)
                continue
            body: dict[str, Any] = assert_http_matches(response)
            if response.status_code == 200:
                return body
            time.sleep(0.05)
        raise AssertionError(f"{self.name} not ready within {timeout_s}s:\n{self.tail()}")

    def tail(self, chars: int = 4000) -> str:
        """The end of the process log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def post(
        self, payload: Mapping[str, Any], *, request_id: str | None = None, timeout: float = 30.0
    ) -> httpx.Response:
        """POST /webhook; the response is checked against the OpenAPI document."""
        headers = {"X-Request-ID": request_id} if request_id else {}
        response = self.client.post(
            "/webhook", json=dict(payload), headers=headers, timeout=timeout
        )
        assert_http_matches(response)
        return response

    def status(self) -> dict[str, Any]:
        """GET /status with the admin token (checked against the document)."""
        response = self.client.get("/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        body: dict[str, Any] = assert_http_matches(response)
        assert response.status_code == 200, body
        return body

    def positions(self) -> dict[str, Any]:
        """GET /positions?status=all with the admin token."""
        response = self.client.get(
            "/positions",
            params={"status": "all"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        body: dict[str, Any] = assert_http_matches(response)
        assert response.status_code == 200, body
        return body

    def terminate(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM and wait (graceful drain); returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)

    def kill9(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def close(self) -> None:
        """Kill the process if still running and close the client."""
        self.kill9()
        self.client.close()

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def serving(env: Mapping[str, str], **kwargs: Any) -> Iterator[ServeProcess]:
    """A started ``pm serve``, killed afterwards."""
    proc = ServeProcess(env, **kwargs)
    try:
        proc.start()
        yield proc
    finally:
        proc.close()


def pm_cli(env: Mapping[str, str], *args: str, cwd: Path | None = None) -> str:
    """Run a ``pm`` command with FAST_ENV + ``env`` (no caller PM_* variables); returns stdout."""
    result = subprocess.run(
        [sys.executable, "-c", "from pm_cli.main import cli; cli()", *args],
        env={**clean_environ(), **FAST_ENV, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"pm {' '.join(args)}: {result.returncode}\n{result.stderr}"
    return result.stdout


def prepare_postgres(url: str, capital: float = 5_000_000.0) -> None:
    """Migrate a fresh PostgreSQL database and create its portfolio row (pm migrate + init)."""
    import sqlalchemy as sa

    from pm_adapters.sql import migrations
    from pm_adapters.sql.uow import SqlUnitOfWorkFactory

    engine = sa.create_engine(url)
    try:
        migrations.upgrade(engine)
        SqlUnitOfWorkFactory(engine).initialise(capital)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- simulator


class Sim:
    """The OpenAlgo simulator in a background thread, driven over its HTTP control API."""

    def __init__(self) -> None:
        self.running: RunningSimulator = start_in_thread(api_keys=(SIM_API_KEY,))
        self.url = self.running.url
        self.client = httpx.Client(base_url=self.url, timeout=10.0)

    def control(self, action: str, body: Mapping[str, Any]) -> None:
        response = self.client.post(f"/_simulator/{action}", json=dict(body))
        assert response.status_code == 200, response.text

    def rules(self, rules: list[dict[str, Any]], *, append: bool = False) -> None:
        """Install fault rules (openalgo.md 9)."""
        self.control("rules", {"rules": rules, "append": append})

    def quotes(self, quotes: Mapping[tuple[str, str], float]) -> None:
        """Static quotes: {(exchange, symbol): price}, bid = ask = ltp."""
        rows = [
            {"exchange": ex, "symbol": sym, "ltp": price, "bid": price, "ask": price}
            for (ex, sym), price in quotes.items()
        ]
        self.control("quotes", {"quotes": rows})

    def state(self) -> dict[str, Any]:
        response = self.client.get("/_simulator/state")
        assert response.status_code == 200
        state: dict[str, Any] = response.json()
        return state

    def placed(self) -> list[dict[str, Any]]:
        """Every placeorder call that created an order."""
        return [
            c
            for c in self.state()["calls"]
            if c["endpoint"] == "placeorder" and c.get("response_orderid")
        ]

    def net_positions(self) -> dict[str, int]:
        """Net quantity per symbol from the simulator's trade book."""
        nets: dict[str, int] = {}
        for trade in self.state()["trades"]:
            sign = 1 if trade["action"] == "BUY" else -1
            nets[trade["symbol"]] = nets.get(trade["symbol"], 0) + sign * int(trade["quantity"])
        return nets

    def env(self) -> dict[str, str]:
        """The pm settings that point an instance at this simulator."""
        return {
            "PM_BROKER": "openalgo",
            "PM_OPENALGO_URL": self.url,
            "PM_OPENALGO_API_KEY": SIM_API_KEY,
            "PM_OPENALGO_EXPECTED_MODE": "analyze",
            "PM_RECONCILE_ON_STARTUP": "false",
        }

    def close(self) -> None:
        self.client.close()
        self.running.stop()


# --------------------------------------------------------------------------- scenarios

BN_EXPIRY = "30DEC25"
GOLD_SYMBOL = "GOLDM05JAN26FUT"

# Quotes that make every Bank Nifty and Gold Mini fill of the scenarios sane.
SCENARIO_QUOTES: dict[tuple[str, str], float] = {
    ("NFO", f"BANKNIFTY{BN_EXPIRY}FUT"): 52000.0,
    ("NSE_INDEX", "BANKNIFTY"): 52000.0,
    ("NFO", f"BANKNIFTY{BN_EXPIRY}52000CE"): 610.0,
    ("NFO", f"BANKNIFTY{BN_EXPIRY}52000PE"): 600.0,
    ("NFO", f"BANKNIFTY{BN_EXPIRY}52500CE"): 520.0,
    ("NFO", f"BANKNIFTY{BN_EXPIRY}52500PE"): 700.0,
    ("MCX", GOLD_SYMBOL): 78500.0,
}


def bn_payload(kind: str, **fields: Any) -> dict[str, Any]:
    """A Bank Nifty webhook body with webhook.md 1.3 second-trade defaults."""
    base: dict[str, Any] = {
        "type": kind,
        "instrument": "BANK_NIFTY",
        "position": "Long_1",
        "price": 52000,
        "stop": 51900,
        "lots": 0,
        "atr": 100,
        "er": 0.85,
        "supertrend": 51900,
        "timestamp": "2025-12-01T10:00:00",
    }
    if kind == "EXIT":
        base["reason"] = "Manual Exit"
    base.update(fields)
    return base


def gold_payload(kind: str, **fields: Any) -> dict[str, Any]:
    """A Gold Mini webhook body (defaults: the passing scenario's base entry)."""
    base: dict[str, Any] = {
        "type": kind,
        "instrument": "GOLD_MINI",
        "position": "Long_1",
        "price": 78500,
        "stop": 78200,
        "lots": 0,
        "atr": 300,
        "er": 0.8,
        "supertrend": 78200,
        "timestamp": "2025-12-01T10:00:00",
    }
    if kind == "EXIT":
        base["reason"] = "Manual Exit"
    base.update(fields)
    return base


def bn_trade() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """webhook.md 1.3's second trade: (payload, expected decision facts) in order.

    Base 7 lots (risk); pyramid 3 lots (A 4, B 3, C 3, base_ratio) at strike 52500; a partial
    EXIT of 3 lots (+45,000); EXIT ALL at 52600 (+72,000 and +27,000). Net +144,000.
    """
    return [
        (bn_payload("BASE_ENTRY"), {"positions": [("BANK_NIFTY_Long_1", 7)], "legs": 2}),
        (
            bn_payload(
                "PYRAMID",
                position="Long_2",
                price=52300,
                stop=52100,
                atr=120,
                supertrend=52100,
                timestamp="2025-12-01T11:00:00",
            ),
            {"positions": [("BANK_NIFTY_Long_2", 3)], "legs": 2, "sizing_final": 3},
        ),
        (
            bn_payload(
                "EXIT",
                price=52500,
                stop=0,
                lots=3,
                atr=120,
                supertrend=52100,
                reason="Partial Profit",
                timestamp="2025-12-01T12:00:00",
            ),
            {"positions": [("BANK_NIFTY_Long_1", 3)], "pnl": 45000.0, "legs": 2},
        ),
        (
            bn_payload(
                "EXIT",
                position="ALL",
                price=52600,
                stop=0,
                atr=120,
                supertrend=52100,
                timestamp="2025-12-01T13:00:00",
            ),
            {
                "positions": [("BANK_NIFTY_Long_1", 4), ("BANK_NIFTY_Long_2", 3)],
                "pnl": 99000.0,
                "legs": 4,
            },
        ),
    ]


def gold_trade() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """A Gold Mini trade built from domain 12's numbers, every gate passing.

    Base at 78500, stop 78200, ATR 300: lot_v = 0.2 % x equity / (300 x 10) -> 3 lots
    (volatility). Pyramid at 79100 (moved 600 > 1R 300; spacing 2 ATR), stop 78900:
    B = floor(3 x 0.5) = 1, C = 2 -> 1 lot (base_ratio). Partial EXIT of 1 lot at 79200
    (+7,000); EXIT ALL at 79300: 2 x 800 x 10 + 1 x 200 x 10 = +18,000. Net +25,000.
    """
    return [
        (gold_payload("BASE_ENTRY"), {"positions": [("GOLD_MINI_Long_1", 3)], "legs": 1}),
        (
            gold_payload(
                "PYRAMID",
                position="Long_2",
                price=79100,
                stop=78900,
                supertrend=78900,
                timestamp="2025-12-01T11:00:00",
            ),
            {"positions": [("GOLD_MINI_Long_2", 1)], "legs": 1, "sizing_final": 1},
        ),
        (
            gold_payload(
                "EXIT",
                price=79200,
                stop=0,
                lots=1,
                supertrend=78900,
                reason="Partial Profit",
                timestamp="2025-12-01T12:00:00",
            ),
            {"positions": [("GOLD_MINI_Long_1", 1)], "pnl": 7000.0, "legs": 1},
        ),
        (
            gold_payload(
                "EXIT",
                position="ALL",
                price=79300,
                stop=0,
                supertrend=78900,
                timestamp="2025-12-01T13:00:00",
            ),
            {
                "positions": [("GOLD_MINI_Long_1", 2), ("GOLD_MINI_Long_2", 1)],
                "pnl": 18000.0,
                "legs": 2,
            },
        ),
    ]


SCENARIO_NET_PNL = 144_000.0 + 25_000.0


def check_decided(body: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """An executed answer carries the expected positions, P&L and one filled order per leg."""
    assert body["status"] == "executed", body
    decision = body["decision"]
    assert [(p["key"], p["lots"]) for p in decision["positions"]] == expected["positions"], body
    if "pnl" in expected:
        assert sum(p["pnl"] for p in decision["positions"]) == expected["pnl"], body
    if "sizing_final" in expected:
        assert decision["sizing"]["final"] == expected["sizing_final"], body
    orders = body["orders"]
    assert len(orders) == expected["legs"], orders
    assert all(o["state"] == "filled" and o["broker_order_id"] for o in orders), orders
    assert len({o["client_order_id"] for o in orders}) == len(orders)


def wait_for(predicate: Any, timeout_s: float, interval_s: float = 0.05, what: str = "") -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or predicate}")
        time.sleep(interval_s)


def db_rows(url: str, query: str, **params: Any) -> list[Any]:
    """Rows of one SQL query on ``url`` (a short-lived engine; tests inspect state with it)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(query), params).all())
    finally:
        engine.dispose()


def post_at_once(procs: list[ServeProcess], payloads: list[dict[str, Any]]) -> list[httpx.Response]:
    """Post payloads[i] to procs[i] at the same instant (a barrier releases the threads)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    barrier = threading.Barrier(len(procs))

    def one(i: int) -> httpx.Response:
        barrier.wait()
        return procs[i].post(payloads[i])

    with ThreadPoolExecutor(len(procs)) as pool:
        return list(pool.map(one, range(len(procs))))


def start_all(procs: list[ServeProcess], timeout_s: float = 30.0) -> list[ServeProcess]:
    """Start every process, then wait until each is ready."""
    for proc in procs:
        proc.start(wait=False)
    for proc in procs:
        proc.wait_ready(timeout_s)
    return procs
