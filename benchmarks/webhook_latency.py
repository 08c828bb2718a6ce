"""Webhook latency and throughput of the running service (service.md 16, issue 5).

Starts a throwaway PostgreSQL and redis-server (tests/kit), runs ``pm migrate`` and ``pm init``,
starts the OpenAlgo simulator (``pm simulate-broker``: fills at once, 429 emulation off) and TWO
``pm serve`` instances on free ports over the same database and Redis, broker ``openalgo`` on
the simulator with the order and read budgets raised (openalgo.md 7), ``PM_WEBHOOK_RATE=0``, a
webhook secret and a short fill poll. ``PM_CONFIG`` is ``bench_config/synthetic50.toml``: 50
synthetic MCX-like futures besides BANK_NIFTY and GOLD_MINI, so that the per-instrument barrier
does not serialize the run, and generous portfolio caps so that most signals execute.

Signals: a seeded trend-following alert logic per instrument (random walk; base entries with an
ATR stop, pyramids on new highs past 1R, partial exits, trailing-stop exits per label or EXIT
ALL; a few stray exits and repeated bases, which are rejected), each instrument on its own
clock (unique timestamps, > 60 s apart so none is a near duplicate). Like TradingView, one
instrument's alerts arrive one after another: the next alert of an instrument is sent once the
previous one is answered 200; different instruments run concurrently. About 1 % of the
answered signals are resent to the other instance and must come back ``duplicate``.

* Phase 1 (latency): ``--rate`` signals/min (default 1,000), open loop on a fixed schedule,
  alternating between the instances, over real HTTP (keep-alive, a lean HTTP/1.1 client):
  per-request latency of each first delivery -> p50/p95/p99 ms.
* Phase 2 (throughput): ``--concurrency`` deliveries in flight (closed loop) for
  ``--duration-s`` seconds across both instances -> completed signals per minute.

A 202 ``in_progress`` is re-sent (same payload, same instance) every 50 ms until it is 200;
``errors`` counts non-2xx answers, transport errors, 202s that never complete (30 s) and 202s
whose signal was decided afresh by a re-send (nothing durable was left by the first delivery:
TradingView sends once, so that signal would have been lost).
``duplicate_executions`` is read afterwards from the simulator (a client order id placed twice,
an order no intent is bound to), from signal_log (a fingerprint with more than one executed
decision) and from the resends (one not answered ``duplicate``). ``--profile`` adds a phase
where py-spy samples both instances (CPU of one, wall time of the signal path on the other) and
prints the hot spots.

Usage: python benchmarks/webhook_latency.py [--quick] [--duration-s 60] [--rate 1000]
    [--latency-signals 300] [--concurrency 8] [--seed 20251201] [--profile]
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import json
import math
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

import httpx  # noqa: E402
import psycopg  # noqa: E402
from alerts import AlertOdds, TrendAlerts  # noqa: E402
from tests.kit.postgres import PgServer, running_server  # noqa: E402
from tests.kit.redis_server import RedisServer, find_redis_binary, free_port  # noqa: E402

CONFIG = Path(__file__).resolve().parent / "bench_config" / "synthetic50.toml"
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
API_KEY = "bench-key"
REPOLL_S = 0.05
COMPLETE_WITHIN_S = 30.0
RESEND_FRACTION = 0.01
TERMINAL = ("executed", "partially_executed", "blocked", "rejected", "failed")

# Real instruments: (start price, ATR as a fraction of price, initial stop in ATRs, labels).
REAL_MARKETS = {"BANK_NIFTY": (52_000.0, 0.0067, 1.5, 6), "GOLD_MINI": (76_000.0, 0.0058, 1.0, 4)}


# --------------------------------------------------------------------------- signals


class InstrumentStream:
    """One instrument's alerts (``benchmarks/alerts.py``), stamped on a bar clock."""

    def __init__(self, instrument: str, seed: str, start: dt.datetime, spec: tuple[float, ...]):
        price, atr_frac, stop_mult, max_labels = spec
        self.rng = random.Random(seed)
        self.strategy = TrendAlerts(
            self.rng,
            instrument,
            price,
            atr_frac,
            stop_mult,
            int(max_labels),
            AlertOdds(entry=0.3, partial_exit=0.015, repeat_base=0.002),
        )
        self.clock = start
        self.pending: collections.deque[tuple[str, dict[str, Any]]] = collections.deque()

    def next(self) -> tuple[str, dict[str, Any]]:
        """The instrument's next alert: (kind, payload with its timestamp)."""
        while not self.pending:
            # Bars are 1-10 minutes apart: two alerts of one instrument, type and label are
            # never within the 60 s near-duplicate window.
            self.clock += dt.timedelta(seconds=self.rng.randint(61, 600))
            self.strategy.move()
            for offset, (kind, payload) in enumerate(self.strategy.alerts()):
                when = self.clock + dt.timedelta(seconds=3 * offset)
                payload["timestamp"] = when.astimezone(IST).isoformat()
                self.pending.append((kind, payload))
        return self.pending.popleft()


def make_streams(instruments: Sequence[str], seed: int) -> dict[str, InstrumentStream]:
    """One stream per instrument, seeded per instrument, starting a week before now."""
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=7)
    streams: dict[str, InstrumentStream] = {}
    for index, instrument in enumerate(instruments):
        spec: tuple[float, ...]
        if instrument in REAL_MARKETS:
            spec = REAL_MARKETS[instrument]
        else:
            prices = random.Random(f"{seed}:{instrument}:price")
            spec = (float(prices.randrange(1_000, 60_000)), 0.006, 1.5, 6)
        # Instruments start a second apart: timestamps differ across instruments too.
        streams[instrument] = InstrumentStream(
            instrument, f"{seed}:{instrument}", start + dt.timedelta(seconds=index), spec
        )
    return streams


# --------------------------------------------------------------------------- processes


def pm_command() -> list[str]:
    """How to run ``pm`` (the console script, else the module through this interpreter)."""
    pm = shutil.which("pm")
    if pm is not None:
        return [pm]
    return [sys.executable, "-c", "import sys; from pm_cli.main import cli; sys.exit(cli())"]


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment without any PM_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PM_")}
    env.update(extra)
    return env


def run_pm(args: Sequence[str], env: dict[str, str]) -> None:
    """Run one pm command to completion; its output goes to the error message on failure."""
    done = subprocess.run([*pm_command(), *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pm {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until ``url`` answers 200 (the process must stay alive)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"process for {url} exited {proc.returncode}:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready within {timeout_s} s")


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """SIGTERM (pm drains), then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class Stack:
    """PostgreSQL, Redis, the simulator and two pm instances; everything on 127.0.0.1."""

    def __init__(self, workdir: Path, pg: PgServer, redis_server: RedisServer, seed: int) -> None:
        self.workdir = workdir
        self.pg = pg
        self.redis = redis_server
        self.seed = seed
        self.secret = secrets.token_hex(16)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.instance_urls: list[str] = []
        self.instance_pids: list[int] = []
        self.sim_url = ""
        self.sim_pid = 0
        self.db_url = ""

    def start(self, log_level: str) -> None:
        self.db_url = self.pg.create_database("bench")
        base = {"PM_DATABASE_URL": self.db_url, "PM_CONFIG": str(CONFIG)}
        run_pm(["migrate"], clean_env(base))
        run_pm(["init"], clean_env(base))

        sim_port = free_port()
        self.sim_url = f"http://127.0.0.1:{sim_port}"
        sim_log = self.workdir / "simulator.log"
        sim_cmd = ["simulate-broker", "--port", str(sim_port), "--seed", str(self.seed)]
        sim = self._spawn([*sim_cmd, "--api-key", API_KEY], clean_env({}), sim_log)
        self.sim_pid = sim.pid
        wait_http(f"{self.sim_url}/_simulator/state", 30, sim, sim_log)

        for name in ("bench-a", "bench-b"):
            port = free_port()
            env = clean_env(
                {
                    **base,
                    "PM_REDIS_URL": self.redis.url,
                    "PM_REDIS_PREFIX": "bench:",
                    "PM_BROKER": "openalgo",
                    "PM_OPENALGO_URL": self.sim_url,
                    "PM_OPENALGO_API_KEY": API_KEY,
                    "PM_OPENALGO_ORDER_RATE": "100000",
                    "PM_OPENALGO_READ_RATE": "100000",
                    "PM_WEBHOOK_RATE": "0",
                    "PM_WEBHOOK_SECRET": self.secret,
                    "PM_FILL_POLL_MS": "2,20",
                    "PM_HTTP_HOST": "127.0.0.1",
                    "PM_HTTP_PORT": str(port),
                    "PM_INSTANCE_NAME": name,
                    "PM_LOG_LEVEL": log_level,
                }
            )
            log = self.workdir / f"{name}.log"
            proc = self._spawn(["serve"], env, log)
            self.instance_urls.append(f"http://127.0.0.1:{port}")
            self.instance_pids.append(proc.pid)
            wait_http(f"http://127.0.0.1:{port}/ready", 90, proc, log)

    def _spawn(
        self, args: Sequence[str], env: dict[str, str], log: Path
    ) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [*pm_command(), *args], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        # Instances first (they drain against the simulator), the simulator last.
        for proc in reversed(self.procs):
            stop_process(proc)

    def simulator_state(self) -> dict[str, Any]:
        state: dict[str, Any] = httpx.get(f"{self.sim_url}/_simulator/state", timeout=60).json()
        return state

    def connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        database = self.db_url.rsplit("/", 1)[-1]
        return psycopg.connect(
            host="127.0.0.1", port=self.pg.port, user=self.pg.user, dbname=database
        )

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.connect() as conn:
            return list(conn.execute(sql, params).fetchall())


@contextlib.contextmanager
def running_stack(seed: int, log_level: str, keep: Path | None) -> Iterator[Stack]:
    """The whole stack, stopped and removed afterwards whatever happens."""
    binary = find_redis_binary()
    if binary is None:
        raise SystemExit("redis-server not installed")
    workdir = Path(tempfile.mkdtemp(prefix="pm-bench-webhook-"))
    try:
        with running_server() as pg:
            redis_server = RedisServer(binary, workdir)
            redis_server.start()
            stack = Stack(workdir, pg, redis_server, seed)
            try:
                stack.start(log_level)
                yield stack
            finally:
                stack.stop()
                redis_server.kill()
    finally:
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for log in workdir.glob("*.log"):
                shutil.copy(log, keep / log.name)
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------- the HTTP client


class TransportError(Exception):
    """The request got no complete answer (connect, write or read failed, or timed out)."""


class Http1Pool:
    """A lean keep-alive HTTP/1.1 client for one instance: ``POST`` of a JSON body.

    The load generator shares the machine's two cores with everything it measures, so it must
    cost little per request: httpx spent about 3 ms of CPU per signal here, this a fraction of
    that. It speaks only what the instances answer (Content-Length bodies, keep-alive) and
    never retries a POST. Idle connections are dropped well before uvicorn's 5 s keep-alive
    timeout: reusing one the server is closing at that moment would fail the POST.
    """

    IDLE_EXPIRY_S = 2.0

    def __init__(self, url: str, timeout_s: float) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self.host = host
        self.port = int(port)
        self.timeout_s = timeout_s
        self.idle: list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        try:
            return await asyncio.wait_for(self._post(path, body), self.timeout_s)
        except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError) as exc:
            raise TransportError(type(exc).__name__) from exc

    async def _post(self, path: str, body: bytes) -> tuple[int, bytes]:
        reader, writer = await self._connection()
        try:
            head = (
                f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            writer.write(head.encode() + body)
            status_line = await reader.readuntil(b"\r\n")
            status = int(status_line.split(b" ", 2)[1])
            length = 0
            keep = True
            while True:
                line = await reader.readuntil(b"\r\n")
                if line == b"\r\n":
                    break
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    keep = False
                elif name == b"transfer-encoding":
                    raise ValueError("chunked answers are not expected here")
            answer = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if keep:
            self.idle.append((time.monotonic(), reader, writer))
        else:
            writer.close()
        return status, answer

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        now = time.monotonic()
        while self.idle:
            since, reader, writer = self.idle.pop()
            if now - since < self.IDLE_EXPIRY_S and not reader.at_eof():
                return reader, writer
            writer.close()
        return await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        for _, _, writer in self.idle:
            writer.close()
        self.idle.clear()


# --------------------------------------------------------------------------- the driver


class Delivery:
    """One signal's delivery: first-request latency, answers, final outcome."""

    __slots__ = ("completed_at", "first_ms", "first_status", "kind", "outcome", "polls")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.first_ms = 0.0
        self.first_status = 0
        self.outcome = ""
        self.polls = 0
        self.completed_at = 0.0


class Driver:
    """Sends the streams' alerts to the instances; one alert in flight per instrument."""

    def __init__(self, stack: Stack, streams: dict[str, InstrumentStream], seed: int,
                 concurrency: int) -> None:  # fmt: skip
        self.stack = stack
        self.streams = streams
        self.rng = random.Random(f"{seed}:driver")
        self.idle = list(streams)
        self.idle_event = asyncio.Event()
        self.idle_event.set()
        self.clients = [Http1Pool(url, 30.0) for url in stack.instance_urls]
        self.turn = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.kinds: collections.Counter[str] = collections.Counter()
        self.resends = 0
        self.resend_not_duplicate = 0
        # (fingerprint, first sent at, first 202 body) of signals decided only by a re-send.
        self.lost: list[tuple[str, dt.datetime, dict[str, Any]]] = []

    async def close(self) -> None:
        for client in self.clients:
            await client.close()

    async def take_instrument(self) -> str:
        while not self.idle:
            self.idle_event.clear()
            await self.idle_event.wait()
        return self.idle.pop(self.rng.randrange(len(self.idle)))

    def release(self, instrument: str) -> None:
        self.idle.append(instrument)
        self.idle_event.set()

    def next_instance(self) -> int:
        self.turn += 1
        return self.turn % len(self.clients)

    async def deliver_next(self) -> Delivery:
        """Send the next alert of an idle instrument; wait for its outcome."""
        instrument = await self.take_instrument()
        try:
            kind, payload = self.streams[instrument].next()
            return await self.deliver(kind, payload, self.next_instance())
        finally:
            self.release(instrument)

    async def deliver(self, kind: str, payload: dict[str, Any], instance: int) -> Delivery:
        body = json.dumps({**payload, "secret": self.stack.secret}, separators=(",", ":"))
        content = body.encode()
        client = self.clients[instance]
        delivery = Delivery(kind)
        self.kinds[kind] += 1
        started = time.perf_counter()
        try:
            code, answer_bytes = await client.post("/webhook", content)
        except TransportError as exc:
            self.errors[f"transport {exc}"] += 1
            return delivery
        delivery.first_ms = (time.perf_counter() - started) * 1000
        delivery.first_status = code
        first_sent = dt.datetime.now(dt.UTC) - dt.timedelta(milliseconds=delivery.first_ms)
        first_body = json.loads(answer_bytes) if code == 202 else {}
        deadline = time.monotonic() + COMPLETE_WITHIN_S
        while code == 202:
            if time.monotonic() > deadline:
                self.errors["202 never completed"] += 1
                return delivery
            await asyncio.sleep(REPOLL_S)
            delivery.polls += 1
            try:
                code, answer_bytes = await client.post("/webhook", content)
            except TransportError as exc:
                self.errors[f"transport {exc}"] += 1
                return delivery
        if code != 200:
            self.errors[f"http {code}"] += 1
            return delivery
        answer = json.loads(answer_bytes)
        status = answer.get("status")
        if status == "duplicate":  # the answer to a re-poll: the original's stored outcome
            original = answer.get("original") or {}
            status = (original.get("body") or {}).get("status", "duplicate")
        elif delivery.polls:
            # Decided afresh by a re-poll: the first delivery, answered 202, had left nothing
            # durable. TradingView sends once, so without our re-sending it would be lost.
            self.errors["202 then lost (decided only by a re-send)"] += 1
            self.lost.append((str(answer.get("fingerprint")), first_sent, first_body))
        delivery.outcome = str(status)
        delivery.completed_at = time.perf_counter()
        self.outcomes[delivery.outcome] += 1
        if self.rng.random() < RESEND_FRACTION:
            await self.resend(content, 1 - instance if len(self.clients) == 2 else instance)
        return delivery

    async def resend(self, content: bytes, instance: int) -> None:
        """TradingView sent the alert again, to the other instance: must be a duplicate."""
        self.resends += 1
        try:
            status, answer_bytes = await self.clients[instance].post("/webhook", content)
        except TransportError as exc:
            self.errors[f"transport {exc}"] += 1
            return
        if status != 200:
            self.errors[f"http {status} (resend)"] += 1
        elif json.loads(answer_bytes).get("status") != "duplicate":
            self.resend_not_duplicate += 1


async def paced_phase(driver: Driver, count: int, rate_per_min: float) -> list[Delivery]:
    """``count`` signals on a fixed schedule (open loop), waiting for every outcome."""
    interval = 60.0 / rate_per_min
    tasks: list[asyncio.Task[Delivery]] = []
    start = time.perf_counter() + 0.05
    for i in range(count):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(driver.deliver_next()))
    return list(await asyncio.gather(*tasks))


async def flood_phase(driver: Driver, duration_s: float, concurrency: int
                      ) -> tuple[list[Delivery], float]:  # fmt: skip
    """``concurrency`` deliveries in flight for ``duration_s``; returns them and the elapsed s."""
    done: list[Delivery] = []
    start = time.perf_counter()
    deadline = start + duration_s

    async def worker() -> None:
        while time.perf_counter() < deadline:
            done.append(await driver.deliver_next())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, time.perf_counter() - start


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


# --------------------------------------------------------------------------- resources


TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int, children: bool = False) -> float:
    """CPU seconds (user + system) of ``pid``, with its reaped children's when asked."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text.rpartition(")")[2].split()
    used = int(fields[11]) + int(fields[12])
    if children:
        used += int(fields[13]) + int(fields[14])
    return used / TICKS


def postgres_pids(pg: PgServer) -> list[int]:
    """The postmaster and its children (backends, writers)."""
    try:
        postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == postmaster:
                pids.append(int(entry.name))
    return pids


def machine_busy_s() -> float:
    """CPU seconds all cores spent not idle since boot (every process, ours or not)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / TICKS


class CpuMeter:
    """CPU seconds per component of the stack between two snapshots."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def snapshot(self) -> dict[str, float]:
        stack = self.stack
        times = os.times()
        shot = {
            "pm-a": process_cpu_s(stack.instance_pids[0]),
            "pm-b": process_cpu_s(stack.instance_pids[1]),
            "simulator": process_cpu_s(stack.sim_pid),
            "postgres": sum(process_cpu_s(pid, children=True) for pid in postgres_pids(stack.pg)),
            "redis": process_cpu_s(stack.redis.process.pid) if stack.redis.process else 0.0,
            "client": times.user + times.system,
            "machine": machine_busy_s(),
            "wall": time.monotonic(),
        }
        return shot

    @staticmethod
    def other_percent(before: dict[str, float], after: dict[str, float]) -> float:
        """CPU other processes on the machine used meanwhile, in % of all cores."""
        wall = after["wall"] - before["wall"]
        ours = sum(after[k] - before[k] for k in before if k not in ("wall", "machine"))
        other = max(0.0, after["machine"] - before["machine"] - ours)
        return 100 * other / wall / (os.cpu_count() or 1)

    @staticmethod
    def report(before: dict[str, float], after: dict[str, float], signals: int) -> list[str]:
        wall = after["wall"] - before["wall"]
        used = {k: after[k] - before[k] for k in before if k != "wall"}
        ours = sum(v for k, v in used.items() if k != "machine")
        other = max(0.0, used["machine"] - ours)
        cores = os.cpu_count() or 1
        parts = "  ".join(
            f"{k} {1000 * v / max(1, signals):.1f}" for k, v in used.items() if k != "machine"
        )
        return [
            f"  CPU ms per signal: {parts}",
            f"  CPU busy: ours {100 * ours / wall / cores:.0f} %, other work on the machine"
            f" {100 * other / wall / cores:.0f} % of {cores} cores"
            f" (load average now {Path('/proc/loadavg').read_text().split()[0]})",
        ]


class LockSampler:
    """Samples pg_stat_activity: how many backends work, and how many wait for a lock on what."""

    def __init__(self, stack: Stack, interval_s: float = 0.05) -> None:
        self.stack = stack
        self.interval_s = interval_s
        self.samples = 0
        self.active = 0
        self.waiting = 0
        self.waited: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()

    async def run(self) -> None:
        await asyncio.to_thread(self._loop)

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        sql = (
            "SELECT wait_event_type, left(regexp_replace(query, '\\s+', ' ', 'g'), 70)"
            " FROM pg_stat_activity WHERE datname = current_database()"
            " AND state IN ('active', 'idle in transaction') AND pid <> pg_backend_pid()"
        )
        with self.stack.connect() as conn:
            conn.autocommit = True
            while not self._stop.is_set():
                rows = conn.execute(sql).fetchall()
                self.samples += 1
                self.active += len(rows)
                for event_type, query in rows:
                    if event_type == "Lock":
                        self.waiting += 1
                        self.waited[str(query)] += 1
                time.sleep(self.interval_s)

    def report(self) -> list[str]:
        n = max(1, self.samples)
        lines = [
            f"  PostgreSQL ({self.samples} samples): {self.active / n:.1f} backends busy or in a"
            f" transaction on average, {self.waiting / n:.1f} of them waiting for a lock"
        ]
        for query, count in self.waited.most_common(3):
            lines.append(f"    {100 * count / max(1, self.waiting):4.0f} % of lock waits: {query}")
        return lines


# --------------------------------------------------------------------------- checks


def wait_settled(stack: Stack, timeout_s: float = 60.0) -> int:
    """Wait until no signal is queued/processing and no intent is in flight; returns leftovers."""
    deadline = time.monotonic() + timeout_s
    left = 0
    while time.monotonic() < deadline:
        rows = stack.query(
            "SELECT (SELECT count(*) FROM signal_log WHERE status IN ('queued','processing'))"
            " + (SELECT count(*) FROM order_intents WHERE state IN"
            " ('pending','sending','accepted','partially_filled','unknown'))"
        )
        left = int(rows[0][0])
        if left == 0:
            return 0
        time.sleep(0.25)
    return left


def exactly_once_report(stack: Stack) -> dict[str, int]:
    """Duplicate executions seen by the broker and in signal_log, plus what the orders were."""
    state = stack.simulator_state()
    orders = state["orders"]
    placed = collections.Counter(str(o.get("strategy")) for o in orders)
    twice = sum(n - 1 for n in placed.values() if n > 1)
    bound = {
        str(row[0])
        for row in stack.query(
            "SELECT broker_order_id FROM order_intents WHERE broker_order_id IS NOT NULL"
        )
    }
    unbound = sum(1 for o in orders if str(o["orderid"]) not in bound)
    executed_twice = stack.query(
        "SELECT count(*) FROM (SELECT fingerprint FROM signal_log"
        " WHERE status IN ('executed','partially_executed')"
        " GROUP BY fingerprint HAVING count(*) > 1) AS d"
    )[0][0]
    filled = sum(1 for o in orders if o["status"] == "complete")
    return {
        "client_order_ids_placed_twice": twice,
        "orders_without_intent": unbound,
        "fingerprints_executed_twice": int(executed_twice),
        "broker_orders": len(orders),
        "broker_orders_complete": filled,
        "intents": int(stack.query("SELECT count(*) FROM order_intents")[0][0]),
    }


# --------------------------------------------------------------------------- profile


def start_pyspy(pid: int, seconds: float, out: Path, idle: bool) -> subprocess.Popen[bytes] | None:
    """py-spy record of ``pid`` (raw collapsed stacks), or None when py-spy is missing.

    ``idle``: every thread, waiting or not (wall time); else only the thread holding the GIL
    (Python CPU time; waits and other threads' sleeps left out).
    """
    pyspy = shutil.which("py-spy")
    if pyspy is None:
        return None
    args = [pyspy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250",
            "--format", "raw", "--output", str(out), "--nonblocking", "--threads"]  # fmt: skip
    args.append("--idle" if idle else "--gil")
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def read_stacks(path: Path) -> list[tuple[list[str], int]]:
    """Collapsed stacks: (frames root first, samples)."""
    stacks: list[tuple[list[str], int]] = []
    if not path.exists():
        return stacks
    for line in path.read_text(errors="replace").splitlines():
        head, _, count = line.rpartition(" ")
        if head and count.isdigit():
            stacks.append((head.split(";"), int(count)))
    return stacks


def short(frame: str) -> str:
    """``func (path/to/src/pm_core/x.py:12)`` -> ``pm_core/x.py:func``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("/src/", "/site-packages/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{name}"


def hot_spots(stacks: list[tuple[list[str], int]], keep: str | None, top: int) -> list[str]:
    """Self and inclusive shares of the busiest functions (stacks containing ``keep`` only)."""
    chosen = [(frames, n) for frames, n in stacks if keep is None or any(keep in f for f in frames)]
    total = sum(n for _, n in chosen)
    if not total:
        return ["  (no samples)"]
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for frames, n in chosen:
        names = [short(f) for f in frames if " (" in f]
        if names:
            own[names[-1]] += n
        for name in set(names):
            inclusive[name] += n
    lines = [f"  {total} samples"]
    lines.append("  self time:")
    lines += [f"    {100 * n / total:5.1f} %  {name}" for name, n in own.most_common(top)]
    lines.append("  inclusive (pm code only):")
    pm_only = [(k, v) for k, v in inclusive.most_common() if k.startswith("pm_")]
    lines += [f"    {100 * n / total:5.1f} %  {name}" for name, n in pm_only[:top]]
    return lines


# --------------------------------------------------------------------------- main


def summarize(deliveries: Sequence[Delivery]) -> tuple[list[float], int]:
    latencies = [d.first_ms for d in deliveries if d.first_status]
    accepted_later = sum(1 for d in deliveries if d.first_status == 202)
    return latencies, accepted_later


async def run(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    config = tomllib.loads(CONFIG.read_text())
    instruments = ["BANK_NIFTY", "GOLD_MINI", *config.get("instruments", {})]
    streams = make_streams(instruments, args.seed)
    driver = Driver(stack, streams, args.seed, args.concurrency)
    try:
        # A few signals first: connections open, code paths and caches warm.
        await paced_phase(driver, 20 if not args.quick else 10, 6000)
        driver.outcomes.clear()
        driver.kinds.clear()

        meter = CpuMeter(stack)
        print(f"phase 1: {args.latency_signals} signals at {args.rate:g}/min over both instances")
        before = meter.snapshot()
        phase1 = await paced_phase(driver, args.latency_signals, args.rate)
        cpu1 = meter.report(before, meter.snapshot(), len(phase1))
        latencies, later = summarize(phase1)
        p1_errors = sum(driver.errors.values())
        print(
            f"  latency ms: p50 {percentile(latencies, 50):.2f}"
            f"  p95 {percentile(latencies, 95):.2f}"
            f"  p99 {percentile(latencies, 99):.2f}  max {max(latencies, default=math.nan):.2f}"
            f"  mean {statistics.fmean(latencies or [math.nan]):.2f}"
        )
        print(f"  first answers 202 (completed by re-polling): {later}; errors: {p1_errors}")
        for line in cpu1:
            print(line)

        print(
            f"phase 2: {args.concurrency} in flight for {args.duration_s:g} s over both instances"
        )
        sampler = LockSampler(stack)
        sampling = asyncio.create_task(sampler.run())
        before = meter.snapshot()
        phase2, elapsed = await flood_phase(driver, args.duration_s, args.concurrency)
        after = meter.snapshot()
        other_pct = CpuMeter.other_percent(before, after)
        sampler.stop()
        await sampling
        completed = [d for d in phase2 if d.outcome]
        per_min = len(completed) / elapsed * 60
        windows = window_rates(completed, 10.0)
        lat2, later2 = summarize(phase2)
        print(
            f"  {len(completed):,} signals completed in {elapsed:.1f} s = {per_min:,.0f}/min"
            f" (10 s windows: min {min(windows, default=0):,.0f},"
            f" max {max(windows, default=0):,.0f} /min)"
        )
        if lat2:
            print(
                f"  latency under load ms: p50 {percentile(lat2, 50):.1f}"
                f"  p95 {percentile(lat2, 95):.1f}  p99 {percentile(lat2, 99):.1f};"
                f" first answers 202: {later2}"
            )
        for line in [*meter.report(before, after, len(completed)), *sampler.report()]:
            print(line)

        profile: list[str] = []
        if args.profile:
            profile = await profile_phase(args, stack, driver)
    finally:
        await driver.close()

    left = wait_settled(stack)
    report = exactly_once_report(stack)
    duplicates = (
        report["client_order_ids_placed_twice"]
        + report["orders_without_intent"]
        + report["fingerprints_executed_twice"]
    )
    errors = sum(driver.errors.values()) + left
    statuses = dict(stack.query("SELECT status, count(*) FROM signal_log GROUP BY status"))
    positions = dict(
        stack.query("SELECT status, count(*) FROM portfolio_positions GROUP BY status")
    )
    print(f"signal mix sent: {json.dumps(dict(sorted(driver.kinds.items())))}")
    print(f"outcomes: {json.dumps(dict(sorted(driver.outcomes.items())))}")
    print(f"signal_log: {json.dumps({k: int(v) for k, v in sorted(statuses.items())})}")
    print(f"resent to the other instance: {driver.resends} (not answered duplicate: "
          f"{driver.resend_not_duplicate})")  # fmt: skip
    print(f"errors: {dict(driver.errors)}; unsettled after the run: {left}")
    print(f"broker: {json.dumps(report)}")
    print(f"positions at the end: {json.dumps({k: int(v) for k, v in sorted(positions.items())})}")
    for fingerprint, sent_at, body in driver.lost[:3]:
        rows = stack.query(
            "SELECT id, received_at FROM signal_log WHERE fingerprint = %s", (fingerprint,)
        )
        stored = f"row {rows[0][0]} received_at {rows[0][1]:%H:%M:%S.%f}" if rows else "no row"
        print(
            f"  lost after 202: {fingerprint[:16]} first sent {sent_at:%H:%M:%S.%f}, 202 said"
            f" signal_id {body.get('signal_id')}; stored: {stored} (the re-send)"
        )
    for line in profile:
        print(line)
    return {
        "p50_ms": _ms(percentile(latencies, 50)),
        "p95_ms": _ms(percentile(latencies, 95)),
        "p99_ms": _ms(percentile(latencies, 99)),
        "max_signals_per_min_two_instances": round(per_min),
        "errors": errors,
        "duplicate_executions": duplicates + driver.resend_not_duplicate,
        "latency_signals": len(latencies),
        "rate_per_min": args.rate,
        "throughput_signals": len(completed),
        "throughput_seconds": round(elapsed, 1),
        "concurrency": args.concurrency,
        "executed_fraction": round(
            driver.outcomes["executed"] / max(1, sum(driver.outcomes.values())), 3
        ),
        "other_work_cpu_percent": round(other_pct),
    }


def _ms(value: float) -> float | None:
    """Milliseconds for the JSON line (null when nothing was measured)."""
    return None if math.isnan(value) else round(value, 2)


def window_rates(deliveries: Sequence[Delivery], width_s: float) -> list[float]:
    """Completions per minute in consecutive windows (the partial last window dropped)."""
    if not deliveries:
        return []
    times = sorted(d.completed_at for d in deliveries)
    start = times[0]
    counts = collections.Counter(int((t - start) // width_s) for t in times)
    full = int((times[-1] - start) // width_s)
    return [counts.get(i, 0) * 60 / width_s for i in range(full)]


async def profile_phase(args: argparse.Namespace, stack: Stack, driver: Driver) -> list[str]:
    """Load as in phase 2 while py-spy samples instance A (CPU) and B (wall, signal path)."""
    seconds = max(5.0, min(args.duration_s, 30.0))
    cpu_out = stack.workdir / "profile-cpu.txt"
    wall_out = stack.workdir / "profile-wall.txt"
    print(f"profile: {seconds:g} s of phase-2 load, py-spy on both instances")
    cpu_spy = start_pyspy(stack.instance_pids[0], seconds, cpu_out, idle=False)
    if cpu_spy is None:
        return ["profile: py-spy not installed (pip install py-spy)"]
    spies = [cpu_spy, start_pyspy(stack.instance_pids[1], seconds, wall_out, idle=True)]
    try:
        await asyncio.sleep(1.0)
        await flood_phase(driver, seconds, args.concurrency)
        for spy in spies:
            if spy is not None:
                await asyncio.to_thread(spy.wait, 60)
    finally:
        for spy in spies:
            if spy is not None and spy.poll() is None:
                spy.kill()
                spy.wait(timeout=10)
    if args.keep_logs is not None:
        args.keep_logs.mkdir(parents=True, exist_ok=True)
        for path in (cpu_out, wall_out):
            if path.exists():
                shutil.copy(path, args.keep_logs / path.name)
    lines = ["profile of instance A (CPU: samples of the thread holding the GIL):"]
    lines += hot_spots(read_stacks(cpu_out), None, 25)
    lines.append("profile of instance B (wall time of the signal path, idle included):")
    lines += hot_spots(read_stacks(wall_out), args.profile_keep, 25)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short run (smoke test)")
    parser.add_argument("--duration-s", type=float, default=60.0, help="throughput phase length")
    parser.add_argument("--rate", type=float, default=1000.0, help="latency phase signals/min")
    parser.add_argument("--latency-signals", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8, help="throughput phase in flight")
    parser.add_argument("--seed", type=int, default=20251201)
    parser.add_argument("--log-level", default="INFO", help="PM_LOG_LEVEL of the instances")
    parser.add_argument("--profile", action="store_true", help="py-spy both instances under load")
    parser.add_argument("--profile-keep", default="SignalService.handle",
                        help="wall profile: only stacks through this path")  # fmt: skip
    parser.add_argument("--keep-logs", type=Path, help="copy instance logs and profiles here")
    args = parser.parse_args()
    if args.quick:
        args.latency_signals = min(args.latency_signals, 60)
        args.duration_s = min(args.duration_s, 10.0)

    started = time.perf_counter()
    with running_stack(args.seed, args.log_level, args.keep_logs) as stack:
        print(f"stack up in {time.perf_counter() - started:.1f} s: instances {stack.instance_urls},"
              f" simulator {stack.sim_url}")  # fmt: skip
        figures = asyncio.run(run(args, stack))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
