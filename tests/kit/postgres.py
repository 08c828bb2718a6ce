"""Throwaway PostgreSQL servers for tests and benchmarks, started from the installed binaries.

One server per pytest-xdist worker (session scope): its own data directory, free TCP port and
unix socket directory under /tmp, default settings (fsync on). As root the server runs as
the ``postgres`` user via ``runuser``. Missing binaries skip the tests with the reason,
unless ``PM_REQUIRE_SERVICES=1`` turns that into a failure.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def find_bindir() -> Path | None:
    """The directory holding initdb, postgres and pg_ctl, or None."""
    on_path = shutil.which("pg_ctl")
    candidates = []
    if on_path and shutil.which("initdb") and shutil.which("postgres"):
        candidates.append(Path(on_path).parent)
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for directory in candidates:
        if all((directory / name).exists() for name in ("initdb", "postgres", "pg_ctl")):
            return directory
    return None


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PgServer:
    """A PostgreSQL server in a temporary directory; ``stop``/``start`` for fault tests."""

    def __init__(self, bindir: Path, *, fsync: bool = True) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="pm-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.user = "pm"
        self.fsync = fsync
        self._run_as: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            account = "postgres"
            try:
                pw = pwd.getpwnam(account)
            except KeyError as exc:
                raise RuntimeError("running as root needs a 'postgres' user") from exc
            if runuser is None:
                raise RuntimeError("running as root needs runuser")
            self._run_as = [runuser, "-u", account, "--"]
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.sockets.mkdir()
        if self._run_as:
            pw = pwd.getpwnam("postgres")
            os.chown(self.sockets, pw.pw_uid, pw.pw_gid)
        self._cmd(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            self.user,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",  # only initdb's own flush; the server runs with fsync on
        )

    def _cmd(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._run_as, str(self.bindir / tool), *args],
            check=check,
            capture_output=True,
            text=True,
            cwd=self.root,
        )

    @property
    def dsn(self) -> str:
        """SQLAlchemy URL of the default database."""
        return self.url("postgres")

    def url(self, database: str) -> str:
        """SQLAlchemy URL of ``database`` on this server."""
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start (or restart) the server and wait until it accepts connections."""
        opts = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1"
        if not self.fsync:
            opts += " -c fsync=off"
        result = self._cmd(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            opts,
            check=False,
        )
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"postgres did not start: {result.stderr}\n{log[-2000:]}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``, or ``immediate`` = crash-like)."""
        self._cmd("pg_ctl", "stop", "-w", "-D", str(self.data), "-m", mode, check=False)

    def restart(self) -> None:
        """Stop and start again."""
        self.stop()
        self.start()

    def is_running(self) -> bool:
        """pg_ctl status says the postmaster runs."""
        return self._cmd("pg_ctl", "status", "-D", str(self.data), check=False).returncode == 0

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        if not self.is_running():  # a fault test may have left it stopped
            self.start()
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        """Stop the server and remove its directory."""
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def require_or_skip(reason: str) -> None:
    """Skip with ``reason``, or fail when PM_REQUIRE_SERVICES=1."""
    if os.environ.get("PM_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (PM_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


@contextlib.contextmanager
def running_server(*, fsync: bool = True) -> Iterator[PgServer]:
    """A started throwaway server, destroyed afterwards (benchmarks use this too)."""
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries (initdb, postgres, pg_ctl) not found")
    server = PgServer(bindir, fsync=fsync)
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One throwaway PostgreSQL server per test worker."""
    if find_bindir() is None:
        require_or_skip("PostgreSQL binaries (initdb/postgres/pg_ctl) not installed")
    started = time.monotonic()
    with running_server() as server:
        server.started_in_s = time.monotonic() - started  # type: ignore[attr-defined]
        yield server


@pytest.fixture()
def pg_url(pg_server: PgServer) -> str:
    """A fresh empty database on the worker's server."""
    if not pg_server.is_running():
        pg_server.start()
    return pg_server.create_database()
