"""nox sessions: tests, tests_integration, lint, typecheck, bench."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite (unit, contract, integration); services start from local binaries."""
    session.install("-e", ".[dev]")
    session.run("python", "-m", "pytest", "-n", "2", *session.posargs)


@nox.session
def tests_unit(session: nox.Session) -> None:
    """Pure-core unit tests only (fast, no servers)."""
    session.install("-e", ".[dev]")
    session.run("python", "-m", "pytest", "tests/unit", *session.posargs)


@nox.session
def tests_integration(session: nox.Session) -> None:
    """Contract and integration suites against real PostgreSQL, Redis and HTTP servers."""
    session.install("-e", ".[dev]")
    session.run("python", "-m", "pytest", "tests/contract", "tests/integration", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over src, tests and this file."""
    session.install("-e", ".[dev]")
    session.run("mypy", "src", "tests", "noxfile.py", "benchmarks", "docs")


@nox.session
def bench(session: nox.Session) -> None:
    """Every benchmark script; each prints its figures, the last line one JSON object."""
    session.install("-e", ".[dev]")
    import pathlib

    for script in sorted(pathlib.Path("benchmarks").glob("*.py")):
        session.run("python", str(script), *session.posargs)
