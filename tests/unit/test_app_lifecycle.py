"""App lifecycle: recovering -> active -> draining (with grace) -> stopped (service.md 9)."""

from __future__ import annotations

import threading
import time

import pytest

from pm_adapters.bootstrap import build, load_settings
from pm_core.model import ReceivedSignal
from pm_core.service.api import ServiceUnavailable
from pm_core.signal import fingerprint, validate
from tests.unit.service_kit import gold_entry


def test_drain_grace_keeps_taking_signals_while_ready_says_503() -> None:
    settings = load_settings(
        {
            "PM_DATABASE_URL": "memory://",
            "PM_DRAIN_GRACE_S": "0.6",
            "PM_SHUTDOWN_TIMEOUT_S": "2",
            "PM_FILL_POLL_MS": "1,5",
        }
    )
    app = build(settings)
    before = (app.accepting, app.state)
    app.start()
    assert before == (False, "starting")
    assert (app.accepting, app.state, app.ready()[0]) == (True, "active", True)
    signal = validate(gold_entry(), app.config)
    assert not isinstance(signal, tuple)
    received = ReceivedSignal(signal, fingerprint(signal), app.now())
    drainer = threading.Thread(target=app.drain)
    drainer.start()
    time.sleep(0.2)
    ready, body = app.ready()
    assert not ready and "draining" in body["reasons"]
    assert app.accepting, "the grace still takes signals"
    assert app.submit(received, "in-grace").result(timeout=5).http_status == 200
    drainer.join(timeout=10)
    assert (app.state, app.accepting) == ("stopped", False)
    with pytest.raises(ServiceUnavailable) as refused:
        app.submit(received, "late")
    assert refused.value.reason == "draining"
