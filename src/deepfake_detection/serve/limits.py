"""Request limits: body size (413), media types (415), API key (401) and per-client rate (429)."""

from __future__ import annotations

import hmac
import math
import threading
import time
from collections import OrderedDict

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/bmp", "image/x-ms-bmp", "image/tiff",
                         "image/gif", "image/pjpeg", "image/jpg", "application/octet-stream"})
VIDEO_TYPES = frozenset({"video/mp4", "video/quicktime", "video/x-msvideo", "video/avi", "video/x-matroska",
                         "video/webm", "video/x-m4v", "application/octet-stream"})
API_KEY_HEADER = "X-API-Key"


def check_media_type(content_type: str | None, allowed: frozenset[str], what: str) -> None:
    """415 unless the declared type is one we decode (octet-stream: the decoder decides)."""
    media = (content_type or "application/octet-stream").split(";")[0].strip().lower()
    if media not in allowed:
        kinds = ", ".join(sorted(t for t in allowed if t != "application/octet-stream"))
        raise HTTPException(415, f"unsupported media type {media!r} for {what}; send one of: {kinds}")


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is over the upload limit of {limit / 1024 / 1024:g} MB")


class BodyLimitMiddleware:
    """Refuses request bodies over `limit` bytes: at once from Content-Length, else while streaming,
    so an upload never occupies more than the limit (memory or spool file) however it is sent."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await send_error(send, BodyTooLarge(self.limit))
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)  # FastAPI turns HTTPExceptions into responses
            return message

        await self.app(scope, limited_receive, send)


async def send_error(send: Send, exc: HTTPException) -> None:
    """Answer with the error as JSON from a middleware, before the app has seen the request."""
    import json

    body = json.dumps({"detail": exc.detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    """API key (401) and rate limit (429) for HTTP requests under `prefix`, checked before any body is
    read: a refused client cannot make the service receive an upload."""

    def __init__(self, app: ASGIApp, api_key: str | None, limiter: RateLimiter, prefix: str = "/v1/") -> None:
        self.app = app
        self.api_key = api_key
        self.limiter = limiter
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and route_path(scope).startswith(self.prefix):
            try:
                # The rate limit first: wrong keys use up tokens too, so keys cannot be guessed fast.
                self.limiter.check(client_host(scope))
                check_api_key(self.api_key, Headers(scope=scope).get(API_KEY_HEADER))
            except HTTPException as exc:
                await send_error(send, exc)
                return
        await self.app(scope, receive, send)


def route_path(scope: Scope) -> str:
    """The path the routes see. Behind a prefix (uvicorn --root-path /api) servers put the prefix in
    front of scope["path"] ("/api/v1/detect"); the routes match on the path without it."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root):len(root) + 1] in ("", "/"):
        return path[len(root):]
    return path


def client_host(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def check_origin(origin: str | None, host: str | None, allowed: list[str],
                 hosts: frozenset[str] = frozenset({"*"})) -> None:
    """403 for a browser page from another site opening the stream (browsers always send Origin on
    WebSockets, and CORS does not apply to them): only this service's own pages and the configured
    CORS origins may. The page's own origin must match Host *and* name an allowed host (`hosts`): a
    rebound name matches its Host, so Host alone proves nothing. Clients that send no Origin (scripts,
    other services) are not browsers: allowed."""
    from deepfake_detection.serve.hosts import host_allowed

    if origin is None:
        return
    if origin in allowed or "*" in allowed:
        return
    netloc = origin.split("://", 1)[-1].rstrip("/")
    if host is not None and netloc.lower() == host.lower() and host_allowed(netloc, hosts):
        return
    raise HTTPException(403, f"origin {origin[:80]} may not open the stream (configure it with --cors)")


async def refuse(scope: Scope, receive: Receive, send: Send, exc: HTTPException, *, code: int = 1008) -> None:
    """Refuse before the app runs: an HTTP request gets the JSON error; a WebSocket is accepted and
    closed at once with `code` (1008, policy violation, by default) and the reason, as docs/serve.md
    states (closing before accepting makes the server answer the handshake with a bare HTTP 403)."""
    if scope["type"] == "http":
        await send_error(send, exc)
        return
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": code, "reason": str(exc.detail)[:120]})


def check_api_key(configured: str | None, given: str | None) -> None:
    """401 unless no key is configured or the given one matches (constant-time comparison)."""
    if configured is None:
        return
    if given is None or not hmac.compare_digest(given.encode(), configured.encode()):
        raise HTTPException(401, f"missing or wrong API key (send it in the {API_KEY_HEADER} header)",
                            headers={"WWW-Authenticate": API_KEY_HEADER})


class RateLimiter:
    """Token bucket per client: `per_minute` requests a minute (a fraction for hourly limits), bursts
    up to a minute's worth (at least one request).

    Idle clients are forgotten (oldest first) beyond `max_clients`, so the table stays small."""

    def __init__(self, per_minute: float, *, max_clients: int = 10_000) -> None:
        self.rate = per_minute / 60.0  # tokens a second
        self.burst = max(1.0, per_minute)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, time)
        self._lock = threading.Lock()

    def describe(self) -> str:
        per_minute = self.rate * 60
        return f"{per_minute:g}/min" if per_minute >= 1 else f"{per_minute * 60:g}/h"

    def check(self, client: str) -> None:
        """429 with Retry-After when `client` has no token left."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        if not allowed:
            wait = math.ceil((1.0 - tokens) / self.rate)
            raise HTTPException(429, f"rate limit of {self.describe()} exceeded",
                                headers={"Retry-After": str(wait)})
