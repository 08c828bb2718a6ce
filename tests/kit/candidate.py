"""A leader candidate process for failover tests and benchmarks (no CLI framework).

Run as ``python -m tests.kit.candidate '<json config>'``; it prints one JSON object per line:
``ready``, ``leader`` (epoch), ``follower`` (reason), ``job_started``, ``write_ok``,
``write_fenced``, ``resigned``; each with ``t`` (wall time) and ``id``. The leader's one job
takes the epoch, holds it for ``hold_ms`` (work in progress) and then makes a fenced write,
so a leader paused mid-job shows whether the fence stops it. SIGTERM resigns and exits.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from pm_adapters.clock import SystemClock
from pm_adapters.redis.composite import CoordinationSettings, build_coordination
from pm_adapters.sql.retry import create_engine
from pm_adapters.sql.tables import instance_metadata
from pm_core.errors import FencedError, PmError
from pm_core.ports import InstanceInfo, Lease
from pm_core.service.jobs import IntervalJob, LeaderScheduler, LeaderTimings

_print_lock = threading.Lock()


def emit(instance_id: str, event: str, **fields: Any) -> None:
    """One JSON line on stdout, flushed at once (the parent reads it live)."""
    line = json.dumps({"event": event, "id": instance_id, "t": time.time(), **fields})
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def main(config: dict[str, Any]) -> None:
    """Register, elect, run the fenced job until SIGTERM."""
    instance_id = str(config["id"])
    settings = CoordinationSettings(
        prefix=config.get("prefix", "pm:"),
        leader_lease_ms=int(config.get("lease_ms", 2700)),
        leader_renew_ms=int(config.get("renew_ms", 900)),
        election_tick_ms=int(config.get("tick_ms", 250)),
        heartbeat_ms=int(config.get("heartbeat_ms", 2000)),
        db_heartbeat_s=float(config.get("db_heartbeat_s", 5)),
        instance_stale_s=float(config.get("stale_s", 15)),
        redis_timeout_ms=int(config.get("redis_timeout_ms", 250)),
        redis_failures=int(config.get("redis_failures", 3)),
        redis_cooldown_s=float(config.get("redis_cooldown_s", 5)),
        redis_probes=int(config.get("redis_probes", 3)),
        redis_probe_ms=int(config.get("redis_probe_ms", 1000)),
    )
    hold_s = float(config.get("hold_ms", 0)) / 1000
    job_every_s = float(config.get("job_every_ms", 100)) / 1000
    clock = SystemClock()
    engine = create_engine(str(config["db"]))
    ports = build_coordination(engine, config.get("redis"), instance_id, clock, settings)
    ports.registry.register(
        InstanceInfo(instance_id, instance_id, socket.gethostname(), None, os.getpid(), "test")
    )
    if ports.coordinator is not None:
        ports.coordinator.on_mode_change(
            lambda old, new: emit(instance_id, "mode", old=old, new=new)
        )

    def fenced_job(epoch: int) -> None:
        emit(instance_id, "job_started", epoch=epoch)
        if hold_s:
            clock.sleep(hold_s)
        try:
            with ports.fence.fenced(epoch) as conn:
                conn.execute(
                    sa.update(instance_metadata)
                    .where(instance_metadata.c.instance_id == instance_id)
                    .values(leader_epoch=epoch, is_leader=True)
                )
        except FencedError as exc:
            emit(instance_id, "write_fenced", epoch=epoch, error=str(exc))
            return
        emit(instance_id, "write_ok", epoch=epoch)

    def on_leadership(lease: Lease | None, reason: str) -> None:
        if lease is None:
            emit(instance_id, "follower", reason=reason)
        else:
            emit(instance_id, "leader", epoch=lease.epoch)

    scheduler = LeaderScheduler(
        ports.leader,
        clock,
        retention=lambda epoch: None,
        retention_at=dt.time(2, 30),
        tz=dt.UTC,
        timings=LeaderTimings(
            settings.leader_lease_ms, settings.leader_renew_ms, settings.election_tick_ms
        ),
        on_leadership=on_leadership,
    )
    scheduler.add(IntervalJob("fenced_write", job_every_s, fenced_job))
    if ports.coordinator is not None:
        ports.coordinator.listen_released(lambda holder: scheduler.wake())
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())

    def heartbeats() -> None:
        while not stopping.is_set():
            with contextlib.suppress(PmError):
                ports.registry.heartbeat(instance_id, "active")
            clock.sleep(settings.heartbeat_ms / 1000)

    threading.Thread(target=heartbeats, name="heartbeat", daemon=True).start()
    scheduler.start()
    emit(instance_id, "ready", pid=os.getpid(), mode=ports.mode())
    while not stopping.wait(0.05):
        pass
    scheduler.stop(resign=True)
    emit(instance_id, "resigned")
    with contextlib.suppress(PmError):
        ports.registry.heartbeat(instance_id, "stopped")
    engine.dispose()


def settings_json(**overrides: Any) -> str:
    """A config argument for the candidate (tests and benchmarks build it with this)."""
    return json.dumps(overrides)


class CandidateProcess:
    """The parent's handle on one candidate subprocess and the events it printed."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.id = str(config["id"])
        root = Path(__file__).resolve().parents[2]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "src")])}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.kit.candidate", json.dumps(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=root,
            env=env,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._changed:
                self.events.append(event)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(
        self, event: str, timeout_s: float, *, after: float = 0.0, **match: Any
    ) -> dict[str, Any] | None:
        """The first ``event`` with t >= ``after`` matching ``match``, waiting up to timeout."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                for seen in self.events:
                    if (
                        seen["event"] == event
                        and seen["t"] >= after
                        and all(seen.get(k) == v for k, v in match.items())
                    ):
                        return seen
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    return None
                self._changed.wait(min(left, 0.05))

    def of(self, event: str, *, after: float = 0.0) -> list[dict[str, Any]]:
        """Every ``event`` printed at or after ``after``."""
        with self._changed:
            return [e for e in self.events if e["event"] == event and e["t"] >= after]

    def kill9(self) -> float:
        """SIGKILL; returns the wall time it was sent."""
        sent = time.time()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        return sent

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def terminate(self) -> float:
        """SIGTERM (the candidate resigns and exits); returns the wall time it was sent."""
        sent = time.time()
        self.process.send_signal(signal.SIGTERM)
        return sent

    def close(self) -> None:
        """Make sure the process is gone."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
