"""Generate the PM_* variable tables of docs/configuration.md from the settings module.

Names, defaults, types and bounds come from ``pm_adapters.bootstrap.settings`` (the attrs
fields of ``Settings`` and the module's variable table); only the one-line meanings and the
grouping are written here. A setting without a meaning, or a meaning for a setting that no
longer exists, is an error, so the reference cannot silently fall behind the code.

    python docs/gen_config_reference.py            # rewrite the tables in place
    python docs/gen_config_reference.py --check    # exit 1 if docs/configuration.md is stale
    python docs/gen_config_reference.py --stdout   # print the tables
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from pm_adapters.bootstrap import settings as settings_module
from pm_adapters.bootstrap.settings import SETTING_NAMES, Secret, Settings, variable_name

DOC = Path(__file__).with_name("configuration.md")


def begin_marker(block: str) -> str:
    """The line opening a generated block."""
    return f"<!-- BEGIN generated {block}: docs/gen_config_reference.py; do not edit by hand -->"


def end_marker(block: str) -> str:
    """The line closing a generated block."""
    return f"<!-- END generated {block} -->"


# Settings the loader accepts but no code reads yet; each is listed in the Known gaps section.
NO_EFFECT_YET = frozenset(
    {
        "cache_notice_max_age_ms",
        "rollover_interval_s",
    }
)

# (group title, [(setting, meaning), ...]); groups render in this order.
GROUPS: Sequence[tuple[str, Sequence[tuple[str, str]]]] = (
    (
        "Stores and broker",
        (
            (
                "database_url",
                "SQLAlchemy URL of the state of record: `sqlite:///path` (one host) or "
                "`postgresql+psycopg://user@host/db`; `memory://` keeps everything in the "
                "process (tests, library use).",
            ),
            (
                "redis_url",
                "Redis for coordination (L2 locks, leader key, heartbeats, rate counters). "
                "Unset: database-only mode, always.",
            ),
            ("redis_prefix", "Prefix of every Redis key; give each deployment its own."),
            (
                "broker",
                "`paper` fills every order at once in the process; `openalgo` sends to "
                "OpenAlgo. Unset: `openalgo` if `PM_OPENALGO_URL` or `PM_OPENALGO_API_KEY` "
                "is given, else `paper`.",
            ),
            ("openalgo_url", "Base URL of the OpenAlgo server (`/api/v1/<endpoint>` is added)."),
            ("openalgo_api_key", "OpenAlgo API key; required when the broker is `openalgo`."),
            (
                "openalgo_strategy",
                "Sent as `strategy` = `<value>:<client_order_id>` on every order write, so "
                "OpenAlgo's logs name the intent.",
            ),
            (
                "openalgo_expected_mode",
                "OpenAlgo mode pm requires (`analyze` sandbox or `live`); on a mismatch no "
                "order is sent and signals fail `broker_mode_mismatch`.",
            ),
        ),
    ),
    (
        "HTTP, authentication, logging",
        (
            (
                "webhook_secret",
                "Webhook secret(s), comma list to rotate. Sent as body field `secret` or "
                "header `X-PM-Token`. Unset: no authentication, loopback bind only.",
            ),
            (
                "webhook_hmac",
                "`optional`: an `X-PM-Signature: sha256=<hex HMAC-SHA256 of the body>` header, "
                "when present, must verify (and then suffices); `required`: every request "
                "must carry a valid one. The key is the webhook secret.",
            ),
            ("webhook_max_body", "Largest accepted webhook body in bytes (413 above)."),
            (
                "webhook_rate",
                "Token bucket per source, `requests/seconds`; `0` turns it off. A failed "
                "authentication costs 5 tokens.",
            ),
            (
                "trusted_proxies",
                "Comma list of proxy addresses/networks whose `X-Forwarded-For` is believed "
                "when finding the source of a request.",
            ),
            ("admin_token", "Bearer token for `GET /positions` and `GET /status`; unset: 404."),
            ("metrics_token", "Bearer token for `GET /metrics`; unset: open."),
            ("http_host", "Bind address. A non-loopback address needs `PM_WEBHOOK_SECRET`."),
            ("http_port", "Bind port."),
            (
                "instance_name",
                "First part of the instance id `<name>-<8 hex>` (new per process).",
            ),
            ("log_level", "`DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL`."),
            ("log_format", "`json` (one object per line) or `console`."),
        ),
    ),
    (
        "Signal processing",
        (
            ("l1_size", "Fingerprints remembered per process (L1 duplicate layer)."),
            ("signal_workers", "Worker threads that process signals."),
            (
                "thread_switch_ms",
                "`pm serve`: Python's thread switch interval (the interpreter default is 5). A"
                " worker that holds the portfolio lock waits at most this long for the"
                " interpreter after each database answer, so the lock is held shorter.",
            ),
            (
                "signal_queue",
                "Signals that may wait for a worker; beyond workers + queue: 503 "
                "`overloaded`, `Retry-After: 1`.",
            ),
            (
                "response_deadline_ms",
                "How long `POST /webhook` waits for the outcome before answering 202 "
                "`in_progress` (processing goes on), or 503 `overloaded` with "
                "`Retry-After: 1` if the signal is not stored yet.",
            ),
            (
                "market_data_timeout_ms",
                "Budget for the quotes and funds a decision may use, read before T1; what "
                "is missing takes its fallback.",
            ),
            (
                "signal_order_style",
                "`market` orders for signal legs, or a `ladder` of LIMIT orders (domain 9.7; "
                "steps, wait and MARKET fallback from the `rollover_*` settings). A ladder "
                "prices from the broker's quote for the leg: the paper broker quotes nothing "
                "unless told, so there a leg fails `quote_unavailable`.",
            ),
            ("signal_lock_ttl_ms", "Time to live of the L2 Redis lock on a fingerprint."),
            (
                "lock_wait_ms",
                "L2 lock held by another instance: wait up to this long for its stored "
                "answer, then fall through to the database (L3).",
            ),
            ("lock_poll_ms", "Poll interval of that wait."),
            ("cache_notice_max_age_ms", "Age limit of cached views for `/status`."),
            (
                "max_resume_age_s",
                "Recovery abandons an entry or pyramid none of whose orders was sent when "
                "it is older than this (`abandoned_after_crash`).",
            ),
            (
                "max_queue_age_s",
                "Entries and pyramids that waited queued longer are rejected "
                "`stale_in_queue` when their turn comes; replaces `[portfolio] "
                "max_queue_age_s` in the service.",
            ),
            (
                "exit_leg_attempts",
                "Attempts for a failed exit leg (each a new intent, attempt + 1).",
            ),
            ("exit_leg_window_s", "Time window for those attempts."),
        ),
    ),
    (
        "Order execution",
        (
            (
                "send_deadline_ms",
                "A send refused before reaching OpenAlgo (429, connection refused) is "
                "re-sent only within this many ms of its first claim.",
            ),
            (
                "fill_poll_ms",
                "`first,max`: order status is polled after `first` ms, the interval doubling "
                "up to `max` ms.",
            ),
            (
                "fill_timeout_s",
                "An order not terminal after this long is cancelled and its final fill read.",
            ),
            (
                "not_found_after_s",
                "An `unknown` send with no match in the order or trade book this long after "
                "it was sent, over at least two readable look-ups, becomes `not_found` (never "
                "placed).",
            ),
            ("lookup_spacing_s", "Pause between two book look-ups for an `unknown` send."),
            (
                "held_result_retry_ms",
                "A held signal (its database write failed after the reservation committed, or "
                "an order's outcome is still unknown) is re-read and finished by its instance "
                "at this interval.",
            ),
            (
                "held_result_max_s",
                "How long the instance keeps trying while the database stays unusable; then the "
                "signal waits for recovery. Orders the broker has yet to tell about are "
                "followed for as long as that takes.",
            ),
        ),
    ),
    (
        "OpenAlgo client and rate budget",
        (
            ("openalgo_connect_timeout_s", "TCP connect timeout."),
            ("openalgo_read_timeout_s", "Timeout of read calls (books, quotes, funds, ping)."),
            (
                "openalgo_order_timeout_s",
                "Timeout of order writes; a timeout after connecting makes the send `unknown`.",
            ),
            (
                "openalgo_read_retries",
                "Attempts per read (connect errors, timeouts, 429, 5xx are retried).",
            ),
            ("openalgo_read_backoff", "Seconds between read attempts, last value repeated."),
            ("openalgo_max_modifications", "Limit of `modifyorder` calls per order."),
            (
                "openalgo_book_poll_ms",
                "While over three orders are polled at once, their status comes from one "
                "shared `orderbook` read at most this old (an order's first read, and one just "
                "modified or cancelled, is still asked alone).",
            ),
            (
                "openalgo_match_window_s",
                "Book rows may be this many seconds older than `sent_at` and still match an "
                "`unknown` send.",
            ),
            (
                "openalgo_mode_check_s",
                "How long a checked OpenAlgo mode is trusted before `analyzer` is asked again.",
            ),
            (
                "openalgo_order_rate",
                "Order writes per second for the whole cluster (Redis counters; without Redis "
                "split over live instances).",
            ),
            ("openalgo_read_rate", "Reads per second for the whole cluster, likewise."),
            (
                "rate_max_wait_ms",
                "Longest wait for one rate token. An order that gets none stays `pending` and "
                "asks again while its alert is younger than `PM_MAX_RESUME_AGE_S`; then it "
                "fails unsent.",
            ),
            ("rate_retry_ms", "Pause before an order asks again for a refused rate token."),
        ),
    ),
    (
        "Leadership, heartbeats, Redis failure",
        (
            ("leader_lease_ms", "Leader lease; must be at least 3 x `PM_LEADER_RENEW_MS`."),
            ("leader_renew_ms", "Lease renewal interval."),
            ("election_tick_ms", "How often a follower tries to become leader."),
            ("heartbeat_ms", "Instance heartbeat interval (Redis key lives 3 x this)."),
            ("db_heartbeat_s", "Interval of the heartbeat written to `instance_metadata`."),
            (
                "instance_stale_s",
                "An instance whose database heartbeat is older (and whose Redis key is gone) "
                "is dead: its signals are taken over.",
            ),
            ("redis_timeout_ms", "Timeout of each Redis call."),
            ("redis_failures", "Consecutive Redis failures that switch to database-only mode."),
            ("redis_cooldown_s", "Wait in database-only mode before probing Redis again."),
            ("redis_probes", "Successful probes in a row that switch back to normal mode."),
            ("redis_probe_ms", "Interval between probes."),
        ),
    ),
    (
        "Database",
        (
            (
                "db_connect_retries",
                "Retries of the first connection; then exit 3 (`database unreachable`).",
            ),
            ("db_connect_backoff", "Seconds before each retry, last value repeated."),
            ("db_connect_timeout_s", "Connect timeout per attempt."),
            ("db_pool_size", "SQLAlchemy pool size (PostgreSQL)."),
            ("db_max_overflow", "Extra connections above the pool size."),
            ("db_pool_recycle_s", "Connections older than this are replaced."),
            (
                "db_ping_idle_s",
                "A pooled connection idle longer than this is pinged before use"
                " (0: always); a busy pool skips the round trip.",
            ),
            (
                "tx_attempts",
                "Attempts of a transaction that hit a conflict, a stale version or a lost "
                "connection.",
            ),
            ("tx_backoff_ms", "`base,cap`: full-jitter backoff base x 2^n, capped."),
            (
                "tx_budget_ms",
                "`request,background`: total retry time on the webhook path and in "
                "background work.",
            ),
            ("pg_statement_timeout_ms", "PostgreSQL `statement_timeout`."),
            ("pg_lock_timeout_ms", "PostgreSQL `lock_timeout`."),
            ("pg_idle_tx_timeout_s", "PostgreSQL `idle_in_transaction_session_timeout`."),
            ("sqlite_busy_timeout_ms", "SQLite busy timeout."),
            (
                "ready_db_timeout_ms",
                "`GET /ready` is 503 `database_unavailable` when the database has not answered "
                "within this long (a hanging database included).",
            ),
        ),
    ),
    (
        "Start-up, shutdown, leader jobs",
        (
            (
                "shutdown_timeout_s",
                "On SIGTERM, wait this long for in-flight signals; the rest is taken over later.",
            ),
            (
                "drain_grace_s",
                "On SIGTERM, `/ready` turns 503 at once but webhooks are still taken for "
                "this long (lets the load balancer notice); then new ones get 503 `draining`.",
            ),
            (
                "reconcile_on_startup",
                "Reconcile with the broker's position book at start (OpenAlgo only).",
            ),
            (
                "reconcile_interval_s",
                "Leader reconciliation interval, while any instrument's session is open "
                "(OpenAlgo only).",
            ),
            (
                "recovery_broker_budget_s",
                "Broker time recovery gives unknown orders in all; the rest stay held and are "
                "looked up in the background.",
            ),
            (
                "recovery_strict",
                "`pm serve` exits 6 instead of serving when recovery reports warnings.",
            ),
            (
                "sweep_interval_s",
                "Leader sweep: marks stale instances `crashed`, takes over their signals.",
            ),
            ("lock_cleanup_s", "Leader job releasing dead instances' L2 locks."),
            ("rollover_interval_s", "Interval of the scheduled rollover job."),
            (
                "stats_flush_s",
                "Flush interval of buffered statistics counters (signals received, L1/L2/L3 "
                "duplicates, invalid requests).",
            ),
            (
                "stats_export_s",
                "Interval of the leader's statistics export: the `pm_stat_*` gauges show the "
                "counters as of the last export.",
            ),
            (
                "retention_at",
                "Daily retention time, local time of `[portfolio] timezone` (SQL stores).",
            ),
            ("retention_batch", "Rows deleted per retention transaction."),
            (
                "retention_archive_dir",
                "If set, each retention batch is first written here as gzip JSON lines.",
            ),
        ),
    ),
)

_TYPES = {
    "str": "text",
    "str | None": "text",
    "int": "integer",
    "float": "number",
    "bool": "true/false",
    "Secret | None": "secret",
    "tuple[Secret, ...]": "secrets, comma list",
    "tuple[str, ...]": "comma list",
    "tuple[float, ...]": "numbers, comma list",
    "tuple[int, int]": "two integers `a,b`",
    "tuple[int, float] | None": "`n/seconds` or `0`",
    "dt.time": "`HH:MM`",
    "Path | None": "directory",
}


@attrs.frozen
class Row:
    """One variable of the reference."""

    name: str
    variable: str
    default: str
    kind: str
    meaning: str
    file_ok: bool


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _choices(parse: Callable[[Any], Any]) -> tuple[str, ...] | None:
    """The allowed values of a ``_choice`` parser (held in its closure)."""
    for cell in getattr(parse, "__closure__", None) or ():
        value = cell.cell_contents
        if isinstance(value, tuple) and value and all(isinstance(v, str) for v in value):
            return value
    return None


def render_default(name: str, value: Any) -> str:
    """A default as an operator would type it."""
    if name == "webhook_rate" and isinstance(value, tuple):
        return f"`{value[0]}/{_number(value[1])}`"
    if value is None or value == ():
        return "unset"
    if isinstance(value, bool):
        return f"`{'true' if value else 'false'}`"
    if isinstance(value, int | float):
        return f"`{_number(value)}`"
    if isinstance(value, tuple):
        items = (_number(v) if isinstance(v, int | float) else str(v) for v in value)
        return "`" + ",".join(items) + "`"
    if isinstance(value, dt.time):
        return f"`{value.strftime('%H:%M')}`"
    if isinstance(value, Secret):
        return "(secret)"
    return f"`{value}`"


def _default_of(field: attrs.Attribute[Any]) -> str:
    default = field.default
    factory = getattr(default, "factory", None)  # an attrs.Factory
    if callable(factory):
        if getattr(factory, "__name__", "") == "gethostname":
            return "host name"
        return render_default(field.name, factory())
    return render_default(field.name, default)


def _kind(field: attrs.Attribute[Any], var: Any) -> str:
    type_text = str(field.type)
    choices = _choices(var.parse)
    kind = " / ".join(f"`{c}`" for c in choices) if choices else _TYPES.get(type_text, type_text)
    minimum = var.minimum
    if minimum is not None:
        kind += " > 0" if 0 < minimum < 1 else f" >= {_number(minimum)}"
    return kind


def rows() -> list[tuple[str, list[Row]]]:
    """The reference, group by group; raises ValueError when meanings and settings differ."""
    fields = {f.name: f for f in attrs.fields(Settings)}
    table: dict[str, Any] = settings_module._VARS
    described = [name for _, entries in GROUPS for name, _ in entries]
    missing = [n for n in SETTING_NAMES if n not in described]
    unknown = [n for n in described if n not in SETTING_NAMES]
    doubled = sorted({n for n in described if described.count(n) > 1})
    if missing or unknown or doubled:
        raise ValueError(
            f"meanings out of date: missing {missing}, unknown {unknown}, doubled {doubled}"
        )
    out: list[tuple[str, list[Row]]] = []
    for title, entries in GROUPS:
        group: list[Row] = []
        for name, meaning in entries:
            var = table[name]
            text = meaning + (" **No effect yet** (Known gaps)." if name in NO_EFFECT_YET else "")
            group.append(
                Row(
                    name=name,
                    variable=variable_name(name),
                    default=_default_of(fields[name]),
                    kind=_kind(fields[name], var),
                    meaning=text,
                    file_ok=bool(var.secret or var.file_ok),
                )
            )
        out.append((title, group))
    return out


def render_variables() -> str:
    """The PM_* tables, one per group."""
    lines: list[str] = []
    for title, group in rows():
        lines += [f"### {title}", ""]
        lines += ["| Variable | `[pm]` key | Default | Type | Meaning |", "|---|---|---|---|---|"]
        for r in group:
            variable = f"`{r.variable}`" + (f"<br>`{r.variable}_FILE`" if r.file_ok else "")
            lines.append(f"| {variable} | `{r.name}` | {r.default} | {r.kind} | {r.meaning} |")
        lines.append("")
    return "\n".join(lines).rstrip("\n")


# Meanings of the domain tables (domain spec 2.1, 2.3); defaults are read from pm_core.config.
PORTFOLIO_MEANINGS: dict[str, str] = {
    "initial_capital": "Starting closed equity (₹); `pm init` stores it once, then the stored "
    "value wins.",
    "timezone": "Zone of naive timestamps, exchange dates, sessions and `PM_RETENTION_AT`.",
    "equity_mode": "Sizing equity: `closed`, `open` or `blended`.",
    "blended_unrealized_weight": "Share of unrealized P&L in `blended` equity, 0..1.",
    "equity_source": "`portfolio` (own books) or `broker` (OpenAlgo funds; portfolio equity "
    "when funds cannot be read).",
    "sizing_mode": "`tom_basso` (risk, volatility, margin) or `as_signalled` (the alert's `lots`).",
    "max_portfolio_risk_percent": "Base entries blocked above this total risk, % of equity.",
    "max_portfolio_vol_percent": "Base entries blocked above this total volatility, % of equity.",
    "max_margin_utilization_percent": "Share of equity usable as margin.",
    "pyramid_risk_block_percent": "Pyramids blocked above this total risk, %.",
    "pyramid_vol_block_percent": "Pyramids blocked above this total volatility, %.",
    "use_1r_gate": "Pyramids need the price to have moved more than 1R.",
    "max_layers": "Labels `Long_1`..`Long_<max_layers>`.",
    "exit_on_stop_hit": "Close positions whose stop is hit while marking.",
    "peel_off_report": "Report lots to peel off (`pm status`, `/status`).",
    "enable_peel_off_orders": "Send peel-off orders (reported only when false).",
    "pnl_price_source": "P&L from the `signal` price or the broker `fill`.",
    "duplicate_retention_days": "Days signal rows are kept (retention) for duplicate checks.",
    "near_duplicate_window_s": "Same instrument, type and label within this window is a "
    "duplicate; 0 disables.",
    "reconciliation_fail_closed": "Block entries on instruments whose broker book differs.",
    "enable_auto_rollover": "Scheduled rolls (manual rolls ignore it).",
    "rollover_initial_buffer_pct": "First limit price of a ladder, % beyond LTP.",
    "rollover_increment_pct": "Added per ladder step, %.",
    "rollover_max_retries": "Ladder modifications before cancel (and market fallback).",
    "rollover_retry_interval_s": "Wait between ladder steps.",
    "rollover_market_fallback": "Send MARKET for the remainder after the ladder.",
    "max_queue_age_s": "Entries and pyramids queued longer are rejected `stale_in_queue`. "
    "The service uses `PM_MAX_QUEUE_AGE_S` instead (Known gaps).",
}

INSTRUMENT_MEANINGS: dict[str, str] = {
    "exchange": "OpenAlgo order exchange.",
    "kind": "`synthetic_future` (long CE + short PE, same strike) or `future`.",
    "symbol_root": "OpenAlgo symbol root.",
    "quote_unit": "Underlying units per quoted price; point value = lot size / quote_unit.",
    "lot_size_history": "Lot sizes; a contract uses the entry with the latest "
    "`effective_from` <= its expiry (no date = always).",
    "order_quantity_unit": "Broker quantity in `units` (lots x lot size) or `lots`.",
    "tick_size": "Limit-price tick.",
    "margin_per_lot": "Margin per lot, ₹.",
    "initial_risk_percent": "Risk budget of a base entry, % of equity (Lot-R).",
    "initial_vol_percent": "Volatility budget of a base entry, % of equity (Lot-V).",
    "ongoing_risk_percent": "Peel-off risk limit, %.",
    "ongoing_vol_percent": "Peel-off volatility limit, %.",
    "initial_atr_mult": "ATR multiple of the fallback stop.",
    "trailing_atr_mult": "ATR multiple of the trailing stop.",
    "fallback_atr": "ATR used when a position has none.",
    "max_pyramids": "Open pyramids allowed.",
    "atr_pyramid_spacing": "ATRs the price must move since the last pyramid.",
    "pyramid_base_ratio": "Pyramid lots cap as a share of the base's lots (B).",
    "pyramid_profit_fraction": "Share of the base's profit a pyramid may risk (C).",
    "expiry_rule": "Monthly expiry: `last_weekday` (`MON`..`SUN`) or `day_of_month` (1..31, "
    "clamped to the month's last day); moved back over weekends and full holidays.",
    "calendar": "Calendar (sessions, holidays) under `[calendars]`.",
    "rollover_days": "Roll when fewer days than this remain to expiry.",
    "strike_interval": "ATM strike grid (required for `synthetic_future`).",
    "freeze_quantity": "Largest broker quantity per order; larger orders split.",
    "expiry_overrides": "Contract month `YYYY-MM` -> expiry date; always wins.",
    "reference_quotes": "Strike reference quotes in order (`{next}`, `{cur}` = expiries).",
    "enabled": "False: entries and pyramids rejected `instrument_disabled`; exits still run.",
    "product": "OpenAlgo product.",
}


# Domain keys that the running service does not act on yet (each is in Known gaps).
_ROLL_NOTE = " Rolls are planned (`pm rollover`), not executed yet."
_LADDER_NOTE = (
    " Used by signal legs under `PM_SIGNAL_ORDER_STYLE=ladder`; rolls are planned"
    " (`pm rollover`), not executed yet."
)
DOMAIN_NOTES: dict[str, str] = {
    "enable_peel_off_orders": " **No effect yet**: no peel-off order is ever sent.",
    "enable_auto_rollover": _ROLL_NOTE,
    "rollover_initial_buffer_pct": _LADDER_NOTE,
    "rollover_increment_pct": _LADDER_NOTE,
    "rollover_max_retries": _LADDER_NOTE,
    "rollover_retry_interval_s": _LADDER_NOTE,
    "rollover_market_fallback": _LADDER_NOTE,
}


def toml_value(value: Any) -> str:
    """A configuration value in TOML inline syntax."""
    from pm_core.config import WEEKDAYS, ExpiryRule, LotSizeEntry, ReferenceQuote

    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dt.date):
        return f'"{value.isoformat()}"'
    if isinstance(value, ExpiryRule):
        shown = f'"{WEEKDAYS[value.value]}"' if value.kind == "last_weekday" else value.value
        return f'{{kind = "{value.kind}", value = {shown}}}'
    if isinstance(value, LotSizeEntry):
        when = value.effective_from
        date = f'effective_from = "{when.isoformat()}", ' if when is not None else ""
        return f"{{{date}lot_size = {value.lot_size}}}"
    if isinstance(value, ReferenceQuote):
        return f'{{symbol = "{value.symbol}", exchange = "{value.exchange}"}}'
    if isinstance(value, tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + "}"
    return str(value)


def _check_meanings(kind: str, meanings: Mapping[str, str], names: Sequence[str]) -> None:
    missing = [n for n in names if n not in meanings]
    unknown = [n for n in meanings if n not in names]
    if missing or unknown:
        raise ValueError(f"{kind} meanings out of date: missing {missing}, unknown {unknown}")


def render_portfolio() -> str:
    """The ``[portfolio]`` keys with their defaults."""
    from pm_core.config import PortfolioConfig

    fields = attrs.fields(PortfolioConfig)
    _check_meanings("[portfolio]", PORTFOLIO_MEANINGS, [f.name for f in fields])
    lines = ["| Key | Default | Meaning |", "|---|---|---|"]
    for f in fields:
        meaning = PORTFOLIO_MEANINGS[f.name] + DOMAIN_NOTES.get(f.name, "")
        lines.append(f"| `{f.name}` | `{toml_value(f.default)}` | {meaning} |")
    return "\n".join(lines)


def render_instruments() -> str:
    """The ``[instruments.<ID>]`` keys with the shipped BANK_NIFTY and GOLD_MINI values."""
    from pm_core.config import InstrumentConfig, default_config

    names = [f.name for f in attrs.fields(InstrumentConfig) if f.name != "id"]
    _check_meanings("[instruments]", INSTRUMENT_MEANINGS, names)
    shipped = default_config().instruments
    ids = list(shipped)
    lines = [
        "| Key | " + " | ".join(f"`{i}`" for i in ids) + " | Meaning |",
        "|---|" + "---|" * len(ids) + "---|",
    ]
    for name in names:
        cells = []
        for inst_id in ids:
            value = getattr(shipped[inst_id], name)
            empty = value is None or value == () or (isinstance(value, Mapping) and not value)
            cells.append("–" if empty else f"`{toml_value(value)}`")
        lines.append(f"| `{name}` | " + " | ".join(cells) + f" | {INSTRUMENT_MEANINGS[name]} |")
    return "\n".join(lines)


BLOCKS: dict[str, Callable[[], str]] = {
    "variables": render_variables,
    "portfolio": render_portfolio,
    "instruments": render_instruments,
}


def updated(text: str) -> str:
    """``text`` with every generated block rewritten from the code."""
    for name, make in BLOCKS.items():
        begin, end = begin_marker(name), end_marker(name)
        start = text.find(begin)
        stop = text.find(end)
        if start < 0 or stop < start:
            raise ValueError(f"{DOC.name}: markers of the {name!r} block not found")
        text = text[:start] + begin + "\n\n" + make() + "\n\n" + text[stop:]
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: rewrite, check or print the reference; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if the document is stale")
    mode.add_argument("--stdout", action="store_true", help="print the generated blocks only")
    args = parser.parse_args(argv)
    if args.stdout:
        print("\n\n".join(make() for make in BLOCKS.values()))
        return 0
    current = DOC.read_text(encoding="utf-8")
    wanted = updated(current)
    if args.check:
        if wanted != current:
            print(f"{DOC} is out of date: run python docs/gen_config_reference.py", file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        DOC.write_text(wanted, encoding="utf-8")
        print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
