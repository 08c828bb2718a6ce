"""Shared pytest configuration: service fixtures live in tests/kit and register here."""

from __future__ import annotations

pytest_plugins = ["tests.kit.postgres", "tests.kit.redis_server"]
