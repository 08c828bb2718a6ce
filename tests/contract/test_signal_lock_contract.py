"""SignalLock contract, run unchanged on memory, Redis (composite) and the database-only lock.

In database-only mode (PostgreSQL, SQLite) L2 is an in-process lock by design (service.md 4:
the L3 unique insert is the real lock); its "instances" here share one process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kit.coordination import BACKENDS, Backend, open_backend

pytestmark = pytest.mark.integration

FP = "f" * 64


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with open_backend(request.param, request, tmp_path) as opened:
        yield opened


def test_one_holder_at_a_time(backend: Backend) -> None:
    a, b = backend.lock("inst-a"), backend.lock("inst-b")
    handle = a.acquire(FP, 5_000)
    assert handle is not None
    assert handle.owner == "inst-a" and handle.fingerprint == FP and handle.token
    assert b.acquire(FP, 5_000) is None
    assert a.acquire(FP, 5_000) is None, "not re-entrant: a second request waits too"
    other = b.acquire("e" * 64, 5_000)
    assert other is not None, "other fingerprints are independent"


def test_release_frees_the_lock(backend: Backend) -> None:
    a, b = backend.lock("inst-a"), backend.lock("inst-b")
    handle = a.acquire(FP, 5_000)
    assert handle is not None
    a.release(handle)
    again = b.acquire(FP, 5_000)
    assert again is not None and again.owner == "inst-b"


def test_expired_lock_is_free_and_a_stale_release_keeps_the_new_owner(backend: Backend) -> None:
    a, b, c = backend.lock("inst-a"), backend.lock("inst-b"), backend.lock("inst-c")
    old = a.acquire(FP, 150)
    assert old is not None
    backend.wait(0.3)
    new = b.acquire(FP, 5_000)
    assert new is not None, "the TTL lapsed"
    a.release(old)  # compare-and-delete: not ours any more, nothing happens
    assert a.extend(old, 5_000) is False
    assert c.acquire(FP, 5_000) is None, "the new owner still holds it"
    assert new.token != old.token


def test_extend_pushes_the_expiry(backend: Backend) -> None:
    a, b = backend.lock("inst-a"), backend.lock("inst-b")
    handle = a.acquire(FP, 1_000)
    assert handle is not None
    backend.wait(0.4)
    assert a.extend(handle, 3_000) is True
    backend.wait(0.8)
    assert b.acquire(FP, 1_000) is None, "still held after the original TTL"


def test_fencing_tokens_increase(backend: Backend) -> None:
    a = backend.lock("inst-a")
    tokens = []
    for i in range(5):
        handle = a.acquire(f"{i:064d}", 5_000)
        assert handle is not None and handle.fencing_token is not None
        tokens.append(handle.fencing_token)
    assert tokens == sorted(tokens) and len(set(tokens)) == 5


def test_release_orphans_removes_only_dead_owners_locks(backend: Backend) -> None:
    live, dead = backend.lock("inst-live"), backend.lock("inst-dead")
    mine = [live.acquire(f"{i:064d}", 10_000) for i in range(3)]
    theirs = [dead.acquire(f"{i + 10:064d}", 10_000) for i in range(4)]
    assert all(mine) and all(theirs)
    seen: set[str] = set()

    def is_live(owner: str) -> bool:
        seen.add(owner)
        return owner == "inst-live"

    assert live.release_orphans(is_live) == 4
    assert seen <= {"inst-live", "inst-dead"} and "inst-dead" in seen
    probe = backend.lock("inst-probe")
    for i in range(3):
        assert probe.acquire(f"{i:064d}", 1_000) is None, "live owner's lock kept"
    for i in range(4):
        taken = probe.acquire(f"{i + 10:064d}", 1_000)
        assert taken is not None, "dead owner's lock removed"
        probe.release(taken)
    assert live.release_orphans(is_live) == 0
