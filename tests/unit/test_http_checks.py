"""The pure request checks of webhook.md 1.2: ids, sources, rate, body size, JSON, auth."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
from collections.abc import AsyncIterator
from io import StringIO

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pm_adapters.bootstrap.settings import Secret
from pm_adapters.logging import configure_logging, unconfigure_logging
from pm_http.checks import (
    BodyError,
    BodyTooLarge,
    RateLimiter,
    authenticate,
    bearer_ok,
    client_source,
    declared_too_large,
    hmac_hex,
    parse_networks,
    parse_object,
    read_limited,
    request_id,
)
from tests.strategies import json_values

HEX16 = re.compile(r"[0-9a-f]{16}")

# --------------------------------------------------------------------------- request id


@pytest.mark.parametrize("value", ["abc", "A.b_c-9", "x" * 64, "a4f0c9e2b7d4c18f"])
def test_well_formed_client_request_id_is_echoed(value: str) -> None:
    assert request_id(value) == value


@pytest.mark.parametrize("value", [None, "", "x" * 65, "a b", "a/b", "é", "id\n", "<script>"])
def test_other_request_ids_are_replaced_by_16_hex(value: str | None) -> None:
    rid = request_id(value)
    assert HEX16.fullmatch(rid)


def test_generated_request_ids_differ() -> None:
    assert len({request_id(None) for _ in range(50)}) == 50


# --------------------------------------------------------------------------- source

TRUSTED = parse_networks(["10.0.0.0/8", "192.168.1.5"])


def test_source_is_the_peer_without_trusted_proxies() -> None:
    assert client_source("203.0.113.9", "1.2.3.4", ()) == "203.0.113.9"
    assert client_source(None, None, ()) == "unknown"


def test_forwarded_for_ignored_from_an_untrusted_peer() -> None:
    # A client cannot pick its own bucket by sending the header directly.
    assert client_source("203.0.113.9", "1.2.3.4", TRUSTED) == "203.0.113.9"


def test_first_untrusted_hop_from_the_right_behind_trusted_proxies() -> None:
    xff = "6.6.6.6, 1.2.3.4, 10.1.1.1, 192.168.1.5"
    assert client_source("10.0.0.2", xff, TRUSTED) == "1.2.3.4"
    assert client_source("10.0.0.2", "[2001:db8::1]:443", TRUSTED) == "2001:db8::1"
    assert client_source("10.0.0.2", "1.2.3.4:5555", TRUSTED) == "1.2.3.4"


def test_all_hops_trusted_uses_the_leftmost() -> None:
    assert client_source("10.0.0.2", "10.9.9.9, 10.1.1.1", TRUSTED) == "10.9.9.9"
    assert client_source("10.0.0.2", " , ", TRUSTED) == "10.0.0.2"


# --------------------------------------------------------------------------- rate


class FakeClock:
    """A settable monotonic clock (time itself, not a component, so not a mock)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_capacity_then_refuses_with_retry_after() -> None:
    clock = FakeClock()
    limiter = RateLimiter(3, 60, clock=clock)
    assert all(limiter.take("a").allowed for _ in range(3))
    refused = limiter.take("a")
    assert not refused.allowed and refused.retry_after_s == 20  # one token per 20 s
    assert limiter.take("b").allowed  # sources are independent
    clock.now = 19.9
    assert not limiter.take("a").allowed
    clock.now = 20.0
    assert limiter.take("a").allowed
    assert not limiter.take("a").allowed


def test_refill_never_exceeds_capacity() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, 1, clock=clock)
    clock.now = 1000.0
    assert limiter.tokens("a") == 2.0
    assert limiter.take("a").allowed and limiter.take("a").allowed
    assert not limiter.take("a").allowed


def test_failed_auth_penalty_costs_five_tokens_and_may_go_into_debt() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, 10, clock=clock)
    assert limiter.take("a").allowed
    limiter.charge("a", 4)  # 1 + 4 = 5 tokens for a failed authentication
    assert limiter.tokens("a") == pytest.approx(5.0)
    limiter.charge("a", 100)
    assert limiter.tokens("a") == pytest.approx(-10.0)  # debt capped at one bucket
    refused = limiter.take("a")
    assert not refused.allowed and refused.retry_after_s == 11


def test_sources_are_capped_lru() -> None:
    limiter = RateLimiter(1, 60, clock=FakeClock(), max_sources=2)
    assert limiter.take("a").allowed
    assert limiter.take("b").allowed
    assert limiter.take("c").allowed  # evicts a
    assert limiter.take("a").allowed  # a starts full again
    assert not limiter.take("c").allowed


def test_bad_limiter_parameters() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0, 60)


@given(st.lists(st.tuples(st.floats(0, 5), st.integers(1, 3)), max_size=40))
def test_limiter_never_grants_more_than_capacity_plus_refill(
    steps: list[tuple[float, int]],
) -> None:
    clock = FakeClock()
    limiter = RateLimiter(5, 10, clock=clock)
    granted = 0
    for advance, n in steps:
        clock.now += advance
        granted += sum(limiter.take("s").allowed for _ in range(n))
    assert granted <= 5 + clock.now * 0.5 + 1e-9


# --------------------------------------------------------------------------- body


def test_declared_length() -> None:
    assert declared_too_large("10241", 10240)
    assert not declared_too_large("10240", 10240)
    assert not declared_too_large(None, 10)
    assert not declared_too_large("lots", 10)


async def _chunks(parts: list[bytes], seen: list[int]) -> AsyncIterator[bytes]:
    for part in parts:
        seen.append(len(part))
        yield part


def test_read_stops_as_soon_as_the_limit_is_passed() -> None:
    seen: list[int] = []
    parts = [b"x" * 4] * 100
    with pytest.raises(BodyTooLarge):
        asyncio.run(read_limited(_chunks(parts, seen), 10))
    assert len(seen) == 3  # 4, 8, 12 > 10: the rest is never read


def test_read_returns_the_whole_body_at_the_limit() -> None:
    seen: list[int] = []
    body = asyncio.run(read_limited(_chunks([b"ab", b"cd", b""], seen), 4))
    assert body == b"abcd"


# --------------------------------------------------------------------------- JSON


def test_parse_object() -> None:
    assert parse_object(b'{"a": 1}') == {"a": 1}
    assert parse_object('\ufeff{"a": 1}'.encode()) == {"a": 1}  # BOM tolerated
    assert parse_object(b"") == BodyError("not_json", "Body is not valid JSON")
    assert parse_object(b"{") == BodyError("not_json", "Body is not valid JSON")
    assert parse_object(b"\xff\xfe") == BodyError("not_json", "Body is not valid JSON")
    assert parse_object(b"[" * 100_000) == BodyError("not_json", "Body is not valid JSON")
    for text in (b"[]", b"1", b'"x"', b"null", b"true"):
        assert parse_object(text) == BodyError("not_an_object", "Body must be a JSON object")


@given(json_values())
def test_parse_object_of_any_json(value: object) -> None:
    result = parse_object(json.dumps(value).encode())
    if isinstance(value, dict):
        assert isinstance(result, dict)
        assert json.dumps(result) == json.dumps(value)  # NaN != NaN, so compare the text
    else:
        assert isinstance(result, BodyError) and result.code == "not_an_object"


@given(st.binary(max_size=200))
def test_parse_object_never_raises(raw: bytes) -> None:
    result = parse_object(raw)
    assert isinstance(result, dict | BodyError)


# --------------------------------------------------------------------------- auth

KEYS = (Secret("old-secret"), Secret("new-secret"))
BODY = b'{"type": "EXIT"}'


def sig(key: str, body: bytes = BODY) -> str:
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def auth(
    *,
    header: str | None = None,
    body_secret: object = None,
    signature: str | None = None,
    mode: str = "off",
    keys: tuple[Secret, ...] = KEYS,
) -> bool:
    return authenticate(
        secrets_=keys,
        hmac_mode=mode,
        header_token=header,
        body_secret=body_secret,
        signature=signature,
        body=BODY,
    )


def test_no_secrets_means_no_check() -> None:
    assert auth(keys=())
    assert auth(keys=(), mode="required")


def test_header_or_body_secret_with_rotation() -> None:
    assert auth(header="old-secret")
    assert auth(header="new-secret")
    assert auth(body_secret="new-secret")
    assert auth(header="wrong", body_secret="old-secret")
    assert not auth()
    assert not auth(header="wrong")
    assert not auth(body_secret="old-secret-plus")
    assert not auth(body_secret=12345)
    assert not auth(body_secret=["old-secret"])


def test_hmac_off_ignores_signatures() -> None:
    assert auth(header="old-secret", signature="sha256=00")
    assert not auth(signature=sig("old-secret"))


def test_hmac_optional_verifies_when_present() -> None:
    assert auth(header="old-secret", mode="optional")
    assert auth(signature=sig("new-secret"), mode="optional")
    assert auth(signature=sig("new-secret").upper().replace("SHA256", "sha256"), mode="optional")
    assert not auth(header="old-secret", signature=sig("other"), mode="optional")
    assert not auth(header="old-secret", signature="md5=abc", mode="optional")
    assert not auth(header="old-secret", signature="garbage", mode="optional")
    assert not auth(signature=sig("old-secret", b"tampered"), mode="optional")


def test_hmac_required_demands_a_valid_signature() -> None:
    assert auth(signature=sig("old-secret"), mode="required")
    assert not auth(header="old-secret", mode="required")
    assert not auth(header="old-secret", signature=sig("x"), mode="required")


def test_hmac_hex_matches_the_standard_library() -> None:
    assert "sha256=" + hmac_hex(Secret("k"), BODY) == sig("k")


def test_bearer() -> None:
    token = Secret("adm1n")
    assert bearer_ok("Bearer adm1n", token)
    assert bearer_ok("bearer   adm1n ", token)
    assert not bearer_ok(None, token)
    assert not bearer_ok("Basic adm1n", token)
    assert not bearer_ok("Bearer adm1", token)
    assert not bearer_ok("Bearer", token)


# --------------------------------------------------------------------------- logging


def test_json_logs_carry_extras_and_never_secrets() -> None:
    stream = StringIO()
    handler = configure_logging("INFO", "json", secrets=["hunter2"], stream=stream)
    try:
        log = logging.getLogger("pm.test.http")
        log.info("token %s seen", "hunter2", extra={"request_id": "r1", "detail": "x hunter2"})
        try:
            raise ValueError("postgresql://u:pw123@h/db hunter2")
        except ValueError:
            log.exception("boom")
    finally:
        unconfigure_logging(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["message"] == "token *** seen"
    assert lines[0]["request_id"] == "r1" and lines[0]["detail"] == "x ***"
    assert lines[0]["level"] == "INFO" and lines[0]["logger"] == "pm.test.http"
    assert "hunter2" not in stream.getvalue() and "pw123" not in stream.getvalue()
    assert "ValueError" in lines[1]["exc"]


def test_console_logs() -> None:
    stream = StringIO()
    handler = configure_logging("DEBUG", "console", stream=stream)
    try:
        logging.getLogger("pm.test.console").debug("hello", extra={"k": 1})
    finally:
        unconfigure_logging(handler)
    text = stream.getvalue()
    assert "DEBUG" in text and "hello" in text and "k=1" in text


# --------------------------------------------------------------------------- rendering


def test_json_response_headers_and_request_id() -> None:
    import datetime as dt

    from pm_http.app import json_response

    response = json_response(
        "rid-1",
        503,
        {
            "status": "unavailable",
            "reason": "draining",
            "at": dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        },
        retry_after_s=5,
    )
    assert response.status_code == 503
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-request-id"] == "rid-1"
    assert response.headers["retry-after"] == "5"
    assert response.headers["content-type"] == "application/json"
    body = json.loads(bytes(response.body))
    assert body["request_id"] == "rid-1" and body["reason"] == "draining"
    assert body["at"] == "2025-01-02T03:04:05Z"


def test_json_response_keeps_the_services_request_id_and_utf8() -> None:
    from pm_http.app import json_response

    response = json_response("rid-2", 200, {"status": "executed", "request_id": "svc", "m": "₹"})
    body = json.loads(bytes(response.body).decode("utf-8"))
    assert body["request_id"] == "svc" and body["m"] == "₹"
    assert "retry-after" not in response.headers
