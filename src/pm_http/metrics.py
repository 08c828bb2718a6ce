"""Prometheus metrics of service.md 10, one registry per app (so tests can run many apps).

The service reports through :class:`PrometheusObserver` (the ``Observer`` port); gauges that
describe the instance as a whole (leader, epoch, coordination mode, blocked instruments,
cluster statistics) are read from ``hosted.status()`` at scrape time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("pm.http.metrics")

# The *_created series double every counter's output and no pm dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Latency buckets around the 20 ms p95 target and the 2.5 s response deadline.
_SIGNAL_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BROKER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class PrometheusObserver:
    """Implements ``pm_core.service.api.Observer`` on a private CollectorRegistry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.signals = Counter(
            "pm_signals_total", "Signals answered", ["outcome", "instrument", "type"], registry=r
        )
        self.processing = Histogram(
            "pm_signal_processing_seconds",
            "Time from hand-off to answer",
            buckets=_SIGNAL_BUCKETS,
            registry=r,
        )
        self.duplicates = Counter(
            "pm_duplicates_total", "Duplicates caught by layer", ["layer"], registry=r
        )
        self.lock_failures = Counter(
            "pm_signal_lock_failures_total", "L2 lock not usable", ["reason"], registry=r
        )
        self.inflight_gauge = Gauge("pm_inflight_signals", "Signals in flight", registry=r)
        self.tx_retries = Counter(
            "pm_tx_retries_total", "Transactions retried", ["reason"], registry=r
        )
        self.intents = Gauge(
            "pm_order_intents", "Order intents by state (this instance)", ["state"], registry=r
        )
        self.redis_mode_changes = Counter(
            "pm_redis_mode_changes_total", "Coordination mode switches", registry=r
        )
        self.broker_seconds = Histogram(
            "pm_broker_request_seconds",
            "Broker request latency",
            ["endpoint"],
            buckets=_BROKER_BUCKETS,
            registry=r,
        )
        self.broker_errors = Counter(
            "pm_broker_errors_total", "Broker request failures", ["endpoint", "kind"], registry=r
        )
        self.reconciliation = Gauge(
            "pm_reconciliation_differences",
            "Differences found by the last reconciliation",
            ["instrument", "kind"],
            registry=r,
        )
        self.http_requests = Counter(
            "pm_http_requests_total", "HTTP requests answered", ["route", "status"], registry=r
        )

    # -- the Observer port ------------------------------------------------------------

    def signal_finished(self, outcome: str, instrument: str, type_: str, seconds: float) -> None:
        """A signal reached an answer."""
        self.signals.labels(outcome, instrument, type_).inc()
        self.processing.observe(max(0.0, seconds))

    def duplicate(self, layer: str) -> None:
        """A duplicate caught at ``layer``."""
        self.duplicates.labels(layer).inc()

    def lock_failure(self, reason: str) -> None:
        """L2 could not be used."""
        self.lock_failures.labels(reason).inc()

    def inflight(self, delta: int) -> None:
        """Signals in flight changed by ``delta``."""
        self.inflight_gauge.inc(delta)

    def tx_retry(self, reason: str) -> None:
        """A transaction was retried."""
        self.tx_retries.labels(reason).inc()

    def intent_state(self, state: str, delta: int) -> None:
        """Order intents in ``state`` changed by ``delta``."""
        self.intents.labels(state).inc(delta)

    # -- extra reports adapters may make (duck-typed; not part of the core port) --------

    def broker_request(self, endpoint: str, seconds: float) -> None:
        """One broker HTTP request finished."""
        self.broker_seconds.labels(endpoint).observe(max(0.0, seconds))

    def broker_error(self, endpoint: str, kind: str) -> None:
        """One broker request failed (``kind``: timeout, connect, http_5xx, ...)."""
        self.broker_errors.labels(endpoint, kind).inc()

    def redis_mode_change(self) -> None:
        """Coordination switched between normal and database-only."""
        self.redis_mode_changes.inc()

    def reconciliation_differences(self, instrument: str, kind: str, count: int) -> None:
        """The last reconciliation of ``instrument`` found ``count`` differences of ``kind``."""
        self.reconciliation.labels(instrument, kind).set(count)

    def http_request(self, route: str, status: int) -> None:
        """The host answered a request on ``route`` with ``status``."""
        self.http_requests.labels(route, str(status)).inc()


class StatusCollector(Collector):
    """Instance-wide gauges read from ``status()`` at each scrape (never raises); the
    ``pm_stat_*`` gauges from ``exported()``, the leader's last statistics export."""

    def __init__(
        self,
        status: Callable[[], Mapping[str, Any]],
        exported: Callable[[], Mapping[str, float] | None],
    ) -> None:
        self._status = status
        self._exported = exported

    def describe(self) -> list[Any]:
        # Empty: registering must not call status() (the app may not be started yet).
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            status = self._status()
        except Exception:  # a scrape must not fail because the database is down
            log.warning("status unavailable for /metrics", exc_info=True)
            status = {}
        leader = GaugeMetricFamily("pm_leader", "1 if this instance is the leader")
        leader.add_metric([], 1.0 if status.get("leader") else 0.0)
        yield leader
        epoch = GaugeMetricFamily("pm_leader_epoch", "Leader epoch seen by this instance")
        epoch.add_metric([], float(_number(status.get("epoch"))))
        yield epoch
        mode = GaugeMetricFamily("pm_coordination_mode", "Coordination mode", labels=["mode"])
        current = str(status.get("mode") or "normal")
        for name in sorted({"normal", "database-only", current}):
            mode.add_metric([name], 1.0 if name == current else 0.0)
        yield mode
        blocked = GaugeMetricFamily(
            "pm_instrument_blocked", "1 if the instrument is blocked", labels=["instrument"]
        )
        for inst in status.get("blocked_instruments") or ():
            label = inst.get("instrument") if isinstance(inst, Mapping) else inst
            blocked.add_metric([str(label)], 1.0)
        yield blocked
        try:
            stats = self._exported() or {}
        except Exception:
            log.warning("exported statistics unavailable for /metrics", exc_info=True)
            stats = {}
        for key, value in sorted(stats.items()):
            if isinstance(value, int | float) and not isinstance(value, bool):
                g = GaugeMetricFamily(f"pm_stat_{key}", f"Cluster statistic {key}")
                g.add_metric([], float(value))
                yield g


def _number(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return 0.0


def render(registry: CollectorRegistry) -> bytes:
    """The registry in the Prometheus text format."""
    return generate_latest(registry)
