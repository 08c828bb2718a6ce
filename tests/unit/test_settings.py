"""Settings loader: defaults, precedence, _FILE secrets, TOML tables, every bad key reported."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest

from pm_adapters.bootstrap.settings import (
    SETTING_NAMES,
    Secret,
    Settings,
    SettingsError,
    is_loopback,
    load_settings,
    redacted,
    unknown_environment,
    variable_name,
    warn_if_open,
)
from pm_core.errors import ConfigError


@pytest.fixture(autouse=True)
def _no_local_pm_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # ./pm.toml is read when present: run every test in an empty directory.
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_match_the_spec_table() -> None:
    s = load_settings({})
    assert s.database_url == "sqlite:///./pm.sqlite3"
    assert s.redis_url is None and s.redis_prefix == "pm:"
    assert s.broker == "paper"
    assert s.webhook_secret == () and s.webhook_hmac == "off"
    assert s.webhook_max_body == 10240 and s.webhook_rate == (300, 60.0)
    assert (s.http_host, s.http_port) == ("127.0.0.1", 8080)
    assert s.db_connect_backoff == (1.0, 2.0, 4.0)
    assert s.tx_backoff_ms == (25, 500) and s.tx_budget_ms == (2000, 30000)
    assert s.fill_poll_ms == (250, 1000)
    assert s.openalgo_read_backoff == (0.2, 0.5, 1.0)
    assert s.response_deadline_ms == 2500 and isinstance(s.response_deadline_ms, int)
    assert s.shutdown_timeout_s == 25.0 and isinstance(s.shutdown_timeout_s, float)
    assert s.retention_at == dt.time(2, 30)
    assert s.reconcile_on_startup is True and s.recovery_strict is False
    assert s.signal_workers == 16 and s.signal_queue == 64
    assert sorted(s.domain.instruments) == ["BANK_NIFTY", "GOLD_MINI"]
    assert s.config_path is None


def test_every_variable_is_a_field_with_a_default() -> None:
    defaults = Settings()
    for name in SETTING_NAMES:
        assert hasattr(defaults, name), name
    assert variable_name("webhook_max_body") == "PM_WEBHOOK_MAX_BODY"


def test_environment_values_are_parsed_into_their_units() -> None:
    s = load_settings(
        {
            "PM_RESPONSE_DEADLINE_MS": "150",
            "PM_SHUTDOWN_TIMEOUT_S": "0.5",
            "PM_DB_CONNECT_BACKOFF": "0.1, 0.2",
            "PM_TX_BUDGET_MS": "100,900",
            "PM_WEBHOOK_RATE": "5/2",
            "PM_RECOVERY_STRICT": "yes",
            "PM_TRUSTED_PROXIES": "10.0.0.0/8,127.0.0.1",
            "PM_RETENTION_AT": "03:15",
            "PM_RETENTION_ARCHIVE_DIR": "/tmp/archive",
        }
    )
    assert s.response_deadline_ms == 150
    assert s.shutdown_timeout_s == 0.5
    assert s.db_connect_backoff == (0.1, 0.2)
    assert s.tx_budget_ms == (100, 900)
    assert s.webhook_rate == (5, 2.0)
    assert s.recovery_strict is True
    assert s.trusted_proxies == ("10.0.0.0/8", "127.0.0.1")
    assert s.retention_at == dt.time(3, 15)
    assert s.retention_archive_dir == Path("/tmp/archive")


def test_rate_zero_turns_the_limiter_off() -> None:
    assert load_settings({"PM_WEBHOOK_RATE": "0"}).webhook_rate is None


def test_precedence_cli_over_env_over_toml_over_default(tmp_path: Path) -> None:
    toml = write(
        tmp_path / "c.toml",
        "[pm]\nlock_wait_ms = 111\nlock_poll_ms = 7\nheartbeat_ms = 900\n",
    )
    env = {"PM_CONFIG": str(toml), "PM_LOCK_WAIT_MS": "222", "PM_LOCK_POLL_MS": "8"}
    s = load_settings(env, overrides={"lock_wait_ms": 333})
    assert s.lock_wait_ms == 333  # cli
    assert s.lock_poll_ms == 8  # env over toml
    assert s.heartbeat_ms == 900  # toml over default
    assert s.election_tick_ms == 250  # default
    assert s.config_path == toml


def test_explicit_config_path_wins_over_pm_config(tmp_path: Path) -> None:
    a = write(tmp_path / "a.toml", "[pm]\nl1_size = 1\n")
    b = write(tmp_path / "b.toml", "[pm]\nl1_size = 2\n")
    assert load_settings({"PM_CONFIG": str(a)}, config_path=b).l1_size == 2
    assert load_settings({"PM_CONFIG": str(a)}).l1_size == 1


def test_default_pm_toml_in_the_working_directory_is_read(tmp_path: Path) -> None:
    write(tmp_path / "pm.toml", "[pm]\nsignal_workers = 3\n")
    assert load_settings({}).signal_workers == 3


def test_missing_named_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"PM_CONFIG": str(tmp_path / "nope.toml")})
    assert info.value.errors[0][0] == "PM_CONFIG"


def test_overrides_accept_variable_names_and_ignore_none() -> None:
    s = load_settings({"PM_HTTP_PORT": "9000"}, overrides={"PM_L1_SIZE": "5", "http_port": None})
    assert s.l1_size == 5 and s.http_port == 9000


def test_unknown_toml_keys_and_tables_all_reported(tmp_path: Path) -> None:
    toml = write(
        tmp_path / "c.toml",
        "[pm]\nwebhook_secrt = 'x'\nPM_HTTP_PORT = 1\nl1_size = 'many'\n"
        "[portfolio]\nmax_layers = 6\nbogus = 1\n[extra]\na = 1\n",
    )
    with pytest.raises(SettingsError) as info:
        load_settings({}, config_path=toml)
    fields = [field for field, _ in info.value.errors]
    assert "pm.webhook_secrt" in fields
    assert "pm.PM_HTTP_PORT" in fields
    assert "pm.l1_size" in fields
    assert "portfolio.bogus" in fields
    assert "extra" in fields
    assert isinstance(info.value, ConfigError)


def test_domain_tables_build_the_domain_config(tmp_path: Path) -> None:
    toml = write(
        tmp_path / "c.toml",
        "[portfolio]\ninitial_capital = 1000000\n[instruments.BANK_NIFTY]\nenabled = false\n",
    )
    s = load_settings({}, config_path=toml)
    assert s.domain.portfolio.initial_capital == 1_000_000
    assert s.domain.instruments["BANK_NIFTY"].enabled is False
    assert s.domain.instruments["GOLD_MINI"].enabled is True


def test_bad_values_are_all_listed_with_their_source() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(
            {
                "PM_HTTP_PORT": "eighty",
                "PM_WEBHOOK_HMAC": "maybe",
                "PM_TX_ATTEMPTS": "0",
                "PM_LOG_FORMAT": "xml",
                "PM_TRUSTED_PROXIES": "not-an-ip",
                "PM_RECOVERY_STRICT": "perhaps",
                "PM_SHUTDOWN_TIMEOUT_S": "nan",
            }
        )
    fields = {field for field, _ in info.value.errors}
    assert fields >= {
        "PM_HTTP_PORT",
        "PM_WEBHOOK_HMAC",
        "PM_TX_ATTEMPTS",
        "PM_LOG_FORMAT",
        "PM_TRUSTED_PROXIES",
        "PM_RECOVERY_STRICT",
        "PM_SHUTDOWN_TIMEOUT_S",
    }


def test_non_loopback_bind_without_secret_is_refused() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"PM_HTTP_HOST": "0.0.0.0"})
    assert info.value.errors[0][0] == "PM_WEBHOOK_SECRET"
    ok = load_settings({"PM_HTTP_HOST": "0.0.0.0", "PM_WEBHOOK_SECRET": "s1"})
    assert ok.authentication_enabled
    assert not load_settings({"PM_HTTP_HOST": "::1"}).authentication_enabled


def test_hmac_needs_a_secret_and_openalgo_needs_a_key() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"PM_WEBHOOK_HMAC": "required", "PM_BROKER": "openalgo"})
    fields = {field for field, _ in info.value.errors}
    assert fields == {"PM_WEBHOOK_HMAC", "PM_OPENALGO_API_KEY"}


def test_broker_defaults_to_openalgo_when_it_is_configured() -> None:
    s = load_settings({"PM_OPENALGO_API_KEY": "k"})
    assert s.broker == "openalgo"
    assert load_settings({"PM_OPENALGO_API_KEY": "k", "PM_BROKER": "paper"}).broker == "paper"


def test_secret_files_are_read_and_never_shown(tmp_path: Path) -> None:
    key = write(tmp_path / "key", "hunter2-secret\n")
    hooks = write(tmp_path / "hooks", "old-one,new-one\n")
    s = load_settings({"PM_OPENALGO_API_KEY_FILE": str(key), "PM_WEBHOOK_SECRET_FILE": str(hooks)})
    assert s.openalgo_api_key is not None
    assert s.openalgo_api_key.reveal() == "hunter2-secret"
    assert [x.reveal() for x in s.webhook_secret] == ["old-one", "new-one"]
    shown = repr(s) + str(s) + repr(redacted(s))
    assert "hunter2" not in shown and "old-one" not in shown and "new-one" not in shown


def test_secret_file_in_toml(tmp_path: Path) -> None:
    token = write(tmp_path / "tok", "admintok")
    toml = write(tmp_path / "c.toml", f"[pm]\nadmin_token_file = '{token}'\n")
    s = load_settings({}, config_path=toml)
    assert s.admin_token is not None and s.admin_token.matches("admintok")


def test_secret_and_its_file_together_is_an_error(tmp_path: Path) -> None:
    key = write(tmp_path / "key", "a")
    with pytest.raises(SettingsError) as info:
        load_settings({"PM_ADMIN_TOKEN": "b", "PM_ADMIN_TOKEN_FILE": str(key)})
    assert info.value.errors[0][0] == "PM_ADMIN_TOKEN_FILE"


def test_unreadable_secret_file_names_the_path_not_content(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"PM_METRICS_TOKEN_FILE": str(tmp_path / "missing")})
    field, message = info.value.errors[0]
    assert field == "PM_METRICS_TOKEN_FILE" and "missing" in message


def test_bad_secret_never_echoed_in_errors() -> None:
    # A non-loopback bind failure plus a bad value next to a secret: the secret stays out.
    with pytest.raises(SettingsError) as info:
        load_settings({"PM_ADMIN_TOKEN": "s3cr3t-value", "PM_HTTP_PORT": "x"})
    assert "s3cr3t-value" not in str(info.value)


def test_secret_type() -> None:
    a = Secret("abc")
    assert repr(a) == "***" and str(a) == "***" and f"{a}" == "***"
    assert a.matches("abc") and a.matches(b"abc") and not a.matches("abd")
    assert a == Secret("abc") and a != Secret("x")


def test_redacted_hides_url_passwords_and_secrets() -> None:
    s = load_settings(
        {
            "PM_DATABASE_URL": "postgresql+psycopg://pm:pa55word@db:5432/pm",
            "PM_REDIS_URL": "redis://:redispw@cache:6379/0",
            "PM_ADMIN_TOKEN": "tok",
            "PM_WEBHOOK_SECRET": "a,b",
        }
    )
    shown = redacted(s)
    assert "pa55word" not in str(shown) and "redispw" not in str(shown)
    assert shown["admin_token"] == "***" and shown["metrics_token"] is None
    assert shown["webhook_secret"] == ["***", "***"]
    assert shown["database_url"].startswith("postgresql+psycopg://pm@db")
    assert set(SETTING_NAMES) <= set(shown)


def test_derived_adapter_settings() -> None:
    s = load_settings({"PM_DB_CONNECT_RETRIES": "5", "PM_DB_CONNECT_BACKOFF": "0.1,0.3"})
    db = s.db_settings()
    assert db.connect_backoff_s == (0.1, 0.3, 0.3, 0.3, 0.3)
    assert db.tx_budget_request_ms == 2000.0
    coord = s.coordination_settings()
    assert coord.prefix == "pm:" and coord.leader_lease_ms == 2700


def test_leader_lease_must_cover_three_renewals() -> None:
    with pytest.raises(SettingsError):
        load_settings({"PM_LEADER_LEASE_MS": "1000", "PM_LEADER_RENEW_MS": "900"})


@pytest.mark.parametrize(
    ("host", "loop"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loop: bool) -> None:
    assert is_loopback(host) is loop


def test_unknown_environment_lists_typos_only() -> None:
    env = {"PM_WEBHOOK_SECRT": "x", "PM_CONFIG": "a", "PM_ADMIN_TOKEN_FILE": "f", "HOME": "/"}
    assert unknown_environment(env) == ["PM_WEBHOOK_SECRT"]


def test_open_warning_is_loud(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("pmtest.settings")
    with caplog.at_level(logging.WARNING, logger="pmtest.settings"):
        warn_if_open(load_settings({}), logger)
        warn_if_open(load_settings({"PM_WEBHOOK_SECRET": "x"}), logger)
    assert len(caplog.records) == 1
    assert "AUTHENTICATION IS OFF" in caplog.records[0].getMessage()


def test_thread_switch_interval_is_set_for_serve_and_must_be_positive() -> None:
    import sys

    from pm_cli.service import tune_interpreter

    before = sys.getswitchinterval()
    try:
        tune_interpreter(load_settings({"PM_THREAD_SWITCH_MS": "2.5"}))
        assert sys.getswitchinterval() == pytest.approx(0.0025)
        tune_interpreter(load_settings({}))
        assert sys.getswitchinterval() == pytest.approx(0.001)
    finally:
        sys.setswitchinterval(before)
    with pytest.raises(SettingsError, match="PM_THREAD_SWITCH_MS"):
        load_settings({"PM_THREAD_SWITCH_MS": "0"})
