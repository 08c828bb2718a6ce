"""Leader failover with real processes (service.md 15 rows 14 and 15).

Three candidate processes (tests/kit/candidate.py) elect a leader over PostgreSQL, with or
without Redis; short lease/renew/tick keep the test fast.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pm_adapters.sql.fence import SqlFence
from tests.kit.candidate import CandidateProcess
from tests.kit.coordination import sql_engine

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIMING = {
    "lease_ms": 600,
    "renew_ms": 150,
    "tick_ms": 50,
    "heartbeat_ms": 200,
    "db_heartbeat_s": 0.2,
    "stale_s": 1.0,
    "redis_cooldown_s": 0.5,
    "redis_probe_ms": 100,
    "redis_timeout_ms": 1000,
}


@pytest.fixture(params=["redis", "database-only"])
def cluster_config(request: pytest.FixtureRequest, pg_url: str) -> Iterator[dict[str, Any]]:
    engine = sql_engine(pg_url)
    engine.dispose()
    config: dict[str, Any] = {"db": pg_url, "prefix": f"f{uuid.uuid4().hex[:6]}:", **TIMING}
    if request.param == "redis":
        config["redis"] = request.getfixturevalue("redis_server").url
    yield config


def start(config: dict[str, Any], count: int, **extra: Any) -> list[CandidateProcess]:
    candidates = [CandidateProcess({**config, **extra, "id": f"cand{i}"}) for i in range(count)]
    for candidate in candidates:
        assert candidate.wait_for("ready", 30) is not None, f"{candidate.id} did not start"
    return candidates


def current_leader(
    candidates: list[CandidateProcess], timeout_s: float, *, after: float = 0.0
) -> tuple[CandidateProcess, int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for candidate in candidates:
            events = candidate.of("leader", after=after)
            if events:
                return candidate, int(events[-1]["epoch"])
        time.sleep(0.02)
    raise AssertionError("no leader elected")


def test_kill9_leader_gives_exactly_one_new_leader_with_higher_epoch(
    cluster_config: dict[str, Any],
) -> None:
    candidates = start(cluster_config, 3)
    try:
        leader, epoch = current_leader(candidates, 10)
        killed_at = leader.kill9()
        survivors = [c for c in candidates if c is not leader]
        new_leader, new_epoch = current_leader(survivors, 5, after=killed_at)
        taken_over_after = new_leader.of("leader", after=killed_at)[0]["t"] - killed_at
        assert new_epoch > epoch
        # lease + tick + a round trip (0.65 s here), with slack for a loaded CI machine.
        assert taken_over_after < 2.0
        time.sleep(1.0)  # a few more election rounds: nobody else may take it
        elected = [(c.id, e["epoch"]) for c in survivors for e in c.of("leader", after=killed_at)]
        assert elected == [(new_leader.id, new_epoch)]
        fence = SqlFence(sql_engine(cluster_config["db"]))
        state = fence.state()
        assert state.holder == new_leader.id and state.epoch == new_epoch and state.live
        assert new_leader.wait_for("write_ok", 2, epoch=new_epoch) is not None
    finally:
        for candidate in candidates:
            candidate.close()


def test_leader_paused_past_its_lease_cannot_complete_a_fenced_write(
    cluster_config: dict[str, Any],
) -> None:
    # The job holds its epoch for 300 ms before writing: the pause lands mid-job.
    candidates = start(cluster_config, 3, hold_ms=300, job_every_ms=20)
    try:
        leader, epoch = current_leader(candidates, 10)
        started = leader.wait_for("job_started", 5, after=time.time(), epoch=epoch)
        assert started is not None
        leader.pause()
        paused_at = time.time()
        survivors = [c for c in candidates if c is not leader]
        new_leader, new_epoch = current_leader(survivors, 5, after=paused_at)
        assert new_epoch > epoch
        assert new_leader.wait_for("write_ok", 3, epoch=new_epoch) is not None
        resumed_at = time.time()
        leader.resume()
        fenced = leader.wait_for("write_fenced", 5, after=resumed_at - 1, epoch=epoch)
        assert fenced is not None, "the resumed job's write must be refused"
        assert leader.wait_for("follower", 5, after=resumed_at - 1) is not None
        time.sleep(0.5)
        late_writes = leader.of("write_ok", after=resumed_at)
        assert late_writes == [], f"a deposed leader wrote: {late_writes}"
        fence = SqlFence(sql_engine(cluster_config["db"]))
        assert fence.state().epoch >= new_epoch
    finally:
        for candidate in candidates:
            candidate.close()
