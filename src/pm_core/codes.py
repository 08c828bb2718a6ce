"""Reason codes: their outcomes and message templates (domain 6.4, 13.5)."""

from __future__ import annotations

from pm_core.model import Code


def render(code: Code) -> str:
    """The human message of a reason code, its placeholders filled from ``code.params``."""
    raise NotImplementedError


def outcome_of(code: str) -> str:
    """The outcome a reason code implies (blocked, rejected, failed, duplicate, warning, event)."""
    raise NotImplementedError


def format_float(value: float) -> str:
    """Shortest round-trip decimal with a decimal point: 53000.0, 0.333 (domain 13.5)."""
    raise NotImplementedError
