"""Schema-driven fuzzing of POST /webhook against the real application (webhook.md 1).

Properties: never a 5xx; every answer matches the OpenAPI document; an invalid request
(4xx) changes nothing: positions, portfolio and decided counters stay as they were.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.kit.http_host import SECRET, HttpHost, needs_build
from tests.strategies import hostile_bodies, json_values, mutated_payloads, valid_payloads

pytestmark = [needs_build, pytest.mark.integration]

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def host() -> Iterator[HttpHost]:
    # Small body limit so size failures are exercised too; no rate limit (it would mask).
    with HttpHost({"PM_WEBHOOK_MAX_BODY": "2048"}) as h:
        yield h


def _send(host: HttpHost, content: bytes, headers: dict[str, str] | None = None) -> Any:
    # A valid mutation answered 202 may still settle in the background: wait until nothing is
    # in flight, so that the snapshots compare this request alone.
    assert host.hosted.service.wait_idle(30), "a signal did not finish"
    before = host.snapshot()
    response = host.request("POST", "/webhook", content=content, headers=headers or {})
    assert response.status_code < 500, response.text
    if 400 <= response.status_code < 500:
        assert host.snapshot() == before, f"{response.status_code} changed state"
    return response


@FUZZ
@given(hostile_bodies(), st.booleans())
def test_hostile_bodies_never_5xx_and_store_nothing(
    host: HttpHost, body: bytes, with_token: bool
) -> None:
    headers = {"X-PM-Token": SECRET, "Content-Type": "text/plain"} if with_token else {}
    response = _send(host, body, headers)
    assert response.status_code in (400, 401, 413, 422)


@FUZZ
@given(json_values())
def test_any_json_value_never_5xx(host: HttpHost, value: Any) -> None:
    body = json.dumps(value).encode()
    response = _send(host, body, {"X-PM-Token": SECRET})
    assert response.status_code in (400, 401, 413, 422, 200, 202)


@FUZZ
@given(mutated_payloads(), st.sampled_from(["header", "body", "none", "wrong"]))
def test_mutated_payloads(host: HttpHost, payload: dict[str, Any], auth: str) -> None:
    headers: dict[str, str] = {}
    if auth == "header":
        headers["X-PM-Token"] = SECRET
    elif auth == "body":
        payload = {**payload, "secret": SECRET}
    elif auth == "wrong":
        payload = {**payload, "secret": SECRET + "x"}
    response = _send(host, json.dumps(payload).encode(), headers)
    if auth in ("none", "wrong"):
        assert response.status_code in (401, 413)
    else:
        # A mutation may leave the payload valid: then the service answers it.
        assert response.status_code in (200, 202, 400, 413, 422)
    if response.status_code == 422:
        fields = [e["field"] for e in response.json()["errors"]]
        assert len(fields) == len(set(fields)), "one error per field"


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(valid_payloads())
def test_valid_payloads_are_answered(host: HttpHost, payload: dict[str, Any]) -> None:
    payload = {**payload, "secret": SECRET}
    response = host.request("POST", "/webhook", content=json.dumps(payload).encode())
    assert response.status_code in (200, 202), response.text
    assert SECRET not in response.text
