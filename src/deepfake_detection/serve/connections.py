"""Connections: read timeouts and per-client caps (uvicorn has neither), and an admission limit that
never refuses the health checks.

uvicorn waits forever for a request whose headers or body never finish, and its only cap
(`limit_concurrency`) counts every open connection and answers 503 to everything, `/healthz`
included, beyond it: 110 half-sent requests from one client took the service down. Here instead:

* `guarded_protocol` (uvicorn's h11 protocol, extended): a request's headers must arrive within
  `header_timeout` seconds and its body may pause at most `body_timeout` seconds (a slow but moving
  upload is fine); late ones are closed (408 when nothing was answered yet). A client may hold
  `per_client` connections: at the cap, its oldest connection that is still sending headers (or
  idle between requests) is closed to make room, so a client's own stalled sockets cannot lock it
  (or a health check from the same address) out; with none to close, the new one gets 429. Past
  `total` connections the same happens across clients (503 when nothing can be closed).
* `AdmissionMiddleware`: at most `capacity` requests in progress (before any upload is read: memory
  and spool files stay bounded); beyond it 503 with Retry-After, counted in `/metrics` like every
  response. `/healthz`, `/readyz` and `/metrics` are never refused. Live streams have their own caps
  (per client and in all), refused with close code 1008 or 1013.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)
MONITORING_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_REASONS = {408: "Request Timeout", 429: "Too Many Requests", 503: "Service Unavailable"}


def raw_response(status: int, detail: str) -> bytes:
    """A complete HTTP/1.1 error response (JSON body) that closes the connection."""
    body = json.dumps({"detail": detail}).encode()
    head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\nretry-after: 1\r\n\r\n")
    return head.encode() + body


class ConnectionGuard:
    """The state all connections of one server share: who holds how many, the limits, and a callback
    counting what was closed or refused (`on_close(reason)`, for /metrics)."""

    def __init__(self, *, per_client: int, total: int, header_timeout: float, body_timeout: float,
                 on_close: Callable[[str], None] | None = None) -> None:
        self.per_client, self.total = per_client, total
        self.header_timeout, self.body_timeout = header_timeout, body_timeout
        self.on_close = on_close or (lambda reason: None)
        self.by_client: dict[str, OrderedDict[int, Any]] = {}  # client -> its connections, oldest first
        self.open: OrderedDict[int, Any] = OrderedDict()

    def admit(self, conn: Any, client: str) -> int | None:
        """Register `conn`; None when admitted, else the status to refuse it with (429 or 503)."""
        mine = self.by_client.setdefault(client, OrderedDict())
        if len(mine) >= self.per_client and not self._evict(mine):
            return 429
        if len(self.open) >= self.total and not self._evict(self.open):
            return 503
        mine[id(conn)] = conn
        self.open[id(conn)] = conn
        return None

    def _evict(self, conns: OrderedDict[int, Any]) -> bool:
        """Close the oldest connection of `conns` that is not in the middle of a request."""
        victim = next((c for c in conns.values() if c.between_requests()), None)
        if victim is None:
            return False
        victim.close_connection("evicted")
        return True

    def release(self, conn: Any, client: str) -> None:
        self.open.pop(id(conn), None)
        mine = self.by_client.get(client)
        if mine is not None:
            mine.pop(id(conn), None)
            if not mine:
                del self.by_client[client]


def guarded_protocol(guard: ConnectionGuard) -> type[H11Protocol]:
    """uvicorn's h11 protocol with read timeouts and the guard's connection caps."""

    class GuardedProtocol(H11Protocol):
        _timer: asyncio.TimerHandle | None = None
        _admitted = False
        _upgraded = False
        _client_key = "unknown"

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._client_key = self.client[0] if self.client else "unknown"
            refused = guard.admit(self, self._client_key)
            if refused is not None:
                guard.on_close("client_limit" if refused == 429 else "total_limit")
                what = "connections from this client" if refused == 429 else "connections"
                transport.write(raw_response(refused, f"too many open {what}; retry shortly"))
                transport.close()
                return
            self._admitted = True
            self._arm(guard.header_timeout, "header_timeout")

        def between_requests(self) -> bool:
            """No request in progress: headers not (all) received yet, or idle after a response."""
            return self.cycle is None or self.cycle.response_complete

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._upgraded or self.transport.is_closing():  # a stream now: not ours to time
                return
            if self.between_requests():
                if self._timer is None or self._timer_reason != "header_timeout":
                    self._arm(guard.header_timeout, "header_timeout")  # a new request started arriving
            elif self.cycle.more_body:
                self._arm(guard.body_timeout, "body_timeout")  # the body moves: its pause starts anew
            else:
                self._disarm()

        def on_response_complete(self) -> None:
            self._disarm()  # uvicorn's keep-alive timer takes over until the next request's first bytes
            super().on_response_complete()

        def handle_websocket_upgrade(self, event: Any) -> None:
            self._upgraded = True
            self._release()  # the stream's own caps and idle timeout apply from here on
            super().handle_websocket_upgrade(event)

        def connection_lost(self, exc: Exception | None) -> None:
            self._release()
            super().connection_lost(exc)

        def close_connection(self, reason: str) -> None:
            guard.on_close(reason)
            if self.between_requests() and not self.transport.is_closing():
                self.transport.write(raw_response(408, "request not received in time")
                                     if reason == "header_timeout" else b"")
            self._release()
            self.transport.close()

        # --- timers -----------------------------------------------------------------------------
        _timer_reason = ""

        def _arm(self, seconds: float, reason: str) -> None:
            self._disarm()
            self._timer_reason = reason
            self._timer = self.loop.call_later(seconds, self._expired, reason)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expired(self, reason: str) -> None:
            self._timer = None
            if self._upgraded or self.transport.is_closing():
                return
            if reason == "body_timeout" and self.flow.read_paused:  # the app is not reading: not the client
                self._arm(guard.body_timeout, reason)
                return
            if reason == "header_timeout" and self.between_requests() and self._idle_keep_alive():
                return  # idle between requests: uvicorn's keep-alive timeout handles it
            log.info("closing a connection from %s: %s", self._client_key, reason.replace("_", " "))
            self.close_connection(reason)

        def _idle_keep_alive(self) -> bool:
            return self.timeout_keep_alive_task is not None

        def _release(self) -> None:
            self._disarm()
            if self._admitted:
                self._admitted = False
                guard.release(self, self._client_key)

    return GuardedProtocol


class AdmissionMiddleware:
    """At most `capacity` HTTP requests in progress (monitoring paths exempt) and at most `streams`
    live streams, `streams_per_client` per client; refusals are 503 (HTTP) or close codes 1013 / 1008."""

    def __init__(self, app: ASGIApp, capacity: int, streams: int, streams_per_client: int) -> None:
        self.app = app
        self.capacity, self.streams, self.streams_per_client = capacity, streams, streams_per_client
        self.in_flight = 0
        self.open_streams: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from deepfake_detection.serve.limits import client_host, refuse, route_path

        if scope["type"] == "http" and route_path(scope) not in MONITORING_PATHS:
            if self.in_flight >= self.capacity:
                await refuse(scope, receive, send, HTTPException(
                    503, "the service is at capacity; retry shortly", headers={"Retry-After": "1"}))
                return
            self.in_flight += 1
            try:
                await self.app(scope, receive, send)
            finally:
                self.in_flight -= 1
            return
        if scope["type"] == "websocket":
            client = client_host(scope)
            mine = self.open_streams.get(client, 0)
            if mine >= self.streams_per_client or sum(self.open_streams.values()) >= self.streams:
                await refuse(scope, receive, send, HTTPException(
                    503, f"too many live streams (at most {self.streams_per_client} per client); retry "
                         "shortly"), code=1008 if mine >= self.streams_per_client else 1013)
                return
            self.open_streams[client] = mine + 1
            try:
                await self.app(scope, receive, send)
            finally:
                self.open_streams[client] -= 1
                if not self.open_streams[client]:
                    del self.open_streams[client]
            return
        await self.app(scope, receive, send)
