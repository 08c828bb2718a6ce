"""A real pm instance behind the real HTTP host, for HTTP tests.

``HttpHost`` builds the application with ``pm_adapters.bootstrap.build`` from settings
(in-memory store unless told otherwise), starts it, wraps it with ``pm_http.app.create_app``
and talks to it through Starlette's TestClient or a real uvicorn server on a free port.
Every response goes through the OpenAPI check of ``tests.kit.openapi``.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

import pm_adapters.bootstrap as bootstrap
from pm_adapters.bootstrap.settings import Settings, load_settings
from tests.kit.openapi import assert_http_matches

BUILD_MISSING = not hasattr(bootstrap, "build")
needs_build = pytest.mark.skipif(BUILD_MISSING, reason="bootstrap.build not yet available")

SECRET = "test-webhook-secret"
# Flushed from memory every PM_STATS_FLUSH_S (service.md 11): they move on their own clock.
BUFFERED_STATISTICS = frozenset(
    {"signals_invalid", "signals_received", "duplicates_l1", "duplicates_l2", "duplicates_l3"}
)
ADMIN = "test-admin-token"

FAST: dict[str, str] = {
    "PM_DATABASE_URL": "memory://",
    "PM_WEBHOOK_SECRET": SECRET,
    "PM_ADMIN_TOKEN": ADMIN,
    "PM_SHUTDOWN_TIMEOUT_S": "2",
    "PM_STATS_FLUSH_S": "0.05",
    "PM_HEARTBEAT_MS": "200",
    "PM_DB_HEARTBEAT_S": "0.2",
    "PM_SWEEP_INTERVAL_S": "0.5",
    "PM_RECONCILE_ON_STARTUP": "false",
    "PM_RESPONSE_DEADLINE_MS": "2500",
    "PM_WEBHOOK_RATE": "0",
}

# The 1.1 alert of webhook.md (firing time 10:30 IST).
BASE_ENTRY: dict[str, Any] = {
    "type": "BASE_ENTRY",
    "instrument": "BANK_NIFTY",
    "position": "Long_1",
    "price": 52000,
    "stop": 51650,
    "lots": 5,
    "atr": 350,
    "er": 0.82,
    "supertrend": 51650,
    "roc": 2.5,
    "timestamp": "2025-11-28T10:30:00",
}


class HttpHost:
    """One started instance and a TestClient on its HTTP app."""

    def __init__(self, env: Mapping[str, str] | None = None, **build_kwargs: Any) -> None:
        from pm_http.app import create_app

        merged = {**FAST, **(env or {})}
        self.settings: Settings = load_settings(merged, config_path=_empty_toml())
        self.hosted = bootstrap.build(self.settings, **build_kwargs)
        self.hosted.start()
        self.asgi = create_app(self.hosted, self.settings)
        from starlette.testclient import TestClient

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.client = TestClient(self.asgi, raise_server_exceptions=False)

    # -- requests, each checked against the OpenAPI document -----------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send and check the response against the document and header rules."""
        response: httpx.Response = self.client.request(method, path, **kwargs)
        assert_http_matches(response)
        return response

    def webhook(
        self,
        payload: Any,
        *,
        secret: str | None = SECRET,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """POST a payload (a dict gets ``secret`` added unless ``secret`` is None)."""
        if isinstance(payload, dict) and secret is not None:
            payload = {**payload, "secret": secret}
        content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.request("POST", "/webhook", content=content, headers=dict(headers or {}))

    def admin(self, path: str, **kwargs: Any) -> httpx.Response:
        """GET a read-only view with the admin bearer token."""
        headers = {"Authorization": f"Bearer {ADMIN}"}
        return self.request("GET", path, headers=headers, **kwargs)

    # -- state, read through the hosted app itself ---------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """What must not change on invalid input: positions, portfolio, decided counters."""
        status = dict(self.hosted.status())
        # Counters with no outcome row are flushed later from memory (service.md 11).
        stats = {
            k: v
            for k, v in dict(status.get("statistics") or {}).items()
            if k not in BUFFERED_STATISTICS
        }
        positions = self.hosted.positions(None, 1000)
        return {
            "positions": positions.get("positions"),
            "version": positions.get("portfolio_version"),
            "portfolio": status.get("portfolio"),
            "statistics": stats,
        }

    def statistic(self, name: str) -> float:
        """A trading_statistics counter as the instance reports it."""
        return float(dict(self.hosted.status().get("statistics") or {}).get(name, 0))

    def wait_statistic(self, name: str, at_least: float, timeout_s: float = 5.0) -> float:
        """Poll until the (periodically flushed) counter reaches ``at_least``."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.statistic(name)
            if value >= at_least or time.monotonic() > deadline:
                return value
            time.sleep(0.02)

    def close(self) -> None:
        """Drain and release the instance."""
        try:
            self.client.close()
            self.hosted.drain()
        finally:
            self.hosted.close()

    def __enter__(self) -> HttpHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_EMPTY_TOML: Path | None = None


def _empty_toml() -> Path:
    # An explicit empty file keeps any ./pm.toml of the working directory out of tests.
    global _EMPTY_TOML
    if _EMPTY_TOML is None or not _EMPTY_TOML.exists():
        handle, name = tempfile.mkstemp(prefix="pm-test-", suffix=".toml")
        os.close(handle)
        _EMPTY_TOML = Path(name)
    return _EMPTY_TOML


class UvicornServer:
    """Serve an ASGI app with uvicorn on a free loopback port in a thread."""

    def __init__(self, app: Any, host: str = "127.0.0.1") -> None:
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", log_config=None
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, name="pm-http-test", daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> UvicornServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
