"""The Starlette host: routes of webhook.md, the check order of 1.2, JSON everywhere.

Thin on purpose: every decision is the service's (``hosted``); this module parses,
authenticates, rate-limits and renders.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Mapping
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pm_adapters.bootstrap.hosted import HostedApp
from pm_adapters.bootstrap.settings import Settings
from pm_core.model import ReceivedSignal, Signal
from pm_core.service.api import ServiceUnavailable, SignalResult
from pm_core.signal import fingerprint, validate
from pm_http.checks import (
    BodyError,
    BodyTooLarge,
    RateLimiter,
    authenticate,
    bearer_ok,
    client_source,
    declared_too_large,
    parse_networks,
    parse_object,
    read_limited,
    request_id,
)
from pm_http.metrics import PrometheusObserver, StatusCollector, render

log = logging.getLogger("pm.http")

ROUTES: dict[str, tuple[str, ...]] = {
    "/webhook": ("POST",),
    "/health": ("GET",),
    "/ready": ("GET",),
    "/metrics": ("GET",),
    "/positions": ("GET",),
    "/status": ("GET",),
    "/openapi.json": ("GET",),
}
AUTH_PENALTY_TOKENS = 5
DRAIN_RETRY_AFTER_S = 5
RECOVERY_RETRY_AFTER_S = 5
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_POSITIONS_LIMIT = 1000


def load_openapi() -> bytes:
    """The committed OpenAPI document, as served."""
    return resources.files("pm_http").joinpath("openapi.json").read_bytes()


def rid_of(request: Request) -> str:
    """This request's id (client value echoed when well-formed), fixed at first use."""
    rid: str | None = getattr(request.state, "request_id", None)
    if rid is None:
        rid = request_id(request.headers.get("x-request-id"))
        request.state.request_id = rid
    return rid


def json_response(
    rid: str,
    status: int,
    body: Mapping[str, Any],
    *,
    retry_after_s: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A JSON answer with ``request_id``, ``X-Request-ID`` and ``Cache-Control: no-store``."""
    payload = dict(body)
    payload.setdefault("request_id", rid)
    out = {"Cache-Control": "no-store", "X-Request-ID": rid, **(headers or {})}
    if retry_after_s is not None:
        out["Retry-After"] = str(max(0, int(retry_after_s)))
    content = json.dumps(payload, default=_json_default, ensure_ascii=False).encode()
    return Response(content, status, out, media_type="application/json")


def _json_default(value: object) -> Any:
    if isinstance(value, dt.datetime):
        text = value.astimezone(dt.UTC).isoformat()
        return text.replace("+00:00", "Z")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def _invalid(rid: str, status: int, errors: list[dict[str, str]]) -> Response:
    return json_response(rid, status, {"status": "invalid", "errors": errors})


class _HttpMetrics:
    """ASGI middleware counting answers by route template and status."""

    def __init__(self, app: ASGIApp, observer: PrometheusObserver) -> None:
        self.app = app
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = path if path in ROUTES else "other"

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.observer.http_request(route, int(message["status"]))
            await send(message)

        await self.app(scope, receive, counting_send)


class WebhookHost:
    """The handlers, bound to one HostedApp and its Settings."""

    def __init__(self, hosted: HostedApp, settings: Settings, observer: PrometheusObserver):
        self.hosted = hosted
        self.settings = settings
        self.observer = observer
        rate = settings.webhook_rate
        self.limiter = RateLimiter(rate[0], rate[1]) if rate else None
        self.trusted = parse_networks(settings.trusted_proxies)
        self.deadline_s = settings.response_deadline_ms / 1000
        self.openapi = load_openapi()

    # -- POST /webhook ----------------------------------------------------------------

    async def webhook(self, request: Request) -> Response:
        rid = rid_of(request)
        try:
            return await self._webhook(request, rid)
        except Exception:
            # A genuine bug before the service took the signal: details go to the log only.
            log.exception("webhook handler failed", extra={"request_id": rid})
            return json_response(rid, 500, {"status": "error"})

    async def _webhook(self, request: Request, rid: str) -> Response:
        s = self.settings
        # 1. Gate: the pool-full case comes from submit() below.
        state = self.hosted.state
        if not self.hosted.accepting:
            reason = "recovering" if state in ("starting", "recovering") else "draining"
            retry = RECOVERY_RETRY_AFTER_S if reason == "recovering" else DRAIN_RETRY_AFTER_S
            return self._unavailable(rid, reason, retry)

        # 2. Size, announced then actual.
        limit = s.webhook_max_body
        if declared_too_large(request.headers.get("content-length"), limit):
            return self._rejected(rid, 413, {"status": "too_large", "limit_bytes": limit})
        try:
            raw = await read_limited(request.stream(), limit)
        except BodyTooLarge:
            return self._rejected(rid, 413, {"status": "too_large", "limit_bytes": limit})
        except ClientDisconnect:
            # Nobody is listening; answer for the log's sake and store nothing.
            error = {"field": "payload", "code": "not_json", "message": "Body incomplete"}
            return self._rejected(rid, 400, {"status": "invalid", "errors": [error]})

        # 3. Rate per source.
        peer = request.client.host if request.client else None
        source = client_source(peer, request.headers.get("x-forwarded-for"), self.trusted)
        if self.limiter is not None:
            decision = self.limiter.take(source)
            if not decision.allowed:
                return self._rejected(
                    rid,
                    429,
                    {"status": "rate_limited", "retry_after_s": decision.retry_after_s},
                    retry_after_s=decision.retry_after_s,
                )

        # 4. JSON object.
        parsed = parse_object(raw)
        if isinstance(parsed, BodyError):
            error = {"field": "payload", "code": parsed.code, "message": parsed.message}
            return self._rejected(rid, 400, {"status": "invalid", "errors": [error]})

        # 5. Authentication.
        if not authenticate(
            secrets_=s.webhook_secret,
            hmac_mode=s.webhook_hmac,
            header_token=request.headers.get("x-pm-token"),
            body_secret=parsed.get("secret"),
            signature=request.headers.get("x-pm-signature"),
            body=raw,
        ):
            if self.limiter is not None:
                self.limiter.charge(source, AUTH_PENALTY_TOKENS - 1)
            log.warning(
                "webhook authentication failed", extra={"request_id": rid, "source": source}
            )
            return self._rejected(
                rid,
                401,
                {"status": "unauthorized", "message": "missing or invalid credentials"},
            )

        # 6. Validation, with the secret stripped.
        parsed.pop("secret", None)
        checked = validate(parsed, self.hosted.config)
        if not isinstance(checked, Signal):
            errors = [{"field": e.field, "code": e.code, "message": e.message} for e in checked]
            status = 400 if any(e.code == "empty_payload" for e in checked) else 422
            return self._rejected(rid, status, {"status": "invalid", "errors": errors})

        # 7. The service.
        received = ReceivedSignal(checked, fingerprint(checked), dt.datetime.now(dt.UTC))
        started = time.perf_counter()
        result = await self._process(received, rid)
        log.info(
            "webhook answered",
            extra={
                "request_id": rid,
                "http_status": result.http_status,
                "status": result.body.get("status"),
                "fingerprint": received.fingerprint,
                "instrument": checked.instrument,
                "type": checked.type,
                "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        return json_response(
            rid, result.http_status, result.body, retry_after_s=result.retry_after_s
        )

    async def _process(self, received: ReceivedSignal, rid: str) -> SignalResult:
        try:
            future = self.hosted.submit(received, rid)
        except ServiceUnavailable as exc:
            return SignalResult(
                503,
                {"status": "unavailable", "reason": exc.reason, "retry_after_s": exc.retry_after_s},
                exc.retry_after_s,
            )
        waiter = asyncio.wrap_future(future)
        try:
            # shield: a timeout must not cancel the queued work behind the future.
            return await asyncio.wait_for(asyncio.shield(waiter), self.deadline_s)
        except TimeoutError:
            return self.hosted.in_progress(received, rid)
        except ServiceUnavailable as exc:
            return SignalResult(
                503,
                {"status": "unavailable", "reason": exc.reason, "retry_after_s": exc.retry_after_s},
                exc.retry_after_s,
            )
        except Exception:
            # The service may have committed T1: the safe answer is "still in progress",
            # recovery finishes the signal (webhook.md 1.2).
            log.exception(
                "signal processing raised",
                extra={"request_id": rid, "fingerprint": received.fingerprint},
            )
            return self.hosted.in_progress(received, rid)

    def _unavailable(self, rid: str, reason: str, retry_after_s: int) -> Response:
        body = {"status": "unavailable", "reason": reason, "retry_after_s": retry_after_s}
        return json_response(rid, 503, body, retry_after_s=retry_after_s)

    def _rejected(
        self, rid: str, status: int, body: Mapping[str, Any], *, retry_after_s: int | None = None
    ) -> Response:
        """A step-2 failure: nothing stored; counted as an invalid request."""
        try:
            self.hosted.count_invalid()
        except Exception:
            log.warning("count_invalid failed", exc_info=True)
        log.info(
            "webhook rejected",
            extra={"request_id": rid, "http_status": status, "status": body.get("status")},
        )
        return json_response(rid, status, body, retry_after_s=retry_after_s)

    # -- health, readiness, metrics ---------------------------------------------------

    async def health(self, request: Request) -> Response:
        return json_response(rid_of(request), 200, self.hosted.health())

    async def ready(self, request: Request) -> Response:
        ok, body = await run_in_threadpool(self.hosted.ready)
        return json_response(rid_of(request), 200 if ok else 503, body)

    async def metrics(self, request: Request) -> Response:
        rid = rid_of(request)
        token = self.settings.metrics_token
        if token is not None and not bearer_ok(request.headers.get("authorization"), token):
            return self._unauthorized(rid)
        content = await run_in_threadpool(render, self.observer.registry)
        headers = {"Cache-Control": "no-store", "X-Request-ID": rid}
        return Response(content, 200, headers, media_type=METRICS_CONTENT_TYPE)

    # -- read-only views --------------------------------------------------------------

    def _admin_denied(self, request: Request, rid: str) -> Response | None:
        token = self.settings.admin_token
        if token is None:
            return json_response(rid, 404, {"status": "not_found"})
        if not bearer_ok(request.headers.get("authorization"), token):
            return self._unauthorized(rid)
        return None

    def _unauthorized(self, rid: str) -> Response:
        body = {"status": "unauthorized", "message": "missing or invalid credentials"}
        return json_response(rid, 401, body, headers={"WWW-Authenticate": "Bearer"})

    async def positions(self, request: Request) -> Response:
        rid = rid_of(request)
        denied = self._admin_denied(request, rid)
        if denied is not None:
            return denied
        status = request.query_params.get("status")
        errors: list[dict[str, str]] = []
        if status is not None and status not in ("open", "partial", "closed", "all"):
            errors.append(
                {
                    "field": "status",
                    "code": "unknown_value",
                    "message": f"status must be open, partial, closed or all, got {status!r}",
                }
            )
        raw_limit = request.query_params.get("limit", "100")
        limit = 100
        try:
            limit = int(raw_limit)
            if not 1 <= limit <= MAX_POSITIONS_LIMIT:
                raise ValueError
        except ValueError:
            errors.append(
                {
                    "field": "limit",
                    "code": "out_of_range",
                    "message": f"limit must be 1..{MAX_POSITIONS_LIMIT}, got {raw_limit!r}",
                }
            )
        if errors:
            return _invalid(rid, 400, errors)
        wanted = None if status in (None, "all") else status
        body = await run_in_threadpool(self.hosted.positions, wanted, limit)
        return json_response(rid, 200, body)

    async def status(self, request: Request) -> Response:
        rid = rid_of(request)
        denied = self._admin_denied(request, rid)
        if denied is not None:
            return denied
        body = await run_in_threadpool(self.hosted.status)
        return json_response(rid, 200, body)

    async def openapi_doc(self, request: Request) -> Response:
        rid = rid_of(request)
        headers = {"Cache-Control": "no-store", "X-Request-ID": rid}
        return Response(self.openapi, 200, headers, media_type="application/json")


async def _http_error(request: Request, exc: Exception) -> Response:
    rid = rid_of(request)
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        headers = dict(exc.headers or {})
        return json_response(rid, 405, {"status": "method_not_allowed"}, headers=headers)
    if exc.status_code == 404:
        return json_response(rid, 404, {"status": "not_found"})
    return json_response(rid, exc.status_code, {"status": "error"})


async def _server_error(request: Request, exc: Exception) -> Response:
    rid = rid_of(request)
    log.error("unhandled error", exc_info=exc, extra={"request_id": rid})
    return json_response(rid, 500, {"status": "error"})


def create_app(hosted: HostedApp, settings: Settings) -> Starlette:
    """The pm HTTP application for ``hosted`` (registers a Prometheus observer on it)."""
    observer = PrometheusObserver()
    observer.registry.register(StatusCollector(hosted.status, hosted.exported_statistics))
    hosted.set_observer(observer)
    host = WebhookHost(hosted, settings, observer)
    handlers = {
        "/webhook": host.webhook,
        "/health": host.health,
        "/ready": host.ready,
        "/metrics": host.metrics,
        "/positions": host.positions,
        "/status": host.status,
        "/openapi.json": host.openapi_doc,
    }
    routes = [
        Route(path, handlers[path], methods=list(methods)) for path, methods in ROUTES.items()
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )
    app.add_middleware(_HttpMetrics, observer=observer)
    app.state.host = host
    app.state.observer = observer
    return app
