"""The Host header allow-list, against DNS rebinding.

A web page on `evil.example` can make its own name resolve to 127.0.0.1 after it loaded ("rebinding"):
the browser then sends the page's requests to this service as same-origin requests, with
`Host: evil.example`. Checking `Host` against the names this service is really reached by refuses them
(400), WebSocket upgrades included (closed with 1008). By default those are the loopback names and
addresses (and the address the service binds, when it is a specific one); an operator adds the public
names with `--allowed-hosts` (or `DFD_ALLOWED_HOSTS`; `*` allows any, for a proxy that checks Host
itself). `/healthz`, `/readyz` and `/metrics` answer whatever the Host, for orchestrators' probes and
scrapers (which use addresses); they hold no file name, image or result a page could steal.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "localhost.localdomain", "ip6-localhost"})
_WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::"})  # bind addresses that name no host
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def allowed_hosts(configured: Iterable[str], bind_host: str) -> frozenset[str]:
    """The host names (lower case, no port) a request may name: loopback, the bound address when it is
    a specific one, and the configured names (`*`: any)."""
    names = set(LOOPBACK_HOSTS)
    if bind_host not in _WILDCARD_BINDS:
        names.add(bind_host.strip("[]").lower())
    names.update(name.strip().strip("[]").lower() for name in configured if name.strip())
    return frozenset(names)


def host_name(host: str) -> str:
    """`Example.com:8000` -> `example.com`; `[::1]:8000` -> `::1`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.rsplit(":", 1)[0]
    return host


def host_allowed(host: str | None, allowed: frozenset[str]) -> bool:
    """True for a Host header naming an allowed host (a missing one: HTTP/1.0 clients, not browsers)."""
    if "*" in allowed or host is None:
        return True
    name = host_name(host)
    return name in allowed or any(a.startswith(".") and (name.endswith(a) or name == a[1:]) for a in allowed)


def host_refusal(host: str | None) -> HTTPException:
    return HTTPException(400, f"host {str(host)[:80]!r} is not served here (DNS rebinding protection; add "
                              "it with --allowed-hosts)")


class HostCheckMiddleware:
    """Refuses HTTP requests (400) and WebSocket upgrades (closed with 1008) whose Host is not allowed,
    before anything else runs."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from deepfake_detection.serve.limits import refuse, route_path

        if scope["type"] in ("http", "websocket") and route_path(scope) not in PROBE_PATHS:
            host = Headers(scope=scope).get("host")
            if not host_allowed(host, self.allowed):
                await refuse(scope, receive, send, host_refusal(host))
                return
        await self.app(scope, receive, send)
