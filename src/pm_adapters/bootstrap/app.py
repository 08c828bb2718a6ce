"""App: a built pm instance, the HostedApp the hosts drive (start, serve, drain, close)."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, cast

from pm_adapters.bootstrap.settings import Settings
from pm_core.calendar import instrument_for_symbol, is_session_open
from pm_core.errors import PmError
from pm_core.metrics import equity_view, percent_of, risk_totals
from pm_core.model import ReceivedSignal
from pm_core.ports import InstanceInfo, Ok, Ports
from pm_core.recovery import RecoveryReport, recover
from pm_core.service.api import Observer, ServiceUnavailable, SignalResult
from pm_core.service.jobs import (
    IntervalJob,
    LeaderScheduler,
    LeaderTimings,
    StaleInstanceRegistry,
    clear_orphaned_locks,
    crash_stale_instances,
)
from pm_core.service.limits import ServiceLimits
from pm_core.service.pipeline import SignalService
from pm_core.service.reconciliation import ReconciliationRun, reconcile
from pm_core.sizing import peel_off

log = logging.getLogger("pm.app")

_UNAVAILABLE = {
    "starting": ("recovering", 5),
    "recovering": ("recovering", 5),
    "draining": ("draining", 5),
    "stopped": ("draining", 5),
}


class App:
    """One pm instance: the service, its background threads and its health."""

    def __init__(
        self,
        *,
        settings: Settings,
        ports: Ports,
        limits: ServiceLimits,
        instance_id: str,
        version: str,
        broker_name: str,
        dialect: str,
        mode: Callable[[], str],
        engine: Any = None,
        coordination: Any = None,
        pid: int | None = None,
    ) -> None:
        self.settings = settings
        self.config = settings.domain
        self.ports = ports
        self.limits = limits
        self.instance_id = instance_id
        self.version = version
        self.broker_name = broker_name
        self.dialect = dialect
        self._mode = mode
        self.engine = engine
        self.coordination = coordination
        self.pid = pid or os.getpid()
        self.service = SignalService(ports, self.config, limits)
        self._state = "starting"
        # Webhooks are taken while active, and during PM_DRAIN_GRACE_S after draining began.
        self._accepting = False
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.scheduler: LeaderScheduler | None = None
        # (leader epoch, trading statistics) as the export job last read them (service.md 12).
        self._exported: tuple[int, Mapping[str, float]] | None = None
        self.recovery: RecoveryReport | None = None
        self._closed = False
        # /ready's database probe runs here, so a database that hangs costs /ready no more
        # than PM_READY_DB_TIMEOUT_MS; a probe still hanging is waited on, not repeated. Its
        # thread is a daemon (not a pool worker): a probe stuck on a hung database must not
        # keep the process from exiting.
        self._probe: Future[dict[str, Any]] | None = None
        self._probe_lock = threading.Lock()

    # ------------------------------------------------------------------ HostedApp

    @property
    def state(self) -> str:
        """starting | recovering | active | draining | stopped."""
        return self._state

    @property
    def accepting(self) -> bool:
        """Whether /webhook takes signals (active, or within the drain grace)."""
        return self._accepting

    def set_observer(self, observer: Observer) -> None:
        """Report service events to ``observer``."""
        self.service.set_observer(observer)
        coordinator = getattr(self.coordination, "coordinator", None)
        if coordinator is not None:
            coordinator.on_mode_change(lambda old, new: observer.redis_mode_change())

    def broker_observed(self, endpoint: str, outcome: str, seconds: float) -> None:
        """The OpenAlgo client reports each HTTP attempt here (metrics)."""
        observer = self.service.observer
        observer.broker_request(endpoint, seconds)
        if outcome != "ok":
            observer.broker_error(endpoint, outcome)

    def submit(self, received: ReceivedSignal, request_id: str) -> Future[SignalResult]:
        """Queue a validated signal; ServiceUnavailable unless active (or in the drain grace)."""
        if not self._accepting:
            reason, retry = _UNAVAILABLE.get(self._state, ("recovering", 5))
            raise ServiceUnavailable(reason, retry)
        return self.service.submit(received, request_id)

    def handle(self, received: ReceivedSignal, request_id: str) -> SignalResult:
        """Process a signal synchronously (CLI, tests)."""
        return self.service.handle(received, request_id)

    def in_progress(self, received: ReceivedSignal, request_id: str) -> SignalResult:
        """The 202 answer past the response deadline."""
        return self.service.in_progress(received, request_id)

    def count_invalid(self) -> None:
        """An invalid request (buffered statistics)."""
        self.service.count("signals_invalid")

    def health(self) -> Mapping[str, Any]:
        """Liveness only."""
        return {
            "status": "alive",
            "instance_id": self.instance_id,
            "version": self.version,
            "uptime_s": round(time.monotonic() - self._started, 1),
            "state": self._state,
        }

    def _database_check(self) -> dict[str, Any]:
        """The database must answer within PM_READY_DB_TIMEOUT_MS (service.md 10)."""
        timeout_ms = self.settings.ready_db_timeout_ms
        with self._probe_lock:
            probe = self._probe
            if probe is None or probe.done():
                probe = self._probe = Future()
                threading.Thread(
                    target=self._probe_database, args=(probe,), name="pm-ready", daemon=True
                ).start()
        try:
            return probe.result(timeout_ms / 1000)
        except FutureTimeout:
            return {
                "status": "down",
                "dialect": self.dialect,
                "error": f"no answer within PM_READY_DB_TIMEOUT_MS={timeout_ms}",
            }

    def _probe_database(self, probe: Future[dict[str, Any]]) -> None:
        started = time.perf_counter()
        try:
            with self.ports.uow.begin("signal", read_only=True) as unit:
                unit.statistics.read()
        except Exception as exc:  # PmError, or any driver fault: a probe reports, never raises
            probe.set_result(
                {"status": "down", "dialect": self.dialect, "error": type(exc).__name__}
            )
            return
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        probe.set_result({"status": "ok", "dialect": self.dialect, "latency_ms": latency_ms})

    def _schema_check(self) -> dict[str, Any]:
        if self.engine is None:
            return {"status": "ok", "expected": None, "found": None}
        from pm_adapters.sql import migrations

        head = migrations.head_revision()
        try:
            found = migrations.current_revision(self.engine)
        except Exception as exc:  # any driver error means: cannot tell
            return {"status": "down", "expected": head, "found": None, "error": type(exc).__name__}
        return {"status": "ok" if found == head else "behind", "expected": head, "found": found}

    def mode(self) -> str:
        """Coordination mode: normal or database-only."""
        try:
            return self._mode()
        except Exception:  # a broken coordinator must not break /ready
            return "database-only"

    def ready(self) -> tuple[bool, Mapping[str, Any]]:
        """Readiness per service.md 10: database, schema, recovery done, not draining."""
        database = self._database_check()
        schema = self._schema_check() if database["status"] == "ok" else {"status": "unknown"}
        mode = self.mode()
        lease = self.scheduler.lease if self.scheduler is not None else None
        reasons: list[str] = []
        if database["status"] != "ok":
            reasons.append("database_unavailable")
        if schema["status"] not in ("ok", "unknown"):
            reasons.append("schema_mismatch")
        if self._state in ("starting", "recovering"):
            reasons.append("recovering")
        if self._state in ("draining", "stopped"):
            reasons.append("draining")
        redis_status = (
            "disabled" if not self.settings.redis_url else ("ok" if mode == "normal" else "down")
        )
        warnings = len(self.recovery.warnings) if self.recovery is not None else 0
        # Only asked of a database that answers: a hanging one would hang /ready here.
        blocked, barriered = (
            self._blocked_and_barriered() if database["status"] == "ok" else ([], [])
        )
        body: dict[str, Any] = {
            "status": "ready" if not reasons else "not_ready",
            "instance_id": self.instance_id,
            "mode": mode,
            "leader": lease is not None,
            "epoch": lease.epoch if lease is not None else None,
            "checks": {
                "database": database,
                "schema": schema,
                "redis": {"status": redis_status},
                "broker": self._broker_check(),
                "recovery": {
                    "status": "done" if self.recovery is not None else "pending",
                    "warnings": warnings,
                },
            },
            "draining": self._state in ("draining", "stopped"),
            "blocked_instruments": blocked,
            "barriered_instruments": barriered,
            "reasons": reasons,
        }
        return not reasons, body

    def _broker_check(self) -> dict[str, Any]:
        guard = self.service.mode_guard
        if guard is None:
            return {"status": "ok", "name": self.broker_name}
        return {"name": self.broker_name, **guard.status()}

    def _blocked_and_barriered(self) -> tuple[list[str], list[str]]:
        blocked: list[str] = []
        barriered: list[str] = []
        try:
            with self.ports.uow.begin("signal", read_only=True) as unit:
                for instrument in self.config.instruments:
                    if unit.blocks.get(instrument) is not None:
                        blocked.append(instrument)
                    if unit.intents.open_for(instrument):
                        barriered.append(instrument)
        except PmError:
            pass
        return blocked, barriered

    def status(self) -> Mapping[str, Any]:
        """The /status view: portfolio, statistics, peel-off, queues, blocks."""
        with self.ports.uow.begin("signal", read_only=True) as unit:
            snapshot = unit.portfolio.read()
            statistics = dict(unit.statistics.read())
            queued = [s.id for s in unit.signals.in_flight() if s.status == "queued"]
            blocked = {
                i: b.reason
                for i in self.config.instruments
                if (b := unit.blocks.get(i)) is not None
            }
        equity = equity_view(snapshot.closed_equity, snapshot.positions, self.config.portfolio)
        totals = risk_totals(snapshot.positions, self.config)
        peel = []
        for instrument, inst in self.config.instruments.items():
            risk, vol, lots = totals.by_instrument.get(instrument, (0.0, 0.0, 0))
            result = peel_off(risk, vol, equity.sizing, lots, inst)
            peel.append(
                {
                    "instrument": instrument,
                    "lots_to_peel": result.lots_to_peel,
                    "message": result.message,
                }
            )
        lease = self.scheduler.lease if self.scheduler is not None else None
        return {
            "instance_id": self.instance_id,
            "mode": self.mode(),
            "leader": lease is not None,
            "epoch": lease.epoch if lease is not None else None,
            "broker": self.broker_name,
            "portfolio": {
                "closed_equity": snapshot.closed_equity,
                "equity": equity.sizing,
                "open_equity": equity.open,
                "total_risk_percent": percent_of(totals.risk, equity.sizing),
                "total_vol_percent": percent_of(totals.vol, equity.sizing),
                "margin_used": totals.margin_used,
                "open_positions": len(snapshot.positions),
            },
            "statistics": statistics,
            "peel_off": peel,
            "queued_signals": queued,
            "blocked_instruments": blocked,
        }

    def positions(self, status: str | None, limit: int) -> Mapping[str, Any]:
        """The /positions view of live positions (closed ones are in the trade log)."""
        with self.ports.uow.begin("signal", read_only=True) as unit:
            snapshot = unit.portfolio.read()
        rows = []
        for p in snapshot.positions:
            if status is not None and p.status != status:
                continue
            legs = [s for s in (p.ce_symbol, p.pe_symbol, p.futures_symbol) if s]
            rows.append(
                {
                    "position_id": p.id,
                    "key": p.key,
                    "status": p.status,
                    "is_base_position": p.is_base_position,
                    "lots": p.lots,
                    "quantity": p.quantity,
                    "entry_price": p.entry_price,
                    "current_stop": p.current_stop,
                    "unrealized_pnl": p.unrealized_pnl,
                    "legs": legs,
                }
            )
        return {
            "portfolio_version": snapshot.version,
            "as_of": self.ports.clock.now().isoformat(),
            "positions": rows[: max(0, limit)],
        }

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Register, recover orphans, then serve; background threads start here."""
        registry = self.ports.registry
        registry.register(
            InstanceInfo(
                instance_id=self.instance_id,
                instance_name=self.settings.instance_name,
                hostname=socket.gethostname(),
                port=self.settings.http_port,
                pid=self.pid,
                version=self.version,
            )
        )
        self._state = "recovering"
        self._spawn("pm-heartbeat", self._heartbeat_loop)
        if self.service.mode_guard is not None:
            mode = self.service.mode_guard.refresh()
            log.info(
                "broker mode", extra={"mode": mode, "expected": self.service.mode_guard.expected}
            )
        self.recovery = recover(self.service, registry.is_live)
        if self.settings.reconcile_on_startup and self.broker_name == "openalgo":
            self.reconcile()
        self._state = "active"
        self._accepting = True
        self._beat()
        self._spawn("pm-stats", self._stats_loop)
        self._start_scheduler()
        log.info(
            "instance active",
            extra={
                "instance_id": self.instance_id,
                "broker": self.broker_name,
                "database": self.dialect,
                "mode": self.mode(),
            },
        )

    def _start_scheduler(self) -> None:
        s = self.settings
        retention = self._retention_job()
        self.scheduler = LeaderScheduler(
            self.ports.leader,
            self.ports.clock,
            retention=retention,
            retention_at=s.retention_at,
            tz=self.config.portfolio.tz,
            timings=LeaderTimings(s.leader_lease_ms, s.leader_renew_ms, s.election_tick_ms),
        )
        self.scheduler.add(IntervalJob("orphan_sweep", s.sweep_interval_s, self._sweep))
        self.scheduler.add(IntervalJob("lock_cleanup", s.lock_cleanup_s, self._lock_cleanup))
        self.scheduler.add(
            IntervalJob("statistics_export", s.stats_export_s, self._export_statistics)
        )
        if self.broker_name == "openalgo":
            self.scheduler.add(
                IntervalJob("reconciliation", s.reconcile_interval_s, self._reconcile_job)
            )
        if self.coordination is not None and getattr(self.coordination, "coordinator", None):
            with contextlib.suppress(Exception):
                self.coordination.coordinator.listen_released(lambda _id: self._wake())
        self.scheduler.start()

    def _wake(self) -> None:
        if self.scheduler is not None:
            self.scheduler.wake()

    def _retention_job(self) -> Callable[[int], None]:
        engine = self.engine
        if engine is None:
            return lambda epoch: None
        from pm_adapters.sql.retention import RetentionPolicy, run_retention

        policy = RetentionPolicy(
            signal_days=self.config.portfolio.duplicate_retention_days,
            batch=self.settings.retention_batch,
            archive_dir=self.settings.retention_archive_dir,
        )
        return lambda epoch: log.info(
            "retention", extra={"report": repr(run_retention(engine, epoch, policy))}
        )

    def _export_statistics(self, epoch: int) -> None:
        with self.ports.uow.begin("signal", read_only=True) as unit:
            self._exported = (epoch, dict(unit.statistics.read()))

    def exported_statistics(self) -> Mapping[str, float] | None:
        """The cluster statistics of the last ``PM_STATS_EXPORT_S`` export of this leadership
        (the ``pm_stat_*`` gauges come from the leader only); None while not leading."""
        lease = self.scheduler.lease if self.scheduler is not None else None
        exported = self._exported
        if lease is None or exported is None or exported[0] != lease.epoch:
            return None  # an export of an earlier term is not this leader's
        return exported[1]

    def _sweep(self, epoch: int) -> None:
        del epoch  # takeovers are fenced by claim epochs, not the leader epoch
        registry = self.ports.registry
        if hasattr(registry, "stale_instances"):  # the memory registry has no staleness
            crash_stale_instances(cast(StaleInstanceRegistry, registry))
        report = recover(self.service, registry.is_live, release_locks=False, check=False)
        if report.takeovers:
            log.info("sweep took over signals", extra={"signals": list(report.takeovers)})
            if hasattr(registry, "stale_instances"):
                # Their owner went stale between the check above and the takeover: it is
                # marked crashed now, not a sweep later.
                crash_stale_instances(cast(StaleInstanceRegistry, registry))
        # Queues whose barrier cleared without anyone running them (service.md 2.6).
        self.service.run_queued()

    def reconcile(self, *, apply_blocks: bool = True) -> ReconciliationRun:
        """Diff positions against the broker; fail-closed blocks (never raises on outages)."""
        try:
            run = reconcile(self.ports, self.config, apply_blocks=apply_blocks)
        except PmError as exc:
            return ReconciliationRun(None, error=str(exc))
        report = run.report
        if report is not None:
            observer = self.service.observer
            counts: dict[tuple[str, str], int] = {}
            for kind, rows in (
                ("orphaned", report.orphaned),
                ("missing", report.missing),
                ("mismatched", report.mismatched),
            ):
                for row in rows:
                    inst = instrument_for_symbol(row.symbol, self.config, row.exchange)
                    key = (inst.id if inst else "unknown", kind)
                    counts[key] = counts.get(key, 0) + 1
            for instrument in self.config.instruments:
                for kind in ("orphaned", "missing", "mismatched"):
                    observer.reconciliation_differences(
                        instrument, kind, counts.get((instrument, kind), 0)
                    )
        if run.report is not None and not run.report.clean:
            log.warning(
                "reconciliation differences",
                extra={"instruments": list(run.report.instruments_with_differences)},
            )
        return run

    def _reconcile_job(self, epoch: int) -> None:
        del epoch  # writes go through the portfolio lock; blocks are idempotent
        now = self.ports.clock.now()
        if any(is_session_open(i, now, self.config) for i in self.config.instruments.values()):
            self.reconcile()

    def _lock_cleanup(self, epoch: int) -> None:
        del epoch
        clear_orphaned_locks(self.ports.lock, self.ports.registry)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _beat(self) -> None:
        try:
            self.ports.registry.heartbeat(self.instance_id, self._registry_status())
        except PmError as exc:
            log.warning("heartbeat failed", extra={"error": str(exc)})

    def _registry_status(self) -> str:
        return {"recovering": "starting", "starting": "starting"}.get(self._state, self._state)

    def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_ms / 1000
        while not self._stop.wait(interval):
            self._beat()

    def _stats_loop(self) -> None:
        while not self._stop.wait(self.settings.stats_flush_s):
            with contextlib.suppress(PmError):
                self.service.flush_counts()

    def drain(self) -> None:
        """Graceful shutdown (service.md 9): stop taking signals, finish, resign, stop."""
        if self._state in ("draining", "stopped"):
            return
        self._state = "draining"
        self._beat()
        if self.settings.drain_grace_s > 0:
            # /ready already says 503, so load balancers stop routing; stragglers still land.
            time.sleep(self.settings.drain_grace_s)
        self._accepting = False
        finished = self.service.wait_idle(self.settings.shutdown_timeout_s)
        if not finished:
            log.warning("shutdown timeout: unfinished signals are left for takeover")
        self.service.shutdown()
        if self.scheduler is not None:
            self.scheduler.stop(resign=True)
        with contextlib.suppress(PmError):
            self.service.flush_counts()
        self._state = "stopped"
        self._beat()
        self.close()

    def close(self) -> None:
        """Stop threads and release pools (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self.scheduler is not None:
            with contextlib.suppress(Exception):
                self.scheduler.stop(resign=True, timeout_s=2.0)
        self.service.shutdown()
        for thread in self._threads:
            thread.join(timeout=2.0)
        closer = getattr(self.ports.broker, "close", None)
        if callable(closer):
            with contextlib.suppress(Exception):
                closer()
        coordination_close = getattr(self.coordination, "close", None)
        if callable(coordination_close):
            with contextlib.suppress(Exception):
                coordination_close()
        if self.engine is not None:
            self.engine.dispose()

    # ------------------------------------------------------------------ CLI helpers

    def broker_ok(self) -> bool:
        """Whether the broker answers a ping."""
        return isinstance(self.ports.broker.ping(), Ok)

    def now(self) -> dt.datetime:
        """The instance clock (UTC)."""
        return self.ports.clock.now()
