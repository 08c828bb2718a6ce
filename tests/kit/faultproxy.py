"""A small threaded TCP fault proxy for HTTP/1.1 (openalgo.md 9, service.md 15).

Sits between a client and a server and, per request, either passes it through or injects a
connection fault the server itself cannot produce:

- ``pass``: forward both ways (keep-alive kept);
- ``refuse``: stop listening, so new connections are refused (open ones are closed);
- ``drop_after_request``: forward the request, wait for the whole response (the server has
  acted on it), then close the client connection before sending any response byte;
- ``reset_mid_response``: forward, send half of the response, then reset (RST) the connection;
- ``latency_ms`` (any mode): wait that long before relaying each response.

Only Content-Length framed messages are relayed (uvicorn/Starlette JSON responses are).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from typing import Literal

Mode = Literal["pass", "refuse", "drop_after_request", "reset_mid_response"]
_HEADER_END = b"\r\n\r\n"


class _Stream:
    """A socket with a read buffer, reading whole HTTP messages."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buffer += chunk
        return True

    def read_message(self, until_eof_without_length: bool) -> bytes | None:
        """One HTTP message (head + body), or None at a clean end of stream."""
        while _HEADER_END not in self.buffer:
            if not self._fill():
                return None
        head, _, rest = self.buffer.partition(_HEADER_END)
        length: int | None = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        self.buffer = rest
        if length is None:
            if not until_eof_without_length:
                length = 0
            else:
                while self._fill():
                    pass
                length = len(self.buffer)
        while len(self.buffer) < length:
            if not self._fill():
                break
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return head + _HEADER_END + body


class FaultProxy:
    """A TCP proxy to ``upstream`` with switchable faults; use as a context manager."""

    def __init__(
        self, upstream_host: str, upstream_port: int, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.mode: Mode = "pass"
        self.latency_ms = 0.0
        self.requests_forwarded = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._clients: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.port = port
        self._listen()
        self._thread = threading.Thread(target=self._accept_loop, name="faultproxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """``http://host:port`` of the proxy."""
        return f"http://{self.host}:{self.port}"

    def set_mode(self, mode: Mode, latency_ms: float | None = None) -> None:
        """Switch the fault for the following requests."""
        with self._lock:
            if latency_ms is not None:
                self.latency_ms = latency_ms
            previous, self.mode = self.mode, mode
            if mode == "refuse" and previous != "refuse":
                self._close_listener()
                for client in list(self._clients):
                    _close_quietly(client)
            elif mode != "refuse" and previous == "refuse":
                self._listen()

    def stop(self) -> None:
        """Stop accepting and close every connection."""
        self._stopping.set()
        with self._lock:
            self._close_listener()
            for client in list(self._clients):
                _close_quietly(client)
        self._thread.join(timeout=2)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ internals

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        self._listener = listener

    def _close_listener(self) -> None:
        if self._listener is not None:
            _close_quietly(self._listener)
            self._listener = None

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            listener = self._listener
            if listener is None:
                time.sleep(0.01)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            client.settimeout(None)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._clients.add(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        stream = _Stream(client)
        try:
            while not self._stopping.is_set():
                request = stream.read_message(until_eof_without_length=False)
                if request is None:
                    return
                mode, latency = self.mode, self.latency_ms
                if mode == "refuse":
                    return
                response = self._forward(request)
                if latency:
                    time.sleep(latency / 1000)
                if response is None or mode == "drop_after_request":
                    return  # closed before any response byte
                if mode == "reset_mid_response":
                    client.sendall(response[: max(1, len(response) // 2)])
                    _reset(client)
                    return
                client.sendall(response)
        except OSError:
            return
        finally:
            with self._lock:
                self._clients.discard(client)
            _close_quietly(client)

    def _forward(self, request: bytes) -> bytes | None:
        with socket.create_connection(self.upstream, timeout=30) as upstream:
            upstream.sendall(request)
            with self._lock:
                self.requests_forwarded += 1
            return _Stream(upstream).read_message(until_eof_without_length=True)


def _reset(sock: socket.socket) -> None:
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _close_quietly(sock: socket.socket) -> None:
    # shutdown() first: a bare close() from another thread leaves a blocked recv() holding
    # the socket open, so the peer would not see the FIN.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
