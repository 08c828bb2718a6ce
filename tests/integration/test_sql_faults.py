"""Database faults: PostgreSQL dies inside a unit of work; PostgreSQL down at start-up."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from pm_adapters.sql.connect import connect
from pm_adapters.sql.retry import DbSettings, RetryPolicy, create_engine, run_transaction
from pm_adapters.sql.tables import metadata, signal_log
from pm_adapters.sql.uow import SqlUnitOfWork, SqlUnitOfWorkFactory
from pm_cli.db import init_command, migrate_command
from pm_core.errors import DatabaseUnavailable
from pm_core.model import ChangeSet, EquityUpdate, Signal
from pm_core.ports import Claimed
from tests.kit.postgres import PgServer, free_port

pytestmark = pytest.mark.integration

T0 = dt.datetime(2025, 11, 28, 10, 30, tzinfo=dt.UTC)
SIG = Signal("BASE_ENTRY", "GOLD_MINI", "Long_1", 100.0, 90.0, 1, 2.0, 0.5, 95.0, T0)


@pytest.fixture()
def factory(pg_server: PgServer) -> Iterator[SqlUnitOfWorkFactory]:
    url = pg_server.create_database("fault")
    engine = create_engine(url, DbSettings(connect_timeout_s=2))
    metadata.create_all(engine)
    f = SqlUnitOfWorkFactory(engine)
    f.initialise(1000.0)
    try:
        yield f
    finally:
        if not pg_server.is_running():
            pg_server.start()
        f.close()


def _t1(uow: SqlUnitOfWork) -> int:
    """A T1-shaped unit: claim, lock, save a small ChangeSet."""
    claimed = uow.signals.claim(SIG, "c" * 64, T0, "inst-a")
    assert isinstance(claimed, Claimed)
    snap = uow.portfolio.lock()
    uow.portfolio.save(
        ChangeSet(portfolio=EquityUpdate(2000.0, 2000.0), statistics={"signals_received": 1}),
        snap.version,
    )
    return claimed.id


@pytest.mark.parametrize("when", ["before_commit", "mid_unit"])
def test_server_stops_inside_a_unit_nothing_half_written(
    pg_server: PgServer, factory: SqlUnitOfWorkFactory, when: str
) -> None:
    uow = factory.begin()
    with uow, pytest.raises(DatabaseUnavailable):
        if when == "mid_unit":
            uow.signals.claim(SIG, "c" * 64, T0, "inst-a")
            pg_server.stop("immediate")
            uow.portfolio.lock()
        else:
            _t1(uow)
            pg_server.stop("immediate")
            uow.commit()
    pg_server.start()
    with factory.begin(read_only=True) as reader:
        snap = reader.portfolio.read()
        assert reader.signals.by_fingerprint("c" * 64) is None
        assert reader.statistics.read()["signals_received"] == 0
    assert (snap.version, snap.closed_equity) == (1, 1000.0)
    # The pool's pre-ping drops the dead connections: the next attempt simply succeeds.
    signal_id = run_transaction(factory, _t1, policy=RetryPolicy(budget_s=10))
    with factory.begin(read_only=True) as reader:
        snap = reader.portfolio.read()
        stored = reader.signals.get(signal_id)
    assert snap.version == 2 and snap.closed_equity == 2000.0 and stored is not None
    with factory.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(signal_log)).scalar() == 1


def test_retry_rides_out_a_restart(pg_server: PgServer, factory: SqlUnitOfWorkFactory) -> None:
    """A transaction whose first attempt meets a dead server succeeds once it is back."""
    pg_server.stop("fast")
    attempts: list[int] = []

    def sleep_then_restart(seconds: float) -> None:
        if not pg_server.is_running():
            pg_server.start()

    signal_id = run_transaction(
        factory,
        _t1,
        policy=RetryPolicy(attempts=4, base_s=0.01, cap_s=0.05, budget_s=30),
        sleep=sleep_then_restart,
        on_retry=lambda exc: attempts.append(len(attempts) + 1),
    )
    assert attempts == [1] and signal_id > 0


def test_start_with_server_down_backs_off_then_fails_clearly() -> None:
    url = f"postgresql+psycopg://pm:hunter2@127.0.0.1:{free_port()}/pm"
    slept: list[float] = []
    with pytest.raises(DatabaseUnavailable) as info:
        connect(url, DbSettings(connect_timeout_s=1), sleep=slept.append)
    assert slept == [1.0, 2.0, 4.0]  # the documented default backoff
    message = str(info.value)
    assert message.startswith("database unreachable at postgresql+psycopg://pm@127.0.0.1:")
    assert "hunter2" not in message


@pytest.mark.parametrize("command", [migrate_command, init_command])
def test_cli_exits_3_when_database_is_down(command: object) -> None:
    url = f"postgresql+psycopg://pm:hunter2@127.0.0.1:{free_port()}/pm"
    env = {"PM_DB_CONNECT_BACKOFF": "0.01,0.02,0.04", "PM_DB_CONNECT_TIMEOUT_S": "1"}
    result = CliRunner().invoke(command, ["--database-url", url], env=env)  # type: ignore[arg-type]
    assert result.exit_code == 3, result.output
    assert "database unreachable at postgresql+psycopg://pm@127.0.0.1:" in result.output
    assert "hunter2" not in result.output
    assert result.output.count("retry") == 3


def test_pm_entry_point_exit_code_3() -> None:
    url = f"postgresql+psycopg://pm:hunter2@127.0.0.1:{free_port()}/pm"
    env = {**os.environ, "PM_DB_CONNECT_BACKOFF": "0.01", "PM_DB_CONNECT_RETRIES": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from pm_cli.main import cli; cli()",
            "migrate",
            "--database-url",
            url,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr
    assert "database unreachable at" in proc.stderr and "hunter2" not in proc.stderr


# --------------------------------------------------------------------------- redaction, retry


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://pm:hunter2@db:5432/pm", "postgresql+psycopg://pm@db:5432/pm"),
        (
            "postgresql+psycopg://pm:p%40ss@db/pm?sslmode=require",
            "postgresql+psycopg://pm@db/pm?sslmode=require",
        ),
        (
            "postgresql+psycopg://db/pm?user=pm&password=hunter2",
            "postgresql+psycopg://db/pm?user=pm",
        ),
        ("sqlite:///./pm.sqlite3", "sqlite:///./pm.sqlite3"),
    ],
)
def test_database_urls_are_redacted(url: str, shown: str) -> None:
    from pm_adapters.sql.redact import redact_text, redact_url

    assert redact_url(url) == shown
    assert "hunter2" not in redact_text(f"failed for {url}", url)
    assert "hunter2" not in redact_url(sa.engine.make_url(url))


def test_full_jitter_backoff_and_budget() -> None:
    from pm_core.errors import StaleVersionError

    policy = RetryPolicy(attempts=4, base_s=0.025, cap_s=0.5, budget_s=2.0)
    assert [policy.delay(n, lambda: 1.0) for n in range(6)] == [0.025, 0.05, 0.1, 0.2, 0.4, 0.5]
    assert policy.delay(3, lambda: 0.0) == 0.0

    class Always:
        calls = 0

        def begin(self, kind: str = "signal", *, read_only: bool = False) -> Always:
            self.calls += 1
            return self

        def __enter__(self) -> Always:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    def conflict(uow: object) -> None:
        raise StaleVersionError("someone else committed")

    slept: list[float] = []
    factory = Always()
    with pytest.raises(StaleVersionError):
        run_transaction(factory, conflict, policy=policy, sleep=slept.append, rng=lambda: 1.0)
    assert factory.calls == 4 and slept == [0.025, 0.05, 0.1]


def test_session_timeouts_apply_and_translate(pg_server: PgServer) -> None:
    """PostgreSQL sessions get the service.md 5 timeouts; hitting one is DatabaseUnavailable."""
    url = pg_server.create_database("timeouts")
    engine = create_engine(url, DbSettings(statement_timeout_ms=50, lock_timeout_ms=2000))
    metadata.create_all(engine)
    factory = SqlUnitOfWorkFactory(engine)
    try:
        with factory.begin() as uow:
            shown = {
                name: uow.conn.execute(sa.text(f"SHOW {name}")).scalar()
                for name in ("lock_timeout", "idle_in_transaction_session_timeout", "TimeZone")
            }
            assert shown == {
                "lock_timeout": "2s",
                "idle_in_transaction_session_timeout": "30s",
                "TimeZone": "UTC",
            }
            with pytest.raises(DatabaseUnavailable):
                uow.x(sa.text("SELECT pg_sleep(1)"))
    finally:
        engine.dispose()


def _kill_pooled_backends(pg_server: PgServer, url: str) -> int:
    """Terminate every other session of this database: the pool's connections die unseen."""
    database = sa.engine.make_url(url).database
    with sa.create_engine(url).connect() as admin:
        killed = admin.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = :db AND pid <> pg_backend_pid()"
            ),
            {"db": database},
        ).scalar_one()
    return int(killed)


@pytest.mark.parametrize("ping_idle_s", [0.0, 3600.0])
def test_dead_pooled_connection_costs_no_signal(pg_server: PgServer, ping_idle_s: float) -> None:
    """A pooled connection killed server-side: pinged away when idle, else one retry."""
    url = pg_server.create_database(f"ping{int(ping_idle_s)}")
    engine = create_engine(url, DbSettings(ping_idle_s=ping_idle_s))
    metadata.create_all(engine)
    factory = SqlUnitOfWorkFactory(engine)
    factory.initialise(1000.0)
    try:
        run_transaction(factory, _t1, policy=RetryPolicy(2, 0.001, 0.001, 5))  # pool holds one
        assert _kill_pooled_backends(pg_server, url) >= 1
        retried: list[BaseException] = []
        signal_id = run_transaction(
            factory,
            lambda uow: uow.signals.claim(SIG, "d" * 64, T0, "inst-a").id,
            policy=RetryPolicy(3, 0.001, 0.001, 5),
            on_retry=retried.append,
        )
        with factory.begin(read_only=True) as uow:
            assert uow.signals.get(signal_id) is not None
        if ping_idle_s == 0.0:
            assert retried == []  # the checkout ping found the dead connection first
        else:
            assert [type(e) for e in retried] == [DatabaseUnavailable]
    finally:
        factory.close()


def _server_pids(server: PgServer) -> list[int]:
    """The postmaster and every backend of ``server``."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    children = subprocess.run(
        ["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False
    ).stdout.split()
    return [postmaster, *map(int, children)]


def test_ready_answers_in_its_database_budget_while_postgres_hangs(pg_server: PgServer) -> None:
    """A database that stops answering (not refusing) makes /ready 503 within
    PM_READY_DB_TIMEOUT_MS instead of hanging with it (service.md 10)."""
    import threading

    from pm_adapters.bootstrap import build, load_settings
    from tests.kit.serve import prepare_postgres

    url = pg_server.create_database("ready")
    prepare_postgres(url)
    app = build(load_settings({"PM_DATABASE_URL": url, "PM_READY_DB_TIMEOUT_MS": "300"}))
    app.start()
    stopped: list[int] = []
    try:
        ok, body = app.ready()
        assert ok, body
        stopped = _server_pids(pg_server)
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)  # connections stay open, nothing answers
        answers: list[tuple[bool, Mapping[str, Any]]] = []
        asking = threading.Thread(target=lambda: answers.append(app.ready()), daemon=True)
        asking.start()
        asking.join(timeout=20)  # far beyond the budget: it hangs for ever without one
        assert answers, "/ready hung with the database"
        ok, body = answers[0]
        assert not ok
        assert body["reasons"] == ["database_unavailable"]
        assert body["checks"]["database"]["status"] == "down"
        assert "PM_READY_DB_TIMEOUT_MS=300" in body["checks"]["database"]["error"]
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    try:
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=20)
        ok = False
        while not ok and dt.datetime.now(dt.UTC) < deadline:
            ok, _ = app.ready()
        assert ok  # the hung probe finished; the next one answers
    finally:
        app.close()
