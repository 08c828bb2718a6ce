"""One exception hierarchy for pm, rooted in PmError.

Leaves also subclass the builtin that fits, so callers can catch what they mean
(``except ValueError`` for bad input, ``except TimeoutError`` for waits).
"""

from __future__ import annotations


class PmError(Exception):
    """Root of every error pm raises on purpose."""


class ConfigError(PmError, ValueError):
    """Configuration is invalid; ``errors`` lists every bad field as (field, message)."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors))


class InvalidSignal(PmError, ValueError):
    """A signal failed validation; ``errors`` holds every FieldError."""

    def __init__(self, errors: tuple[object, ...]) -> None:
        self.errors = errors
        super().__init__(f"invalid signal ({len(errors)} field error(s))")


class InputError(PmError, ValueError):
    """A backtest input file cannot be read at all (missing file, bad INSTRUMENT=path)."""


class StaleVersionError(PmError, RuntimeError):
    """An optimistic version check failed: someone else committed first; re-read and retry."""


class FencedError(PmError, RuntimeError):
    """A deposed leader tried a fenced write: its epoch is no longer current."""


class ClaimLost(PmError, RuntimeError):
    """A deposed signal owner tried to write: its claim epoch was taken over."""


class DuplicateFingerprint(PmError, ValueError):
    """A signal with this fingerprint is already stored."""


class DatabaseUnavailable(PmError, ConnectionError):
    """The database cannot be reached (after the configured retries)."""


class SchemaMismatch(PmError, RuntimeError):
    """The database schema revision is not the code's head (run ``pm migrate``)."""


class NotInitialised(PmError, RuntimeError):
    """The portfolio row does not exist (run ``pm init``)."""


class RateBudgetExceeded(PmError, TimeoutError):
    """No broker rate token was granted within PM_RATE_MAX_WAIT_MS."""


class CoordinationUnavailable(PmError, ConnectionError):
    """The coordination store (Redis) cannot be reached."""


class DuplicateKey(PmError, ValueError):
    """A row with this unique key (client_order_id, broker order id) is already stored."""


class UnknownStatistic(PmError, ValueError):
    """A statistics counter name outside service.md section 11 was written."""


class CommitUnknown(DatabaseUnavailable):
    """The connection dropped while COMMIT was in flight: re-read by idempotency key first."""
