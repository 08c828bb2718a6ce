"""Throwaway redis-server processes for tests (never the machine's own Redis on 6379).

``redis_server`` is one server per pytest session, i.e. one per xdist worker; tests that kill
or restart Redis take ``redis_server_factory`` and get their own. Without the binary the
tests skip, unless ``PM_REQUIRE_SERVICES=1`` makes that a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis


def find_redis_binary() -> str | None:
    """The redis-server binary on PATH, if any."""
    return shutil.which("redis-server")


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process on 127.0.0.1, without persistence, that tests may kill."""

    def __init__(self, binary: str, workdir: Path, port: int | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start (or start again on the same port) and wait until it answers PING."""
        if self.process is not None and self.process.poll() is None:
            return
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        log = open(self.workdir / f"redis-{self.port}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start (port {self.port})")
            try:
                probe = redis.Redis(
                    host="127.0.0.1", port=self.port, socket_timeout=0.2, socket_connect_timeout=0.2
                )
                try:
                    if probe.ping():
                        return
                finally:
                    probe.close()
            except redis.RedisError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not answer within {timeout_s}s")

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        """Kill and start again, empty, on the same port."""
        self.kill()
        self.start()

    def client(self, timeout_ms: int = 250) -> redis.Redis:
        """A client with explicit socket timeouts."""
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_timeout=timeout_ms / 1000,
            socket_connect_timeout=timeout_ms / 1000,
        )


def _require_binary() -> str:
    binary = find_redis_binary()
    if binary is None:
        message = "redis-server binary not installed (apt-get install redis-server)"
        if os.environ.get("PM_REQUIRE_SERVICES") == "1":
            pytest.fail(message + " and PM_REQUIRE_SERVICES=1")
        pytest.skip(message)
    return binary


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A shared throwaway redis-server for this worker: flush what you use, never kill it."""
    binary = _require_binary()
    with tempfile.TemporaryDirectory(prefix="pm-redis-") as workdir:
        server = RedisServer(binary, Path(workdir))
        server.start()
        try:
            yield server
        finally:
            server.kill()


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[[], RedisServer]]:
    """Start private redis-servers (for kill/restart tests); all are killed afterwards."""
    binary = _require_binary()
    servers: list[RedisServer] = []
    with tempfile.TemporaryDirectory(prefix="pm-redis-") as workdir:

        def make() -> RedisServer:
            server = RedisServer(binary, Path(workdir))
            server.start()
            servers.append(server)
            return server

        try:
            yield make
        finally:
            for server in servers:
                server.kill()
