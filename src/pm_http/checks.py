"""The pure request checks of webhook.md 1.2: request ids, sources, rate, body size, JSON, auth.

Nothing here touches Starlette, so each rule is tested on its own; ``app.py`` strings them
together in the normative order.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import attrs

from pm_adapters.bootstrap.settings import Secret

_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id(client_value: str | None) -> str:
    """The client's X-Request-ID when it is 1-64 of ``[A-Za-z0-9._-]``, else 16 random hex."""
    if client_value is not None and _CLIENT_ID.fullmatch(client_value):
        return client_value
    return secrets.token_hex(8)


# --------------------------------------------------------------------------- source


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[IpNetwork, ...]:
    """``PM_TRUSTED_PROXIES`` entries (addresses or CIDRs) as networks."""
    return tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries if e.strip())


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = text.strip()
    # "[v6]:port" or "v4:port" appear in some proxies' headers.
    if value.startswith("[") and "]" in value:
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _trusted(text: str, trusted: Sequence[IpNetwork]) -> bool:
    addr = _address(text)
    return addr is not None and any(addr in net for net in trusted)


def client_source(peer: str | None, forwarded_for: str | None, trusted: Sequence[IpNetwork]) -> str:
    """Who sent the request: the peer, or (behind trusted proxies) the first untrusted
    ``X-Forwarded-For`` hop counted from the right."""
    source = peer or "unknown"
    if not trusted or not forwarded_for or not _trusted(source, trusted):
        return source
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            addr = _address(hop)
            return str(addr) if addr is not None else hop[:64]
    # Every hop is a trusted proxy: the leftmost is the best we know.
    return hops[0][:64] if hops else source


# --------------------------------------------------------------------------- rate


@attrs.frozen
class RateDecision:
    """Whether a request may pass, and when to retry when not."""

    allowed: bool
    retry_after_s: int = 0


class RateLimiter:
    """Per-source token buckets: ``capacity`` tokens refilled over ``period_s`` (thread-safe).

    Sources are kept in LRU order and capped at ``max_sources`` so a flood of spoofed
    addresses cannot grow memory without bound (an evicted source starts full again).
    """

    def __init__(
        self,
        capacity: int,
        period_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_sources: int = 100_000,
    ) -> None:
        if capacity <= 0 or period_s <= 0:
            raise ValueError("capacity and period must be > 0")
        self.capacity = float(capacity)
        self.rate = capacity / period_s
        self._clock = clock
        self._max_sources = max_sources
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def _level(self, source: str, now: float) -> float:
        tokens, stamp = self._buckets.get(source, (self.capacity, now))
        return min(self.capacity, tokens + (now - stamp) * self.rate)

    def take(self, source: str, cost: float = 1.0) -> RateDecision:
        """Spend ``cost`` tokens for ``source`` if it has them."""
        with self._lock:
            now = self._clock()
            tokens = self._level(source, now)
            if tokens >= cost:
                self._store(source, tokens - cost, now)
                return RateDecision(True)
            self._store(source, tokens, now)
            wait = (cost - tokens) / self.rate
            return RateDecision(False, max(1, math.ceil(wait)))

    def charge(self, source: str, cost: float) -> None:
        """Spend ``cost`` tokens whatever the balance (a failed authentication's penalty)."""
        with self._lock:
            now = self._clock()
            self._store(source, self._level(source, now) - cost, now)

    def tokens(self, source: str) -> float:
        """Tokens ``source`` has now (for tests and diagnostics)."""
        with self._lock:
            return self._level(source, self._clock())

    def _store(self, source: str, tokens: float, now: float) -> None:
        # A debt may go below zero (the auth penalty) but never beyond one bucket's worth.
        self._buckets[source] = (max(tokens, -self.capacity), now)
        self._buckets.move_to_end(source)
        while len(self._buckets) > self._max_sources:
            self._buckets.popitem(last=False)


# --------------------------------------------------------------------------- body


class BodyTooLarge(Exception):
    """The request body exceeds the limit."""


def declared_too_large(content_length: str | None, limit: int) -> bool:
    """Whether ``Content-Length`` already announces more than ``limit`` bytes."""
    if content_length is None:
        return False
    try:
        return int(content_length.strip()) > limit
    except ValueError:
        # A nonsense length is not "too large"; reading enforces the limit anyway.
        return False


async def read_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The whole body, raising BodyTooLarge as soon as it passes ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(size)
        parts.append(chunk)
    return b"".join(parts)


# --------------------------------------------------------------------------- JSON


@attrs.frozen
class BodyError:
    """Why a body is not a usable JSON object (400)."""

    code: str
    message: str


def parse_object(raw: bytes) -> dict[str, Any] | BodyError:
    """The body as a JSON object, or ``not_json`` / ``not_an_object``."""
    try:
        text = raw.decode("utf-8-sig")
        value = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return BodyError("not_json", "Body is not valid JSON")
    if not isinstance(value, dict):
        return BodyError("not_an_object", "Body must be a JSON object")
    return value


# --------------------------------------------------------------------------- authentication


def hmac_hex(secret: Secret, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``body`` keyed with ``secret`` (what X-PM-Signature carries)."""
    return hmac.new(secret.reveal().encode(), body, hashlib.sha256).hexdigest()


def _signature_valid(header: str, body: bytes, secrets_: Sequence[Secret]) -> bool:
    scheme, sep, given = header.strip().partition("=")
    if not sep or scheme.strip().lower() != "sha256":
        return False
    given_bytes = given.strip().lower().encode()
    # Check every key so timing does not reveal which one matched.
    results = [hmac.compare_digest(hmac_hex(s, body).encode(), given_bytes) for s in secrets_]
    return any(results)


def _token_valid(candidate: str, secrets_: Sequence[Secret]) -> bool:
    results = [s.matches(candidate) for s in secrets_]
    return any(results)


def authenticate(
    *,
    secrets_: Sequence[Secret],
    hmac_mode: str,
    header_token: str | None,
    body_secret: object,
    signature: str | None,
    body: bytes,
) -> bool:
    """Whether a webhook request proves knowledge of a configured secret (webhook.md 1.1).

    A matching ``X-PM-Token`` or body ``secret`` authenticates; so does a valid
    ``X-PM-Signature``. A signature that is present must verify (unless HMAC is off), and
    ``required`` mode demands one. No secrets configured: the check is off.
    """
    if not secrets_:
        return True
    signed = False
    if hmac_mode != "off" and signature is not None:
        if not _signature_valid(signature, body, secrets_):
            return False
        signed = True
    if hmac_mode == "required" and not signed:
        return False
    if signed:
        return True
    tokens: list[str] = []
    if header_token is not None:
        tokens.append(header_token)
    if isinstance(body_secret, str):
        tokens.append(body_secret)
    return any(_token_valid(t, secrets_) for t in tokens)


def bearer_ok(authorization: str | None, token: Secret) -> bool:
    """Whether ``Authorization: Bearer <token>`` carries ``token`` (constant-time)."""
    if authorization is None:
        return False
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return token.matches(value.strip())
