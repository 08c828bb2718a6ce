"""Check real HTTP responses against the committed OpenAPI document (webhook.md 3).

Every HTTP test calls :func:`assert_response_matches` (or :func:`assert_http_matches` on an
``httpx.Response``) on each response it gets.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from pm_http.app import load_openapi
from pm_http.openapi_check import check_response, errors, routes

DOC: dict[str, Any] = json.loads(load_openapi())
_RID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _component(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def assert_response_matches(path: str, method: str, status: int, body: Any) -> None:
    """``body`` is what the document promises for ``method path`` answering ``status``.

    Undocumented paths must be the 404 ``not_found`` shape; undocumented methods on a
    documented path the 405 shape.
    """
    documented = routes(DOC)
    if path not in documented:
        assert status == 404, f"{method} {path}: undocumented path answered {status}"
        problems = errors(body, _component("NotFoundResponse"), DOC)
    elif method.upper() not in documented[path] and not (
        method.upper() == "HEAD" and "GET" in documented[path]
    ):
        assert status == 405, f"{method} {path}: undocumented method answered {status}"
        problems = errors(body, _component("MethodNotAllowedResponse"), DOC)
    else:
        problems = check_response(DOC, path, method, status, body)
    assert not problems, f"{method} {path} {status} breaks the OpenAPI document:\n" + "\n".join(
        problems
    )


def assert_http_matches(response: httpx.Response) -> Any:
    """Check an httpx response (body, X-Request-ID, Cache-Control) and return its JSON."""
    request = response.request
    rid = response.headers.get("x-request-id", "")
    assert _RID.fullmatch(rid), f"bad X-Request-ID {rid!r}"
    assert response.headers.get("cache-control") == "no-store"
    path = request.url.path
    if path == "/metrics" and response.status_code == 200:
        assert response.headers["content-type"].startswith("text/plain")
        return response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    if path != "/openapi.json":
        assert body.get("request_id") == rid, "request_id in the body differs from the header"
    if request.method != "HEAD":
        assert_response_matches(path, request.method, response.status_code, body)
    return body
