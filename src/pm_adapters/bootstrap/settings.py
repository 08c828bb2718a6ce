"""Every setting of service.md 13 in one frozen value, and the loader that fills it.

Precedence: CLI overrides > environment > TOML (``PM_CONFIG``, else ``./pm.toml`` if present)
> default. Secrets also come from ``<NAME>_FILE`` and are held in :class:`Secret`, whose repr is
``***``, so printing a Settings never shows one.
"""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
import logging
import os
import socket
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from pm_core.config import DomainConfig, default_config, load_config
from pm_core.errors import ConfigError


class SettingsError(ConfigError):
    """The configuration is unusable; ``errors`` lists every bad key (callers exit 5)."""


@attrs.frozen(repr=False, eq=False)
class Secret:
    """A secret value: shown as ``***`` everywhere; compare with :meth:`matches`."""

    _value: str = attrs.field(alias="value")

    def reveal(self) -> str:
        """The plain value, for the one place that must send it (never log it)."""
        return self._value

    def matches(self, candidate: str | bytes) -> bool:
        """Constant-time equality with ``candidate``."""
        given = candidate.encode() if isinstance(candidate, str) else candidate
        return hmac.compare_digest(self._value.encode(), given)

    def __repr__(self) -> str:
        return "***"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and self.matches(other._value)

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


# --------------------------------------------------------------------------- parsers


def _str(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"must be a string, got {type(raw).__name__}")
    return raw


def _opt_str(raw: Any) -> str | None:
    text = _str(raw).strip()
    return text or None


def _int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError("must be a whole number")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str):
        try:
            return int(raw.strip())
        except ValueError:
            pass
    raise ValueError(f"must be a whole number, got {raw!r}")


def _float(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError("must be a number")
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"must be a number, got {raw!r}") from None
    else:
        raise ValueError(f"must be a number, got {type(raw).__name__}")
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("must be finite")
    return value


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        text = raw.strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
    raise ValueError(f"must be true or false, got {raw!r}")


def _items(raw: Any) -> list[Any]:
    if isinstance(raw, list | tuple):
        return list(raw)
    if isinstance(raw, str):
        return [part.strip() for part in raw.split(",") if part.strip()]
    return [raw]


def _floats(raw: Any) -> tuple[float, ...]:
    return tuple(_float(x) for x in _items(raw))


def _ints(raw: Any) -> tuple[int, ...]:
    return tuple(_int(x) for x in _items(raw))


def _pair_ints(raw: Any) -> tuple[int, int]:
    values = _ints(raw)
    if len(values) != 2:
        raise ValueError(f"must be two whole numbers 'a,b', got {raw!r}")
    return values[0], values[1]


def _strs(raw: Any) -> tuple[str, ...]:
    return tuple(_str(x).strip() for x in _items(raw) if _str(x).strip())


def _secret(raw: Any) -> Secret | None:
    text = _str(raw).strip()
    return Secret(text) if text else None


def _secrets(raw: Any) -> tuple[Secret, ...]:
    return tuple(Secret(x) for x in _strs(raw))


def _choice(*allowed: str, lower: bool = True) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        text = _str(raw).strip()
        text = text.lower() if lower else text.upper()
        if text not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}, got {raw!r}")
        return text

    return parse


def _rate(raw: Any) -> tuple[int, float] | None:
    """``"300/60"`` -> (300 requests, 60 s); ``0`` -> None (off)."""
    if isinstance(raw, int) and not isinstance(raw, bool) and raw == 0:
        return None
    text = _str(raw).strip()
    if text in ("0", "off", ""):
        return None
    count, sep, period = text.partition("/")
    if not sep:
        raise ValueError(f"must be 'requests/seconds' or 0, got {raw!r}")
    n, seconds = _int(count), _float(period)
    if n <= 0 or seconds <= 0:
        raise ValueError(f"requests and seconds must be > 0, got {raw!r}")
    return n, seconds


def _proxies(raw: Any) -> tuple[str, ...]:
    nets = _strs(raw)
    for net in nets:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ValueError(f"not an IP address or network: {net!r}") from None
    return nets


def _clock(raw: Any) -> dt.time:
    if isinstance(raw, dt.time):
        return raw
    try:
        return dt.time.fromisoformat(_str(raw).strip())
    except ValueError:
        raise ValueError(f"must be HH:MM, got {raw!r}") from None


def _path(raw: Any) -> Path | None:
    text = _str(raw).strip()
    return Path(text) if text else None


def _log_level(raw: Any) -> str:
    text = _str(raw).strip().upper()
    if text not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {raw!r}")
    return text


@attrs.frozen
class _Var:
    parse: Callable[[Any], Any]
    secret: bool = False  # accepts <NAME>_FILE; never shown
    file_ok: bool = False  # accepts <NAME>_FILE (URLs may carry passwords)
    minimum: float | None = None


_NONNEG = 0.0
_POS = 1e-12

# Field name = TOML key in [pm] = the variable without PM_, lower case.
_VARS: dict[str, _Var] = {
    "database_url": _Var(_str, file_ok=True),
    "redis_url": _Var(_opt_str, file_ok=True),
    "redis_prefix": _Var(_str),
    "openalgo_url": _Var(_str),
    "openalgo_api_key": _Var(_secret, secret=True),
    "openalgo_strategy": _Var(_str),
    "openalgo_expected_mode": _Var(_choice("analyze", "live")),
    "broker": _Var(_choice("paper", "openalgo")),
    "webhook_secret": _Var(_secrets, secret=True),
    "webhook_hmac": _Var(_choice("off", "optional", "required")),
    "webhook_max_body": _Var(_int, minimum=1),
    "webhook_rate": _Var(_rate),
    "trusted_proxies": _Var(_proxies),
    "admin_token": _Var(_secret, secret=True),
    "metrics_token": _Var(_secret, secret=True),
    "http_host": _Var(_str),
    "http_port": _Var(_int, minimum=0),
    "instance_name": _Var(_str),
    "log_level": _Var(_log_level),
    "log_format": _Var(_choice("json", "console")),
    "signal_lock_ttl_ms": _Var(_int, minimum=1),
    "lock_wait_ms": _Var(_int, minimum=_NONNEG),
    "lock_poll_ms": _Var(_int, minimum=1),
    "leader_lease_ms": _Var(_int, minimum=1),
    "leader_renew_ms": _Var(_int, minimum=1),
    "election_tick_ms": _Var(_int, minimum=1),
    "heartbeat_ms": _Var(_int, minimum=1),
    "db_heartbeat_s": _Var(_float, minimum=_POS),
    "instance_stale_s": _Var(_float, minimum=_POS),
    "redis_timeout_ms": _Var(_int, minimum=1),
    "redis_failures": _Var(_int, minimum=1),
    "redis_cooldown_s": _Var(_float, minimum=_NONNEG),
    "redis_probes": _Var(_int, minimum=1),
    "redis_probe_ms": _Var(_int, minimum=1),
    "db_connect_retries": _Var(_int, minimum=_NONNEG),
    "db_connect_backoff": _Var(_floats, minimum=_NONNEG),
    "db_connect_timeout_s": _Var(_float, minimum=_POS),
    "db_pool_size": _Var(_int, minimum=1),
    "db_max_overflow": _Var(_int, minimum=_NONNEG),
    "db_pool_recycle_s": _Var(_float, minimum=_NONNEG),
    "db_ping_idle_s": _Var(_float, minimum=_NONNEG),
    "tx_attempts": _Var(_int, minimum=1),
    "tx_backoff_ms": _Var(_pair_ints, minimum=_NONNEG),
    "tx_budget_ms": _Var(_pair_ints, minimum=_NONNEG),
    "pg_statement_timeout_ms": _Var(_int, minimum=_NONNEG),
    "pg_lock_timeout_ms": _Var(_int, minimum=_NONNEG),
    "pg_idle_tx_timeout_s": _Var(_float, minimum=_NONNEG),
    "sqlite_busy_timeout_ms": _Var(_int, minimum=_NONNEG),
    "held_result_retry_ms": _Var(_int, minimum=1),
    "held_result_max_s": _Var(_float, minimum=_NONNEG),
    "ready_db_timeout_ms": _Var(_int, minimum=1),
    "l1_size": _Var(_int, minimum=_NONNEG),
    "signal_workers": _Var(_int, minimum=1),
    "thread_switch_ms": _Var(_float, minimum=_POS),
    "signal_queue": _Var(_int, minimum=_NONNEG),
    "cache_notice_max_age_ms": _Var(_int, minimum=_NONNEG),
    "response_deadline_ms": _Var(_int, minimum=1),
    "market_data_timeout_ms": _Var(_int, minimum=1),
    "signal_order_style": _Var(_choice("market", "ladder")),
    "max_resume_age_s": _Var(_float, minimum=_NONNEG),
    "max_queue_age_s": _Var(_float, minimum=_NONNEG),
    "exit_leg_attempts": _Var(_int, minimum=1),
    "exit_leg_window_s": _Var(_float, minimum=_NONNEG),
    "send_deadline_ms": _Var(_int, minimum=1),
    "fill_poll_ms": _Var(_pair_ints, minimum=1),
    "fill_timeout_s": _Var(_float, minimum=_POS),
    "not_found_after_s": _Var(_float, minimum=_NONNEG),
    "lookup_spacing_s": _Var(_float, minimum=_NONNEG),
    "openalgo_connect_timeout_s": _Var(_float, minimum=_POS),
    "openalgo_read_timeout_s": _Var(_float, minimum=_POS),
    "openalgo_order_timeout_s": _Var(_float, minimum=_POS),
    "openalgo_read_retries": _Var(_int, minimum=_NONNEG),
    "openalgo_read_backoff": _Var(_floats, minimum=_NONNEG),
    "openalgo_max_modifications": _Var(_int, minimum=_NONNEG),
    "openalgo_book_poll_ms": _Var(_int, minimum=1),
    "openalgo_match_window_s": _Var(_float, minimum=_NONNEG),
    "openalgo_mode_check_s": _Var(_float, minimum=_POS),
    "openalgo_order_rate": _Var(_int, minimum=1),
    "openalgo_read_rate": _Var(_int, minimum=1),
    "rate_max_wait_ms": _Var(_int, minimum=_NONNEG),
    "rate_retry_ms": _Var(_int, minimum=1),
    "shutdown_timeout_s": _Var(_float, minimum=_NONNEG),
    "drain_grace_s": _Var(_float, minimum=_NONNEG),
    "reconcile_on_startup": _Var(_bool),
    "reconcile_interval_s": _Var(_float, minimum=_POS),
    "recovery_broker_budget_s": _Var(_float, minimum=_NONNEG),
    "recovery_strict": _Var(_bool),
    "sweep_interval_s": _Var(_float, minimum=_POS),
    "lock_cleanup_s": _Var(_float, minimum=_POS),
    "rollover_interval_s": _Var(_float, minimum=_POS),
    "stats_flush_s": _Var(_float, minimum=_POS),
    "stats_export_s": _Var(_float, minimum=_POS),
    "retention_at": _Var(_clock),
    "retention_batch": _Var(_int, minimum=1),
    "retention_archive_dir": _Var(_path),
}

# PM_* variables that are not settings fields but are legitimately present.
_OTHER_ENV = frozenset({"PM_CONFIG", "PM_REQUIRE_SERVICES"})


@attrs.frozen
class Settings:
    """Every service.md 13 variable with its default, plus the domain configuration."""

    database_url: str = "sqlite:///./pm.sqlite3"
    redis_url: str | None = None
    redis_prefix: str = "pm:"
    openalgo_url: str = "http://127.0.0.1:5000"
    openalgo_api_key: Secret | None = None
    openalgo_strategy: str = "pm"
    openalgo_expected_mode: str = "analyze"
    broker: str = "paper"
    webhook_secret: tuple[Secret, ...] = ()
    webhook_hmac: str = "off"
    webhook_max_body: int = 10240
    webhook_rate: tuple[int, float] | None = (300, 60.0)
    trusted_proxies: tuple[str, ...] = ()
    admin_token: Secret | None = None
    metrics_token: Secret | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    instance_name: str = attrs.field(factory=socket.gethostname)
    log_level: str = "INFO"
    log_format: str = "json"
    signal_lock_ttl_ms: int = 30000
    lock_wait_ms: int = 250
    lock_poll_ms: int = 25
    leader_lease_ms: int = 2700
    leader_renew_ms: int = 900
    election_tick_ms: int = 250
    heartbeat_ms: int = 2000
    db_heartbeat_s: float = 5.0
    instance_stale_s: float = 15.0
    redis_timeout_ms: int = 250
    redis_failures: int = 3
    redis_cooldown_s: float = 5.0
    redis_probes: int = 3
    redis_probe_ms: int = 1000
    db_connect_retries: int = 3
    db_connect_backoff: tuple[float, ...] = (1.0, 2.0, 4.0)
    db_connect_timeout_s: float = 5.0
    db_pool_size: int = 10
    db_max_overflow: int = 10
    db_pool_recycle_s: float = 1800.0
    db_ping_idle_s: float = 5.0
    tx_attempts: int = 4
    tx_backoff_ms: tuple[int, int] = (25, 500)
    tx_budget_ms: tuple[int, int] = (2000, 30000)
    pg_statement_timeout_ms: int = 5000
    pg_lock_timeout_ms: int = 2000
    pg_idle_tx_timeout_s: float = 30.0
    sqlite_busy_timeout_ms: int = 5000
    held_result_retry_ms: int = 1000
    held_result_max_s: float = 300.0
    ready_db_timeout_ms: int = 1000
    l1_size: int = 10000
    signal_workers: int = 16
    thread_switch_ms: float = 1.0
    signal_queue: int = 64
    cache_notice_max_age_ms: int = 1000
    response_deadline_ms: int = 2500
    market_data_timeout_ms: int = 500
    signal_order_style: str = "market"
    max_resume_age_s: float = 60.0
    max_queue_age_s: float = 60.0
    exit_leg_attempts: int = 3
    exit_leg_window_s: float = 60.0
    send_deadline_ms: int = 2000
    fill_poll_ms: tuple[int, int] = (250, 1000)
    fill_timeout_s: float = 10.0
    not_found_after_s: float = 30.0
    lookup_spacing_s: float = 5.0
    openalgo_connect_timeout_s: float = 2.0
    openalgo_read_timeout_s: float = 5.0
    openalgo_order_timeout_s: float = 10.0
    openalgo_read_retries: int = 3
    openalgo_read_backoff: tuple[float, ...] = (0.2, 0.5, 1.0)
    openalgo_max_modifications: int = 20
    openalgo_book_poll_ms: int = 500
    openalgo_match_window_s: float = 10.0
    openalgo_mode_check_s: float = 30.0
    openalgo_order_rate: int = 8
    openalgo_read_rate: int = 40
    rate_max_wait_ms: int = 2000
    rate_retry_ms: int = 100
    shutdown_timeout_s: float = 25.0
    drain_grace_s: float = 0.0
    reconcile_on_startup: bool = True
    reconcile_interval_s: float = 300.0
    recovery_broker_budget_s: float = 10.0
    recovery_strict: bool = False
    sweep_interval_s: float = 5.0
    lock_cleanup_s: float = 30.0
    rollover_interval_s: float = 60.0
    stats_flush_s: float = 10.0
    stats_export_s: float = 60.0
    retention_at: dt.time = dt.time(2, 30)
    retention_batch: int = 5000
    retention_archive_dir: Path | None = None
    # Not variables of the table: where the TOML came from and the domain tables it held.
    config_path: Path | None = None
    domain: DomainConfig = attrs.field(factory=default_config)

    @property
    def authentication_enabled(self) -> bool:
        """Whether /webhook checks a secret (off only on a loopback bind)."""
        return bool(self.webhook_secret)

    def db_settings(self) -> Any:
        """The database part as ``pm_adapters.sql.retry.DbSettings``."""
        from pm_adapters.sql.retry import DbSettings

        retries = self.db_connect_retries
        delays = self.db_connect_backoff
        backoff = tuple(delays[min(i, len(delays) - 1)] for i in range(retries)) if delays else ()
        return DbSettings(
            pool_size=self.db_pool_size,
            max_overflow=self.db_max_overflow,
            pool_recycle_s=self.db_pool_recycle_s,
            ping_idle_s=self.db_ping_idle_s,
            connect_timeout_s=self.db_connect_timeout_s,
            statement_timeout_ms=self.pg_statement_timeout_ms,
            lock_timeout_ms=self.pg_lock_timeout_ms,
            idle_tx_timeout_s=self.pg_idle_tx_timeout_s,
            sqlite_busy_timeout_ms=self.sqlite_busy_timeout_ms,
            connect_backoff_s=backoff,
            tx_attempts=self.tx_attempts,
            tx_backoff_base_ms=float(self.tx_backoff_ms[0]),
            tx_backoff_cap_ms=float(self.tx_backoff_ms[1]),
            tx_budget_request_ms=float(self.tx_budget_ms[0]),
            tx_budget_background_ms=float(self.tx_budget_ms[1]),
        )

    def coordination_settings(self) -> Any:
        """The coordination part as ``pm_adapters.redis.composite.CoordinationSettings``."""
        from pm_adapters.redis.composite import CoordinationSettings

        return CoordinationSettings(
            prefix=self.redis_prefix,
            redis_timeout_ms=self.redis_timeout_ms,
            redis_failures=self.redis_failures,
            redis_cooldown_s=self.redis_cooldown_s,
            redis_probes=self.redis_probes,
            redis_probe_ms=self.redis_probe_ms,
            leader_lease_ms=self.leader_lease_ms,
            leader_renew_ms=self.leader_renew_ms,
            election_tick_ms=self.election_tick_ms,
            heartbeat_ms=self.heartbeat_ms,
            db_heartbeat_s=self.db_heartbeat_s,
            instance_stale_s=self.instance_stale_s,
            order_rate=self.openalgo_order_rate,
            read_rate=self.openalgo_read_rate,
            rate_max_wait_ms=self.rate_max_wait_ms,
        )


SETTING_NAMES: tuple[str, ...] = tuple(_VARS)


def variable_name(field: str) -> str:
    """``webhook_max_body`` -> ``PM_WEBHOOK_MAX_BODY``."""
    return "PM_" + field.upper()


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only serves this machine (127.0.0.0/8, ::1, localhost)."""
    text = host.strip().strip("[]")
    if text.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


def unknown_environment(env: Mapping[str, str]) -> list[str]:
    """PM_* variables that name no setting (likely typos; worth a warning)."""
    known = {variable_name(name) for name in _VARS}
    known |= {variable_name(name) + "_FILE" for name, var in _VARS.items() if _accepts_file(var)}
    return sorted(k for k in env if k.startswith("PM_") and k not in known | _OTHER_ENV)


def _accepts_file(var: _Var) -> bool:
    return var.secret or var.file_ok


def _read_secret_file(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read().strip()


def _normalise_key(key: str) -> str:
    text = key.strip()
    if text.upper().startswith("PM_"):
        text = text[3:]
    return text.lower().replace("-", "_")


def _layer(
    source: str,
    raw: Mapping[str, Any],
    errors: list[tuple[str, str]],
    *,
    strict: bool,
    label: Callable[[str], str],
) -> dict[str, Any]:
    """Raw values of one layer by field name; ``<name>_file`` keys are read here."""
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = _normalise_key(key)
        if name in _VARS:
            values[name] = value
            continue
        if name.endswith("_file") and name[:-5] in _VARS and _accepts_file(_VARS[name[:-5]]):
            field = name[:-5]
            if field in {_normalise_key(k) for k in raw}:
                errors.append((label(key), f"give {label(field)} or {label(key)}, not both"))
                continue
            try:
                values[field] = _read_secret_file(_str(value))
            except (OSError, ValueError) as exc:
                # The path is fine to show; the content never is.
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
                errors.append((label(key), f"cannot read {value!r}: {reason}"))
            continue
        if strict:
            errors.append((label(key), f"unknown key in {source}"))
    return values


def _find_toml(config_path: Path | None, env: Mapping[str, str]) -> tuple[Path | None, bool]:
    """The TOML file to read and whether it was asked for explicitly (so must exist)."""
    if config_path is not None:
        return config_path, True
    named = env.get("PM_CONFIG", "").strip()
    if named:
        return Path(named), True
    default = Path("pm.toml")
    return (default, False) if default.is_file() else (None, False)


_DOMAIN_TABLES = ("portfolio", "instruments", "calendars")


def load_settings(
    env: Mapping[str, str] | None = None,
    *,
    config_path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from CLI ``overrides`` > ``env`` (default os.environ) > TOML > defaults.

    Raises SettingsError listing every bad key: unknown TOML keys, bad values, unreadable
    ``_FILE`` secrets, a non-loopback bind without a webhook secret, OpenAlgo without a key.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    errors: list[tuple[str, str]] = []
    cli = {k: v for k, v in (overrides or {}).items() if v is not None}

    path, required = _find_toml(
        Path(cli.pop("config")) if cli.get("config") else config_path, environ
    )
    document: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as handle:
                document = tomllib.load(handle)
        except FileNotFoundError:
            if required:
                errors.append(("PM_CONFIG", f"configuration file not found: {path}"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            errors.append(("PM_CONFIG", f"cannot read {path}: {exc}"))

    for table in sorted(set(document) - {"pm", *_DOMAIN_TABLES}):
        errors.append((table, "unknown table (expected [pm], [portfolio], [instruments.<ID>])"))
    pm_table = document.get("pm", {})
    if not isinstance(pm_table, Mapping):
        errors.append(("pm", "must be a table"))
        pm_table = {}

    toml_values = _layer(
        "[pm]",
        {str(k): v for k, v in pm_table.items() if str(k) == str(k).lower()},
        errors,
        strict=True,
        label=lambda k: f"pm.{k}",
    )
    for key in pm_table:
        if str(key) != str(key).lower():
            errors.append((f"pm.{key}", "unknown key in [pm] (keys are lower case without PM_)"))
    env_values = _layer(
        "environment",
        {k: v for k, v in environ.items() if k.startswith("PM_") and k not in _OTHER_ENV},
        errors,
        strict=False,
        label=lambda k: k if k.startswith("PM_") else variable_name(k),
    )
    cli_values = _layer("overrides", cli, errors, strict=True, label=lambda k: f"--{k}")

    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for source, layer in (("toml", toml_values), ("env", env_values), ("cli", cli_values)):
        for name, value in layer.items():
            merged[name] = value
            origin[name] = source

    def where(name: str) -> str:
        return {"toml": f"pm.{name}", "env": variable_name(name), "cli": f"--{name}"}[origin[name]]

    fields: dict[str, Any] = {}
    for name, raw in merged.items():
        var = _VARS[name]
        try:
            value = var.parse(raw)
            _check_minimum(value, var.minimum)
        except ValueError as exc:
            errors.append((where(name), str(exc)))
            continue
        fields[name] = value

    domain_data = {k: document[k] for k in _DOMAIN_TABLES if k in document}
    domain = default_config()
    if domain_data:
        try:
            domain = load_config(domain_data)
        except ConfigError as exc:
            errors.extend(exc.errors)

    if "broker" not in fields:
        uses_openalgo = "openalgo_api_key" in fields or "openalgo_url" in fields
        fields["broker"] = "openalgo" if uses_openalgo else "paper"
    settings: Settings | None = None
    try:
        settings = Settings(config_path=path if document else None, domain=domain, **fields)
    except (TypeError, ValueError) as exc:
        errors.append(("settings", str(exc)))
    if settings is not None:
        errors.extend(_cross_checks(settings))
    if errors or settings is None:
        raise SettingsError(errors)
    return settings


def _check_minimum(value: Any, minimum: float | None) -> None:
    if minimum is None:
        return
    values = value if isinstance(value, tuple) else (value,)
    for item in values:
        if isinstance(item, int | float) and item < minimum:
            bound = "> 0" if minimum == _POS else f">= {minimum:g}"
            raise ValueError(f"must be {bound}, got {item!r}")


def _cross_checks(s: Settings) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    if not s.webhook_secret and not is_loopback(s.http_host):
        errors.append(
            (
                "PM_WEBHOOK_SECRET",
                f"required when binding a non-loopback address ({s.http_host}); "
                "without it only 127.0.0.1/::1 may be served",
            )
        )
    if s.webhook_hmac != "off" and not s.webhook_secret:
        errors.append(("PM_WEBHOOK_HMAC", "needs PM_WEBHOOK_SECRET (the HMAC key)"))
    if s.broker == "openalgo" and s.openalgo_api_key is None:
        errors.append(("PM_OPENALGO_API_KEY", "required with the OpenAlgo broker"))
    if s.leader_lease_ms < 3 * s.leader_renew_ms:
        errors.append(("PM_LEADER_LEASE_MS", "must be at least 3 x PM_LEADER_RENEW_MS"))
    if s.http_port > 65535:
        errors.append(("PM_HTTP_PORT", f"must be <= 65535, got {s.http_port}"))
    if s.fill_poll_ms[0] > s.fill_poll_ms[1]:
        errors.append(("PM_FILL_POLL_MS", "first must not exceed max"))
    if s.tx_backoff_ms[0] > s.tx_backoff_ms[1]:
        errors.append(("PM_TX_BACKOFF_MS", "base must not exceed cap"))
    if not s.instance_name.strip():
        errors.append(("PM_INSTANCE_NAME", "must not be empty"))
    if not s.database_url.strip():
        errors.append(("PM_DATABASE_URL", "must not be empty"))
    return errors


def _display_url(url: str) -> str:
    try:
        from pm_adapters.sql.redact import redact_url
    except ImportError:  # pragma: no cover - sql adapter always ships
        return "***"
    return redact_url(url)


def redacted(settings: Settings) -> dict[str, Any]:
    """Every setting for display: secrets ``***``, URL passwords removed, JSON-friendly."""
    out: dict[str, Any] = {}
    for name in SETTING_NAMES:
        value = getattr(settings, name)
        if isinstance(value, Secret):
            out[name] = "***"
        elif name == "webhook_secret":
            out[name] = ["***"] * len(value)
        elif name.endswith("_url") and isinstance(value, str):
            out[name] = _display_url(value)
        elif isinstance(value, tuple):
            out[name] = list(value)
        elif isinstance(value, dt.time):
            out[name] = value.strftime("%H:%M")
        elif isinstance(value, Path):
            out[name] = str(value)
        else:
            out[name] = value
    out["config_path"] = str(settings.config_path) if settings.config_path else None
    out["instruments"] = sorted(settings.domain.instruments)
    return out


def warn_if_open(settings: Settings, logger: logging.Logger) -> None:
    """Log the loud start-up warning when webhook authentication is off."""
    if not settings.webhook_secret:
        logger.warning(
            "WEBHOOK AUTHENTICATION IS OFF: no PM_WEBHOOK_SECRET set; serving only on "
            "loopback %s. Set PM_WEBHOOK_SECRET before exposing pm.",
            settings.http_host,
        )
