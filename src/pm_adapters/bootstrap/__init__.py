"""Composition: the only place that chooses adapters (architecture.md 8).

``build(settings)`` connects to the store, checks the schema, picks coordination and the
broker, and returns an ``App`` (the HostedApp the hosts drive). Nothing starts until
``App.start()``.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable
from decimal import Decimal

import attrs

from pm_adapters.bootstrap.app import App
from pm_adapters.bootstrap.settings import Settings, SettingsError, load_settings
from pm_adapters.clock import SystemClock
from pm_adapters.memory.coordination import MemoryCoordination
from pm_adapters.memory.uow import MemoryUnitOfWorkFactory
from pm_adapters.paper import PaperBroker
from pm_adapters.ratebudget import LocalRateBudget
from pm_core import __version__
from pm_core.errors import NotInitialised
from pm_core.ports import Broker, Clock, Ports, RateBudget
from pm_core.service.limits import ServiceLimits

__all__ = ["App", "Settings", "SettingsError", "build", "instance_id_for", "load_settings"]

MEMORY_URLS = ("memory://", "memory:")


class _BrokerSink:
    """Forwards the broker client's per-request reports to the app built after it."""

    def __init__(self) -> None:
        self.app: App | None = None

    def observe(self, endpoint: str, outcome: str, seconds: float) -> None:
        if self.app is not None:
            self.app.broker_observed(endpoint, outcome, seconds)


def instance_id_for(settings: Settings) -> str:
    """``<PM_INSTANCE_NAME or hostname>-<8 random hex>``, new per process (service.md 3)."""
    name = settings.instance_name or socket.gethostname()
    return f"{name}-{secrets.token_hex(4)}"


def service_limits(settings: Settings, instance_id: str) -> ServiceLimits:
    """The settings the application service runs by."""
    return ServiceLimits(
        instance_id=instance_id,
        signal_lock_ttl_ms=settings.signal_lock_ttl_ms,
        lock_wait_ms=settings.lock_wait_ms,
        lock_poll_ms=settings.lock_poll_ms,
        market_data_timeout_ms=settings.market_data_timeout_ms,
        l1_size=settings.l1_size,
        signal_workers=settings.signal_workers,
        signal_queue=settings.signal_queue,
        response_deadline_ms=settings.response_deadline_ms,
        signal_order_style="ladder" if settings.signal_order_style == "ladder" else "market",
        max_resume_age_s=settings.max_resume_age_s,
        max_queue_age_s=settings.max_queue_age_s,
        exit_leg_attempts=settings.exit_leg_attempts,
        exit_leg_window_s=settings.exit_leg_window_s,
        send_deadline_ms=settings.send_deadline_ms,
        rate_retry_ms=settings.rate_retry_ms,
        fill_poll_first_ms=settings.fill_poll_ms[0],
        fill_poll_max_ms=settings.fill_poll_ms[1],
        fill_timeout_s=settings.fill_timeout_s,
        not_found_after_s=settings.not_found_after_s,
        lookup_spacing_s=settings.lookup_spacing_s,
        match_window_s=settings.openalgo_match_window_s,
        tx_attempts=settings.tx_attempts,
        tx_backoff_base_ms=settings.tx_backoff_ms[0],
        tx_backoff_cap_ms=settings.tx_backoff_ms[1],
        tx_budget_request_ms=settings.tx_budget_ms[0],
        tx_budget_background_ms=settings.tx_budget_ms[1],
        held_result_retry_ms=settings.held_result_retry_ms,
        held_result_max_s=settings.held_result_max_s,
        recovery_broker_budget_s=settings.recovery_broker_budget_s,
        broker_mode_check_s=settings.openalgo_mode_check_s,
        expected_broker_mode=settings.openalgo_expected_mode
        if settings.broker == "openalgo"
        else None,
    )


def _broker(
    settings: Settings,
    clock: Clock,
    rate: RateBudget,
    observe: Callable[[str, str, float], None] | None = None,
) -> tuple[Broker, str]:
    if settings.broker == "openalgo":
        from pm_adapters.openalgo.client import OpenAlgoBroker, OpenAlgoSettings

        key = settings.openalgo_api_key.reveal() if settings.openalgo_api_key else ""
        oa = OpenAlgoSettings(
            url=settings.openalgo_url,
            api_key=key,
            strategy=settings.openalgo_strategy,
            expected_mode="live" if settings.openalgo_expected_mode == "live" else "analyze",
            connect_timeout_s=settings.openalgo_connect_timeout_s,
            read_timeout_s=settings.openalgo_read_timeout_s,
            order_timeout_s=settings.openalgo_order_timeout_s,
            read_retries=settings.openalgo_read_retries,
            read_backoff_s=settings.openalgo_read_backoff,
            max_modifications=settings.openalgo_max_modifications,
            book_poll_ms=settings.openalgo_book_poll_ms,
        )
        return OpenAlgoBroker(oa, rate, observe=observe), "openalgo"
    return PaperBroker(clock, cash=Decimal(str(settings.domain.portfolio.initial_capital))), "paper"


def build(settings: Settings, *, clock: Clock | None = None, broker: Broker | None = None) -> App:
    """Build the application from settings; raises PmError leaves the CLI maps to exit codes.

    DatabaseUnavailable (exit 3), SchemaMismatch (exit 4), NotInitialised (exit 6).
    """
    clock = clock or SystemClock()
    # PM_MAX_QUEUE_AGE_S is a service setting that decide applies (stale_in_queue).
    portfolio = attrs.evolve(settings.domain.portfolio, max_queue_age_s=settings.max_queue_age_s)
    settings = attrs.evolve(settings, domain=attrs.evolve(settings.domain, portfolio=portfolio))
    instance_id = instance_id_for(settings)
    limits = service_limits(settings, instance_id)
    if settings.database_url in MEMORY_URLS:
        return _build_memory(settings, clock, instance_id, limits, broker)
    return _build_sql(settings, clock, instance_id, limits, broker)


def _build_memory(
    settings: Settings,
    clock: Clock,
    instance_id: str,
    limits: ServiceLimits,
    broker: Broker | None,
) -> App:
    sink = _BrokerSink()
    coordination = MemoryCoordination(clock)
    uow = MemoryUnitOfWorkFactory(
        now=clock.now,
        fence_epoch=coordination.current_epoch,
    )
    uow.initialise(settings.domain.portfolio.initial_capital)
    rate = LocalRateBudget(
        settings.openalgo_order_rate,
        settings.openalgo_read_rate,
        settings.rate_max_wait_ms,
        live_instances=lambda: 1,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
    )
    chosen, broker_name = (
        (broker, "custom") if broker is not None else _broker(settings, clock, rate, sink.observe)
    )
    ports = Ports(
        clock=clock,
        uow=uow,
        lock=coordination.signal_lock(instance_id),
        leader=coordination.leader(instance_id, settings.leader_lease_ms),
        registry=coordination.registry(settings.instance_stale_s),
        broker=chosen,
        rate=rate,
    )
    app = App(
        settings=settings,
        ports=ports,
        limits=limits,
        instance_id=instance_id,
        version=__version__,
        broker_name=broker_name,
        dialect="memory",
        mode=lambda: "normal",
    )
    sink.app = app
    return app


def _build_sql(
    settings: Settings,
    clock: Clock,
    instance_id: str,
    limits: ServiceLimits,
    broker: Broker | None,
) -> App:
    from pm_adapters.redis.composite import build_coordination
    from pm_adapters.sql import migrations
    from pm_adapters.sql.connect import connect
    from pm_adapters.sql.uow import SqlUnitOfWorkFactory

    sink = _BrokerSink()
    engine = connect(settings.database_url, settings.db_settings())
    if engine.dialect.name == "sqlite":
        # The embedded default migrates itself and starts with the default capital.
        migrations.upgrade(engine)
    else:
        migrations.check_schema(engine)
    uow = SqlUnitOfWorkFactory(engine)
    if engine.dialect.name == "sqlite":
        uow.initialise(settings.domain.portfolio.initial_capital)
    else:
        with uow.begin("signal", read_only=True) as unit:
            try:
                unit.portfolio.read()
            except NotInitialised:
                engine.dispose()
                raise
    coordination = build_coordination(
        engine, settings.redis_url, instance_id, clock, settings.coordination_settings()
    )
    chosen, broker_name = (
        (broker, "custom")
        if broker is not None
        else _broker(settings, clock, coordination.rate, sink.observe)
    )
    ports = Ports(
        clock=clock,
        uow=uow,
        lock=coordination.lock,
        leader=coordination.leader,
        registry=coordination.registry,
        broker=chosen,
        rate=coordination.rate,
    )
    app = App(
        settings=settings,
        ports=ports,
        limits=limits,
        instance_id=instance_id,
        version=__version__,
        broker_name=broker_name,
        dialect=engine.dialect.name,
        mode=coordination.mode,
        engine=engine,
        coordination=coordination,
        pid=os.getpid(),
    )
    sink.app = app
    return app
