"""pm commands that run or inspect the service: serve, status, recover, intents resolve.

Exit codes (service.md 8, 13): 3 database unreachable, 4 schema behind or unknown,
5 bad configuration, 6 not initialised (or fatal recovery), 10 recovery warnings.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from pm_adapters.bootstrap import App, Settings, build
from pm_adapters.bootstrap.settings import is_loopback, redacted, unknown_environment
from pm_cli.settings import settings_or_exit
from pm_core.codes import render
from pm_core.errors import ClaimLost, DatabaseUnavailable, NotInitialised, SchemaMismatch
from pm_core.ports import Ok
from pm_core.recovery import recover
from pm_core.service.reconciliation import acknowledge

EXIT_UNREACHABLE = 3
EXIT_SCHEMA = 4
EXIT_CONFIG = 5
EXIT_NOT_INITIALISED = 6
EXIT_WARNINGS = 10
EXIT_SECOND_SIGNAL = 130

log = logging.getLogger("pm.cli")


@contextmanager
def _built(settings: Settings) -> Iterator[App]:
    """Build the app or exit with the code service.md gives the failure."""
    try:
        app = build(settings)
    except DatabaseUnavailable as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_UNREACHABLE)
    except SchemaMismatch as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_SCHEMA)
    except NotInitialised as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_NOT_INITIALISED)
    try:
        yield app
    finally:
        app.close()


def _common(func: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--config",
                "config",
                type=click.Path(path_type=Path),
                default=None,
                help="TOML file (default: PM_CONFIG or ./pm.toml).",
            ),
            click.option("--database-url", default=None, help="PM_DATABASE_URL."),
            click.option("--redis-url", default=None, help="PM_REDIS_URL."),
        ]
    ):
        func = option(func)
    return func


class _DrainingServer:
    """uvicorn Server whose first SIGTERM/SIGINT drains pm before stopping HTTP."""

    def __init__(self, app: App, config: Any) -> None:
        import uvicorn

        outer = self

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:
                outer.on_signal(self)

        self.app = app
        self.server = Server(config)
        self._signals = 0
        self._lock = threading.Lock()

    def on_signal(self, server: Any) -> None:
        with self._lock:
            self._signals += 1
            count = self._signals
        if count > 1:
            os._exit(EXIT_SECOND_SIGNAL)  # a second signal exits at once (service.md 9)

        def drain() -> None:
            try:
                self.app.drain()
            finally:
                server.should_exit = True

        threading.Thread(target=drain, name="pm-drain", daemon=True).start()

    def run(self) -> None:
        self.server.run()


@click.command()
@_common
@click.option("--host", default=None, help="Bind address (PM_HTTP_HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (PM_HTTP_PORT, default 8080).")
@click.option("--broker", type=click.Choice(["paper", "openalgo"]), default=None, help="PM_BROKER.")
def serve(
    config: Path | None,
    database_url: str | None,
    redis_url: str | None,
    host: str | None,
    port: int | None,
    broker: str | None,
) -> None:
    """Run the webhook service (no configuration: SQLite ./pm.sqlite3, paper broker)."""
    import uvicorn

    from pm_adapters.logging import configure_logging
    from pm_http.app import create_app

    settings = settings_or_exit(
        {
            "database_url": database_url,
            "redis_url": redis_url,
            "http_host": host,
            "http_port": port,
            "broker": broker,
        },
        config,
    )
    configure_logging(
        settings.log_level,
        settings.log_format,
        secrets=[s.reveal() for s in settings.webhook_secret],
    )
    for name in unknown_environment(os.environ):
        log.warning("unknown environment variable ignored", extra={"variable": name})
    if not settings.webhook_secret:
        if not is_loopback(settings.http_host):
            click.echo("refusing a non-loopback bind without PM_WEBHOOK_SECRET", err=True)
            sys.exit(EXIT_CONFIG)
        log.warning("WEBHOOK AUTHENTICATION IS OFF: no PM_WEBHOOK_SECRET; serving on loopback only")
    tune_interpreter(settings)
    with _built(settings) as app:
        app.start()
        recovery = app.recovery
        if recovery is not None and recovery.warnings and settings.recovery_strict:
            click.echo("recovery warnings with PM_RECOVERY_STRICT: refusing to serve", err=True)
            sys.exit(EXIT_NOT_INITIALISED)
        click.echo(
            f"pm {app.version} serving on http://{settings.http_host}:{settings.http_port} "
            f"(instance {app.instance_id}, database {app.dialect}, broker {app.broker_name}, "
            f"mode {app.mode()})",
            err=True,
        )
        asgi = create_app(app, settings)
        server_config = uvicorn.Config(
            asgi,
            host=settings.http_host,
            port=settings.http_port,
            log_config=None,
            access_log=False,
            lifespan="off",
            # pm drained before uvicorn stops; what is left are handlers waiting on their
            # response deadline, which then answer 202. Cutting them off earlier makes uvicorn
            # answer a plain-text 500 (webhook.md 1.2: never 500 once T1 committed).
            timeout_graceful_shutdown=math.ceil(settings.response_deadline_ms / 1000) + 1,
        )
        _DrainingServer(app, server_config).run()
        app.drain()


def tune_interpreter(settings: Settings) -> None:
    """Process-wide interpreter settings for ``pm serve``."""
    # Threads waiting for the GIL get it after at most this long (interpreter default 5 ms):
    # the worker holding the portfolio lock resumes sooner after each database answer.
    sys.setswitchinterval(settings.thread_switch_ms / 1000)


@click.command()
@_common
@click.option("--json", "as_json", is_flag=True, help="Print the status document as JSON.")
def status(
    config: Path | None, database_url: str | None, redis_url: str | None, as_json: bool
) -> None:
    """Show equity, risk, statistics, peel-off, queued signals and blocked instruments."""
    settings = settings_or_exit({"database_url": database_url, "redis_url": redis_url}, config)
    with _built(settings) as app:
        doc = dict(app.status())
        doc["settings"] = redacted(settings)
        if as_json:
            click.echo(json.dumps(doc, indent=2, default=str))
            return
        p = doc["portfolio"]
        click.echo(
            f"database        {app.dialect}    broker {app.broker_name}    mode {doc['mode']}"
        )
        click.echo(f"closed equity   {p['closed_equity']:,.2f}")
        click.echo(f"sizing equity   {p['equity']:,.2f}")
        click.echo(f"open positions  {p['open_positions']}")
        click.echo(
            f"risk / vol      {p['total_risk_percent']:.2f}% / {p['total_vol_percent']:.2f}%"
        )
        click.echo(f"margin used     {p['margin_used']:,.0f}")
        for row in doc["peel_off"]:
            if row["lots_to_peel"]:
                click.echo(
                    f"peel-off        {row['instrument']}: {row['lots_to_peel']} ({row['message']})"
                )
        if doc["queued_signals"]:
            click.echo(f"queued signals  {doc['queued_signals']}")
        for instrument, why in doc["blocked_instruments"].items():
            click.echo(f"blocked         {instrument} ({why})")
        click.echo("statistics")
        for name, value in sorted(doc["statistics"].items()):
            if value:
                click.echo(f"  {name:<22} {value:g}")


@click.command()
@_common
@click.option("--dry-run", is_flag=True, help="Read only: report what recovery would do.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--no-broker", is_flag=True, help="Do not call the broker (takeovers only).")
def recover_command(
    config: Path | None,
    database_url: str | None,
    redis_url: str | None,
    dry_run: bool,
    as_json: bool,
    no_broker: bool,
) -> None:
    """Run crash recovery without serving: exit 0 clean, 10 warnings, 6 fatal."""
    settings = settings_or_exit({"database_url": database_url, "redis_url": redis_url}, config)
    with _built(settings) as app:
        if no_broker and not dry_run:
            click.echo("--no-broker only reports (implies --dry-run)", err=True)
            dry_run = True
        report = recover(app.service, app.ports.registry.is_live, dry_run=dry_run)
        doc = report.to_json()
        if as_json:
            click.echo(json.dumps(doc, indent=2))
        else:
            click.echo(f"warnings: {len(doc['warnings'])}")
            for w in doc["warnings"]:
                click.echo(f"  {w['code']}: {w['subject']} ({w['detail']})")
            click.echo(f"takeovers: {doc['takeovers']}")
            click.echo(f"finished: {doc['finished']}")
            click.echo(f"left pending: {doc['left_pending']}")
            click.echo(f"unresolved intents: {doc['intents_unresolved']}")
            click.echo(f"released locks: {doc['released_locks']}")
        if report.warnings:
            sys.exit(EXIT_WARNINGS)


recover_command.name = "recover"


@click.command()
@_common
@click.option("--json", "as_json", is_flag=True, help="Print the diff as JSON.")
@click.option("--ack", "ack", default=None, metavar="INSTRUMENT", help="Lift a block.")
@click.option("--dry-run", is_flag=True, help="Diff only; set or lift no block.")
def reconcile_command(
    config: Path | None,
    database_url: str | None,
    redis_url: str | None,
    as_json: bool,
    ack: str | None,
    dry_run: bool,
) -> None:
    """Compare positions with the broker's book; fail-closed blocks differing instruments."""
    settings = settings_or_exit({"database_url": database_url, "redis_url": redis_url}, config)
    with _built(settings) as app:
        if ack:
            lifted = acknowledge(app.ports, ack.strip().upper())
            click.echo(f"{ack}: {'block lifted' if lifted else 'was not blocked'}")
            return
        if app.broker_name == "paper":
            # Each process has its own paper book: a diff against it would block everything.
            click.echo("the paper broker keeps no book between processes: nothing to reconcile")
            return
        run = app.reconcile(apply_blocks=not dry_run)
        doc = run.to_json()
        if as_json:
            click.echo(json.dumps(doc, indent=2))
        else:
            if run.error:
                click.echo(f"broker unavailable: {run.error}", err=True)
            for kind in ("matched", "orphaned", "missing", "mismatched", "ignored"):
                for row in doc[kind]:
                    click.echo(f"{kind:<10} {row}")
            click.echo(
                f"clean: {doc['clean']}  blocked: {doc['blocked']}  unblocked: {doc['unblocked']}"
            )
        if run.report is None:
            sys.exit(EXIT_UNREACHABLE)
        if not run.report.clean:
            sys.exit(1)


reconcile_command.name = "reconcile"


@click.command()
@_common
@click.option("--json", "as_json", is_flag=True, help="Print candidates and plans as JSON.")
def rollover(
    config: Path | None, database_url: str | None, redis_url: str | None, as_json: bool
) -> None:
    """List positions due for a roll and stuck rolls, each with its dry-run plan.

    Plans use the broker's quotes for the strike reference; nothing is sent or changed.
    """
    from pm_core.calendar import rollover_candidates
    from pm_core.rollover import RollPlan, plan_roll, reference_quotes_for

    settings = settings_or_exit({"database_url": database_url, "redis_url": redis_url}, config)
    with _built(settings) as app:
        with app.ports.uow.begin("signal", read_only=True) as unit:
            snapshot = unit.portfolio.read()
        now = app.now()
        rows: list[dict[str, Any]] = []
        for candidate in rollover_candidates(snapshot.positions, app.config, now):
            position = snapshot.position_by_id(candidate.position_id)
            if position is None:
                continue
            inst = app.config.instruments[position.instrument]
            quotes: dict[tuple[str, str], Any] = {}
            if position.expiry is not None:
                for exchange, symbol in reference_quotes_for(
                    inst, position.expiry, candidate.next_expiry
                ):
                    got = app.ports.broker.quote(symbol, exchange)
                    if isinstance(got, Ok):
                        quotes[(exchange, symbol)] = got.value
            plan = plan_roll(position, app.config, quotes)
            row: dict[str, Any] = {
                "key": position.key,
                "expiry": position.expiry.isoformat() if position.expiry else None,
                "days_to_expiry": candidate.days_to_expiry,
                "reason": render(candidate.reason),
                "resume": candidate.resume,
                "manual_only": candidate.manual_only,
                "rollover_status": position.rollover_status,
            }
            if isinstance(plan, RollPlan):
                row["plan"] = {
                    "new_expiry": plan.new_expiry.isoformat(),
                    "new_strike": plan.new_strike,
                    "steps": [
                        {
                            "step": st.step,
                            "name": st.name,
                            "symbol": st.symbol,
                            "action": st.action,
                            "quantity": st.quantity,
                            "p0": str(st.p0) if st.p0 is not None else None,
                        }
                        for st in plan.remaining
                    ],
                }
            else:
                row["plan_error"] = render(plan)
            rows.append(row)
        if as_json:
            click.echo(json.dumps({"as_of": now.isoformat(), "candidates": rows}, indent=2))
            return
        if not rows:
            click.echo("no position is due for a roll")
        for row in rows:
            click.echo(f"{row['key']}: {row['reason']} (status {row['rollover_status']})")
            for st in row.get("plan", {}).get("steps", []):
                click.echo(
                    f"  step {st['step']} {st['name']}: {st['action']} {st['quantity']} "
                    f"{st['symbol']} P0 {st['p0']}"
                )
            if "plan_error" in row:
                click.echo(f"  no plan: {row['plan_error']}")


@click.group()
def intents() -> None:
    """Inspect and resolve order intents."""


@intents.command("list")
@_common
def intents_list(config: Path | None, database_url: str | None, redis_url: str | None) -> None:
    """List every unresolved intent."""
    settings = settings_or_exit({"database_url": database_url, "redis_url": redis_url}, config)
    with _built(settings) as app, app.ports.uow.begin("signal", read_only=True) as unit:
        for s in unit.intents.unresolved():
            i = s.intent
            click.echo(
                f"{i.client_order_id}  {s.state:<10} {i.symbol} {i.action} {i.quantity}"
                f"  order={s.broker_order_id or '-'}  {s.last_error or ''}"
            )


@intents.command("resolve")
@_common
@click.argument("client_order_id")
@click.option("--orderid", default=None, help="The broker order this intent became.")
@click.option("--not-placed", is_flag=True, help="The broker never received this order.")
def intents_resolve(
    config: Path | None,
    database_url: str | None,
    redis_url: str | None,
    client_order_id: str,
    orderid: str | None,
    not_placed: bool,
) -> None:
    """Resolve an ambiguous or unknown intent by operator decision."""
    if bool(orderid) == not_placed:
        raise click.UsageError("give exactly one of --orderid ID or --not-placed")
    settings = settings_or_exit({"database_url": database_url, "redis_url": redis_url}, config)
    with _built(settings) as app:
        with app.ports.uow.begin("signal") as unit:
            match = [
                s for s in unit.intents.unresolved() if s.intent.client_order_id == client_order_id
            ]
            if not match:
                click.echo(f"no unresolved intent {client_order_id}", err=True)
                sys.exit(1)
            stored = match[0]
            if orderid:
                ok = unit.intents.transition(
                    stored.id, stored.state, "accepted", {"broker_order_id": orderid}
                )
            else:
                ok = unit.intents.transition(
                    stored.id, stored.state, "not_found", {"last_error": "operator: not placed"}
                )
            if not ok:
                click.echo("the intent changed meanwhile; run the command again", err=True)
                sys.exit(1)
            unit.commit()
        click.echo(f"{client_order_id}: {'bound to ' + orderid if orderid else 'not placed'}")
        if stored.signal_id is None:
            return
        try:
            answer = app.service.resolve_signal(stored.signal_id)
        except ClaimLost:
            # A running instance's sweep took the signal over from this short-lived command;
            # the decision above is committed and that instance settles the signal.
            click.echo(f"signal {stored.signal_id} is being settled by a running instance")
            return
        if answer is None:
            click.echo(f"signal {stored.signal_id} is not pending: nothing to settle")
        elif answer.terminal:
            click.echo(f"signal {stored.signal_id} settled: {answer.result.body.get('status')}")
        else:
            click.echo(f"signal {stored.signal_id} still waits on another unresolved intent")


COMMANDS: list[click.Command] = [
    serve,
    status,
    recover_command,
    reconcile_command,
    rollover,
    intents,
]
