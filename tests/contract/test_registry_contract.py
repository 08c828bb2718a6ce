"""InstanceRegistry contract on memory, Redis (composite) and the database (service.md 2.5)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pm_core.ports import InstanceInfo
from tests.kit.coordination import BACKENDS, Backend, open_backend

pytestmark = pytest.mark.integration


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with open_backend(request.param, request, tmp_path) as opened:
        yield opened


def info(name: str = "pm") -> InstanceInfo:
    return InstanceInfo(
        instance_id=f"{name}-{uuid.uuid4().hex[:8]}",
        instance_name=name,
        hostname="testhost",
        port=8080,
        pid=os.getpid(),
        version="0.1.0",
    )


def test_registered_instance_is_live(backend: Backend) -> None:
    registry = backend.registry()
    me = info()
    assert registry.register(me) == me.instance_id
    assert registry.is_live(me.instance_id), "starting counts as live"
    registry.heartbeat(me.instance_id, "active")
    assert registry.is_live(me.instance_id)
    assert not registry.is_live("never-registered-00000000")


def test_draining_is_live_stopped_is_not(backend: Backend) -> None:
    registry = backend.registry()
    me = info()
    registry.register(me)
    registry.heartbeat(me.instance_id, "draining")
    assert registry.is_live(me.instance_id)
    registry.heartbeat(me.instance_id, "stopped")
    assert not registry.is_live(me.instance_id)


def test_silent_instance_goes_stale_then_a_heartbeat_revives_it(backend: Backend) -> None:
    registry = backend.registry()
    quiet, chatty = info("quiet"), info("chatty")
    registry.register(quiet)
    registry.register(chatty)
    registry.heartbeat(quiet.instance_id)
    steps = 6
    for _ in range(steps):
        backend.wait((backend.stale_s + 0.3) / steps)
        registry.heartbeat(chatty.instance_id)
    assert not registry.is_live(quiet.instance_id), "no heartbeat for longer than stale"
    assert registry.is_live(chatty.instance_id)
    registry.heartbeat(quiet.instance_id)
    assert registry.is_live(quiet.instance_id)


def test_crashed_is_final(backend: Backend) -> None:
    registry = backend.registry()
    victim, other = info("victim"), info("other")
    registry.register(victim)
    registry.register(other)
    registry.mark_crashed(victim.instance_id)
    assert not registry.is_live(victim.instance_id)
    assert registry.is_live(other.instance_id)
    registry.heartbeat(victim.instance_id)
    assert not registry.is_live(victim.instance_id), "a crashed instance restarts with a new id"


def test_unknown_status_is_refused(backend: Backend) -> None:
    registry = backend.registry()
    me = info()
    registry.register(me)
    with pytest.raises(ValueError):
        registry.heartbeat(me.instance_id, "sleeping")
    assert registry.is_live(me.instance_id)
