"""LeaderElection contract on memory, Redis (composite over the SQL fence) and the database."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pm_core.errors import FencedError
from pm_core.ports import Lease
from tests.kit.coordination import BACKENDS, Backend, open_backend

pytestmark = pytest.mark.integration


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with open_backend(request.param, request, tmp_path) as opened:
        yield opened


def test_one_leader_while_the_lease_is_live(backend: Backend) -> None:
    a, b = backend.election("inst-a"), backend.election("inst-b")
    lease = a.try_acquire()
    assert lease is not None and lease.holder == "inst-a" and lease.epoch >= 1
    assert b.try_acquire() is None
    backend.check(lease.epoch)


def test_renewal_keeps_leadership(backend: Backend) -> None:
    a, b = backend.election("inst-a"), backend.election("inst-b")
    lease = a.try_acquire()
    assert lease is not None
    for _ in range(4):
        backend.wait(backend.lease_ms / 1000 / 3)
        assert a.renew(lease) is True
        assert b.try_acquire() is None
    backend.check(lease.epoch)


def test_lapsed_lease_is_taken_over_and_the_old_leader_is_fenced(backend: Backend) -> None:
    a, b = backend.election("inst-a"), backend.election("inst-b")
    old = a.try_acquire()
    assert old is not None
    backend.wait(backend.lease_ms / 1000 + 0.2)
    new = b.try_acquire()
    assert new is not None and new.holder == "inst-b"
    assert new.epoch > old.epoch
    assert a.renew(old) is False
    with pytest.raises(FencedError):
        backend.check(old.epoch)
    backend.check(new.epoch)
    assert a.try_acquire() is None, "the new leader's lease is live"


def test_resign_hands_over_at_once(backend: Backend) -> None:
    a, b = backend.election("inst-a"), backend.election("inst-b")
    old = a.try_acquire()
    assert old is not None
    a.resign(old)
    with pytest.raises(FencedError):
        backend.check(old.epoch)
    new = b.try_acquire()
    assert new is not None and new.epoch > old.epoch
    assert a.renew(old) is False


def test_epochs_strictly_increase_across_leaders(backend: Backend) -> None:
    elections = [backend.election(f"inst-{i}") for i in range(3)]
    epochs: list[int] = []
    for round_ in range(6):
        election = elections[round_ % 3]
        lease = election.try_acquire()
        assert lease is not None
        epochs.append(lease.epoch)
        election.resign(lease)
    assert all(later > earlier for earlier, later in itertools.pairwise(epochs))


def test_concurrent_candidates_elect_exactly_one(backend: Backend) -> None:
    elections = [backend.election(f"inst-{i}") for i in range(6)]
    results: list[Lease | None] = [None] * len(elections)
    barrier = threading.Barrier(len(elections))

    def run(i: int) -> None:
        barrier.wait()
        results[i] = elections[i].try_acquire()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(elections))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [lease for lease in results if lease is not None]
    assert len(winners) == 1
    backend.check(winners[0].epoch)
