"""The HTTP host end to end against the real application (``bootstrap.build``).

Every response is checked against the committed OpenAPI document (``HttpHost.request``).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pm_http.app import ROUTES
from pm_http.openapi_check import routes
from tests.kit.http_host import (
    ADMIN,
    BASE_ENTRY,
    SECRET,
    HttpHost,
    UvicornServer,
    needs_build,
)
from tests.kit.openapi import DOC, assert_http_matches

pytestmark = [needs_build, pytest.mark.integration]

# service.md 10: the metric names /metrics must export.
METRIC_NAMES = (
    "pm_signals_total",
    "pm_signal_processing_seconds",
    "pm_duplicates_total",
    "pm_signal_lock_failures_total",
    "pm_inflight_signals",
    "pm_leader",
    "pm_leader_epoch",
    "pm_coordination_mode",
    "pm_redis_mode_changes_total",
    "pm_tx_retries_total",
    "pm_broker_request_seconds",
    "pm_broker_errors_total",
    "pm_order_intents",
    "pm_reconciliation_differences",
    "pm_instrument_blocked",
    "pm_http_requests_total",
)

EXIT_LONG_1: dict[str, Any] = {
    "type": "EXIT",
    "instrument": "BANK_NIFTY",
    "position": "Long_1",
    "price": 51600,
    "stop": 0,
    "lots": 0,
    "atr": 350,
    "er": 0.82,
    "supertrend": 51650,
    "reason": "Stop Loss Hit",
    "timestamp": "2025-11-28T11:00:00",
}
EXIT_ALL: dict[str, Any] = {
    **EXIT_LONG_1,
    "position": "ALL",
    "price": 52500,
    "reason": "Manual Exit",
    "timestamp": "2025-11-28T11:10:00+05:30",
}


@pytest.fixture
def host() -> Iterator[HttpHost]:
    with HttpHost() as h:
        yield h


# --------------------------------------------------------------------------- routes


def test_route_table_of_the_app_matches_the_document(host: HttpHost) -> None:
    table: dict[str, set[str]] = {}
    for route in host.asgi.routes:
        methods = set(getattr(route, "methods", None) or ()) - {"HEAD"}
        table.setdefault(route.path, set()).update(methods)  # type: ignore[attr-defined]
    assert table == routes(DOC) == {p: set(m) for p, m in ROUTES.items()}


def test_openapi_document_is_served(host: HttpHost) -> None:
    response = host.request("GET", "/openapi.json")
    assert response.json() == DOC


def test_unknown_path_and_wrong_method(host: HttpHost) -> None:
    missing = host.request("GET", "/nope")
    assert missing.status_code == 404 and missing.json()["status"] == "not_found"
    wrong = host.request("GET", "/webhook")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    wrong = host.request("DELETE", "/health")
    assert wrong.status_code == 405 and "GET" in wrong.headers["allow"]


# --------------------------------------------------------------------------- a trade


def test_a_trade_over_http(host: HttpHost) -> None:
    first = host.webhook(BASE_ENTRY)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["status"] == "executed"
    # webhook.md 1.1: the documented fingerprint of this alert.
    assert body["fingerprint"] == (
        "fb6ca43d510c08d56a6d1fd6848830c8193068f498bb4b21bf66c8f8ef03abff"
    )
    assert body["signal"]["timestamp"] == "2025-11-28T05:00:00Z"
    assert [o["action"] for o in body["orders"]] == ["BUY", "SELL"]

    again = host.webhook(BASE_ENTRY)
    assert again.status_code == 200
    dup = again.json()
    assert dup["status"] == "duplicate" and dup["duplicate_layer"] in ("l1", "l2", "l3")
    assert dup["original"]["body"] == body

    exit_ = host.webhook(EXIT_LONG_1).json()
    assert exit_["status"] == "executed"
    assert exit_["decision"]["positions"][0]["pnl"] == pytest.approx(-12000.0)

    rejected = host.webhook(EXIT_ALL).json()
    assert rejected["status"] == "rejected"
    assert rejected["reason_codes"] == ["position_not_open"]


def test_secret_never_comes_back(host: HttpHost) -> None:
    response = host.webhook(BASE_ENTRY)
    assert SECRET not in response.text
    positions = host.admin("/positions", params={"status": "all"})
    assert SECRET not in positions.text


# --------------------------------------------------------------------------- request ids


def test_request_id_echoed_or_generated(host: HttpHost) -> None:
    echoed = host.request("GET", "/health", headers={"X-Request-ID": "trace.ID-42_x"})
    assert echoed.headers["x-request-id"] == "trace.ID-42_x"
    assert echoed.json()["request_id"] == "trace.ID-42_x"
    replaced = host.request("GET", "/health", headers={"X-Request-ID": "bad id!"})
    assert re.fullmatch(r"[0-9a-f]{16}", replaced.headers["x-request-id"])
    long = host.request("GET", "/health", headers={"X-Request-ID": "a" * 65})
    assert long.headers["x-request-id"] != "a" * 65
    signal = host.webhook(BASE_ENTRY, headers={"X-Request-ID": "tv-1"})
    assert signal.json()["request_id"] == "tv-1"


# --------------------------------------------------------------------------- check order


def test_bad_json_and_non_objects_whatever_the_content_type(host: HttpHost) -> None:
    for raw, code in ((b"{nope", "not_json"), (b"\xff", "not_json"), (b"[1]", "not_an_object")):
        response = host.request(
            "POST", "/webhook", content=raw, headers={"Content-Type": "text/plain"}
        )
        assert response.status_code == 400
        assert response.json()["errors"] == [
            {"field": "payload", "code": code, "message": response.json()["errors"][0]["message"]}
        ]
    # text/plain with a good body is processed (TradingView sends text/plain).
    ok = host.request(
        "POST",
        "/webhook",
        content=json.dumps({**BASE_ENTRY, "secret": SECRET}),
        headers={"Content-Type": "text/plain; charset=utf-8"},
    )
    assert ok.status_code == 200 and ok.json()["status"] == "executed"


def test_authentication_precedes_validation(host: HttpHost) -> None:
    assert host.webhook({"price": -1}, secret=None).status_code == 401
    assert host.webhook({"price": -1}, secret="wrong").status_code == 401
    assert host.webhook({}, secret=None).status_code == 401
    header = host.webhook({**BASE_ENTRY, "price": -1}, secret=None, headers={"X-PM-Token": SECRET})
    assert header.status_code == 422


def test_empty_payload_after_stripping_the_secret(host: HttpHost) -> None:
    response = host.webhook({})
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "empty_payload"


def test_all_field_errors_at_once(host: HttpHost) -> None:
    payload = {**EXIT_LONG_1, "price": -100, "timestamp": "2025-11-28"}
    del payload["reason"]
    response = host.webhook(payload)
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert [(e["field"], e["code"]) for e in errors] == [
        ("price", "out_of_range"),
        ("timestamp", "invalid_timestamp"),
        ("reason", "required_for_exit"),
    ]


def test_invalid_requests_store_nothing_and_are_counted(host: HttpHost) -> None:
    before = host.snapshot()
    invalid_before = host.statistic("signals_invalid")
    statuses = [
        host.webhook(b"{").status_code,
        host.webhook({"type": "BASE_ENTRY"}).status_code,
        host.webhook(BASE_ENTRY, secret="nope").status_code,
    ]
    assert statuses == [400, 422, 401]
    assert host.snapshot() == before
    assert host.wait_statistic("signals_invalid", invalid_before + 3) == invalid_before + 3


def test_body_too_large_by_length_and_while_streaming() -> None:
    with HttpHost({"PM_WEBHOOK_MAX_BODY": "300"}) as host:
        big = json.dumps({**BASE_ENTRY, "secret": SECRET, "pad": "x" * 400}).encode()
        declared = host.request("POST", "/webhook", content=big)
        assert declared.status_code == 413
        assert declared.json()["limit_bytes"] == 300

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(big), 50):
                yield big[i : i + 50]

        streamed = host.request("POST", "/webhook", content=chunks())
        assert "content-length" not in streamed.request.headers
        assert streamed.status_code == 413
        small = host.webhook(BASE_ENTRY)
        assert small.status_code == 200


def test_rate_limit_then_retry_after_and_auth_penalty() -> None:
    with HttpHost({"PM_WEBHOOK_RATE": "6/600", "PM_WEBHOOK_MAX_BODY": "400"}) as host:
        # One failed authentication costs 5 of the 6 tokens.
        assert host.webhook(BASE_ENTRY, secret="wrong").status_code == 401
        assert host.webhook(b"[]").status_code == 400
        limited = host.webhook(BASE_ENTRY)
        assert limited.status_code == 429
        retry = int(limited.headers["retry-after"])
        assert retry == limited.json()["retry_after_s"] and 1 <= retry <= 100
        # Size is checked before the rate: a too large body still gets 413.
        too_big = host.webhook({"pad": "x" * 500})
        assert too_big.status_code == 413
        # Rate is checked before parsing: garbage gets 429, not 400.
        assert host.webhook(b"{").status_code == 429


def test_hmac_required() -> None:
    with HttpHost({"PM_WEBHOOK_HMAC": "required"}) as host:
        body = json.dumps(BASE_ENTRY).encode()
        good = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert host.webhook(BASE_ENTRY, secret=SECRET).status_code == 401  # token alone
        assert (
            host.webhook(body, secret=None, headers={"X-PM-Signature": "sha256=00"}).status_code
            == 401
        )
        signed = host.webhook(body, secret=None, headers={"X-PM-Signature": good})
        assert signed.status_code == 200 and signed.json()["status"] == "executed"


def test_draining_answers_503_and_health_stays_alive() -> None:
    host = HttpHost()
    try:
        host.hosted.drain()
        response = host.webhook(BASE_ENTRY)
        assert response.status_code == 503
        assert response.json()["reason"] == "draining"
        assert response.headers["retry-after"] == "5"
        assert host.request("GET", "/health").status_code == 200
        ready = host.request("GET", "/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
        # Draining is checked first: even a bad body gets 503.
        assert host.webhook(b"{").status_code == 503
    finally:
        host.hosted.close()


# --------------------------------------------------------------------------- views, metrics


def test_health_and_ready(host: HttpHost) -> None:
    health = host.request("GET", "/health").json()
    assert health["status"] == "alive" and health["state"] == "active"
    ready = host.request("GET", "/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_admin_views_need_the_token(host: HttpHost) -> None:
    assert host.request("GET", "/status").status_code == 401
    bad = host.request("GET", "/positions", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    host.webhook(BASE_ENTRY)
    positions = host.admin("/positions").json()
    assert [p["key"] for p in positions["positions"]] == ["BANK_NIFTY_Long_1"]
    closed = host.admin("/positions", params={"status": "closed"}).json()
    assert closed["positions"] == []
    status = host.admin("/status").json()
    assert status["statistics"]["entries_executed"] == 1
    for params in ({"limit": "0"}, {"limit": "x"}, {"status": "weird"}):
        assert host.admin("/positions", params=params).status_code == 400


def test_admin_views_do_not_exist_without_the_token() -> None:
    with HttpHost({"PM_ADMIN_TOKEN": ""}) as host:
        for path in ("/positions", "/status"):
            response = host.request("GET", path, headers={"Authorization": f"Bearer {ADMIN}"})
            assert response.status_code == 404


def test_metrics_names_and_counts(host: HttpHost) -> None:
    host.webhook(BASE_ENTRY)
    host.webhook(BASE_ENTRY)
    text = host.request("GET", "/metrics").text
    for name in METRIC_NAMES:
        assert f"# TYPE {name} " in text, name
    assert 'pm_signals_total{instrument="BANK_NIFTY",outcome="executed",type="BASE_ENTRY"} 1.0' in (
        text
    )
    assert re.search(r'pm_duplicates_total\{layer="l\d"\} 1\.0', text)
    assert 'pm_http_requests_total{route="/webhook",status="200"} 2.0' in text
    assert "pm_leader 1.0" in text
    count = re.search(r"pm_signal_processing_seconds_count (\S+)", text)
    assert count is not None and float(count.group(1)) >= 1.0


def _stat(host: HttpHost, name: str, timeout_s: float = 10.0) -> float | None:
    """The pm_stat_<name> gauge once the leader has exported it (None if it never does)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = re.search(rf"^pm_stat_{name} (\S+)$", host.request("GET", "/metrics").text, re.M)
        if found is not None or time.monotonic() > deadline:
            return float(found.group(1)) if found is not None else None
        time.sleep(0.05)


def test_statistics_gauges_are_the_leaders_last_export() -> None:
    # Exported once right after election, then not for an hour: a later signal shows in
    # /status at once but not in the gauges.
    with HttpHost({"PM_STATS_EXPORT_S": "3600"}) as host:
        assert _stat(host, "entries_executed") == 0.0
        assert host.webhook(BASE_ENTRY).json()["status"] == "executed"
        assert host.admin("/status").json()["statistics"]["entries_executed"] == 1
        assert _stat(host, "entries_executed", timeout_s=0.0) == 0.0
    with HttpHost({"PM_STATS_EXPORT_S": "0.05"}) as host:
        assert host.webhook(BASE_ENTRY).json()["status"] == "executed"
        deadline = time.monotonic() + 10
        while _stat(host, "entries_executed") != 1.0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _stat(host, "entries_executed") == 1.0


def test_metrics_token() -> None:
    with HttpHost({"PM_METRICS_TOKEN": "scrape"}) as host:
        assert host.request("GET", "/metrics").status_code == 401
        ok = host.request("GET", "/metrics", headers={"Authorization": "Bearer scrape"})
        assert ok.status_code == 200 and "pm_signals_total" in ok.text


# --------------------------------------------------------------------------- a real server


def _post(client: httpx.Client, payload: Any, **headers: str) -> httpx.Response:
    response = client.post("/webhook", content=json.dumps(payload), headers=headers)
    assert_http_matches(response)
    return response


def test_real_uvicorn_server_and_trusted_proxies() -> None:
    env = {"PM_WEBHOOK_RATE": "5/600", "PM_TRUSTED_PROXIES": "127.0.0.1"}
    with (
        HttpHost(env) as host,
        UvicornServer(host.asgi) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        signed = {**BASE_ENTRY, "secret": SECRET}
        first = _post(client, signed, **{"X-Forwarded-For": "198.51.100.1"})
        assert first.status_code == 200 and first.json()["status"] == "executed"
        # Four more from the same forwarded client exhaust its bucket of five.
        for _ in range(4):
            _post(client, signed, **{"X-Forwarded-For": "198.51.100.1"})
        limited = _post(client, signed, **{"X-Forwarded-For": "198.51.100.1"})
        assert limited.status_code == 429
        # Another client behind the same proxy has its own bucket.
        other = _post(client, signed, **{"X-Forwarded-For": "6.6.6.6, 198.51.100.2"})
        assert other.status_code == 200 and other.json()["status"] == "duplicate"
        health = client.get("/health")
        assert_http_matches(health)
        assert health.json()["status"] == "alive"


def test_overloaded_pool_answers_503_over_real_http() -> None:
    from pm_adapters.openalgo.simulator import start_in_thread

    with start_in_thread(api_keys=["sim-key"], seed=3) as sim:
        env = {
            "PM_BROKER": "openalgo",
            "PM_OPENALGO_URL": sim.url,
            "PM_OPENALGO_API_KEY": "sim-key",
            "PM_SIGNAL_WORKERS": "1",
            "PM_SIGNAL_QUEUE": "0",
            "PM_RESPONSE_DEADLINE_MS": "3000",
        }
        rules = {"rules": [{"match": {"endpoint": "placeorder"}, "effect": {"latency_ms": 400}}]}
        httpx.post(sim.url + "/_simulator/rules", json=rules, timeout=5).raise_for_status()
        with HttpHost(env) as host, UvicornServer(host.asgi) as server:
            payloads = [
                {**BASE_ENTRY, "instrument": inst, "secret": SECRET}
                for inst in ("BANK_NIFTY", "GOLD_MINI", "BANK_NIFTY")
            ]
            payloads[2] = {**payloads[2], "position": "Long_2", "type": "PYRAMID"}
            with (
                httpx.Client(base_url=server.url, timeout=10) as client,
                concurrent.futures.ThreadPoolExecutor(3) as pool,
            ):
                responses = list(pool.map(lambda p: _post(client, p), payloads))
            overloaded = [r for r in responses if r.status_code == 503]
            assert overloaded, [r.status_code for r in responses]
            for r in overloaded:
                assert r.json()["reason"] == "overloaded"
                assert r.headers["retry-after"] == "1"


def test_deadline_passed_answers_202_then_the_outcome() -> None:
    from pm_adapters.openalgo.simulator import start_in_thread

    with start_in_thread(api_keys=["sim-key"], seed=3) as sim:
        env = {
            "PM_BROKER": "openalgo",
            "PM_OPENALGO_URL": sim.url,
            "PM_OPENALGO_API_KEY": "sim-key",
            "PM_RESPONSE_DEADLINE_MS": "100",
        }
        rules = {"rules": [{"match": {"endpoint": "placeorder"}, "effect": {"latency_ms": 500}}]}
        httpx.post(sim.url + "/_simulator/rules", json=rules, timeout=5).raise_for_status()
        with HttpHost(env) as host:
            started = time.monotonic()
            first = host.webhook(BASE_ENTRY)
            assert time.monotonic() - started < 1.0
            assert first.status_code == 202, first.text
            body = first.json()
            assert body["status"] == "in_progress" and body["state"] in ("queued", "processing")
            deadline = time.monotonic() + 10
            final = first
            while final.status_code == 202 and time.monotonic() < deadline:
                time.sleep(0.1)
                final = host.webhook(BASE_ENTRY)
            assert final.status_code == 200, final.text
            outcome = final.json()
            assert outcome["status"] == "duplicate"
            assert outcome["original"]["body"]["status"] == "executed"
            assert outcome["fingerprint"] == body["fingerprint"]
            orders = httpx.get(sim.url + "/_simulator/state", timeout=5).json()["orders"]
            assert len(orders) == 2  # one order per leg, never resent
