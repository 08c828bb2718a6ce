"""Start-up connection with the service.md 5 backoff: try, wait 1, 2, 4 s, then give up."""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pm_adapters.sql.redact import redact_text, redact_url
from pm_adapters.sql.retry import DbSettings, create_engine
from pm_core.errors import DatabaseUnavailable


def unreachable_message(url: str, error: BaseException) -> str:
    """``database unreachable at <url without password>: <error>`` (service.md 13)."""
    orig = getattr(error, "orig", None) or error
    lines = str(orig).strip().splitlines()
    detail = lines[0] if lines else orig.__class__.__name__
    return f"database unreachable at {redact_url(url)}: {redact_text(detail, url)}"


def connect(
    url: str,
    settings: DbSettings | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, float, str], None] | None = None,
) -> Engine:
    """An Engine whose database answered ``SELECT 1``; DatabaseUnavailable after the backoff."""
    s = settings or DbSettings()
    engine = create_engine(url, s)
    delays = s.connect_backoff_s
    last: BaseException | None = None
    for attempt in range(len(delays) + 1):
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return engine
        except sa.exc.DBAPIError as exc:
            last = exc
            if attempt < len(delays):
                if on_retry is not None:
                    on_retry(attempt + 1, delays[attempt], unreachable_message(url, exc))
                sleep(delays[attempt])
    engine.dispose()
    assert last is not None
    raise DatabaseUnavailable(unreachable_message(url, last)) from None
