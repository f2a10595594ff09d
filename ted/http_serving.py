"""Serving ted over HTTP (`ted-mcp --transport http` and `ted ui`): a bearer token beyond loopback,
Host and Origin checks on every address, and connections that cannot pile up. One rule for the
MCP endpoint and the dashboard alike.

- **Token.** On a loopback address only local programs can connect. Anywhere else the library
  would be open to the network, so the server refuses to start without a token, and answers 401
  to every request that does not carry it. A blank token (`--token ""`, `TED_HTTP_TOKEN=`) is no
  token.
- **Host and Origin** are checked on every bind address with the SDK's transport security
  settings (DNS-rebinding protection): the loopback names, the address bound, and for a
  wildcard bind this machine's names, plus what `--allowed-host` / `TED_HTTP_ALLOWED_HOSTS` add
  (a reverse proxy's public name, say). A forged Host gets 421, a foreign Origin 403.
- **Connections.** At most `MAX_CONNECTIONS` are open at once, and never more than half the
  process's file-descriptor limit (one more is closed as it arrives, and uvicorn answers 503
  past `MAX_CONCURRENCY` requests), so accepting never runs out of descriptors; a request's
  headers and body must arrive within `REQUEST_SECONDS` of its first connection (or of the
  previous response), and an idle kept-alive connection is closed after `KEEP_ALIVE_SECONDS`.
  So half-open and trickling connections are dropped on their own and the server serves again
  as soon as they go. The event loop's error handler only writes a line: the default one, when
  descriptors ran out, failed while logging and left the loop spinning on the listening socket.
"""

import asyncio
import hmac
import ipaddress
import socket
import sys
from typing import Any

import h11
import uvicorn
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from ted.errors import ConfigError

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
MAX_CONNECTIONS = 256
MAX_CONCURRENCY = 128
REQUEST_SECONDS = 10.0
KEEP_ALIVE_SECONDS = 5


class MissingToken(ConfigError):
    """Serving beyond loopback without a bearer token."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def token_or_none(token: str | None) -> str | None:
    """The token to require, or None: an empty or blank token is no token."""
    return token.strip() or None if token is not None else None


def require_token(host: str, token: str | None) -> str | None:
    """The token to require on `host` (None: none is); MissingToken when serving there without one
    would open the libraries to the network."""
    token = token_or_none(token)
    if token is None and not is_loopback(host):
        raise MissingToken(
            f"Refusing to serve on {host} without a bearer token: anyone who can reach it could rewrite "
            "your libraries. Set TED_HTTP_TOKEN or pass --token (a non-empty one), or bind to 127.0.0.1."
        )
    return token


def bearer_matches(sent: bytes, token: str) -> bool:
    """Whether an Authorization header's value is `Bearer <token>` (compared in constant time)."""
    return hmac.compare_digest(sent, f"Bearer {token}".encode())


class BearerAuth:
    """ASGI middleware: every HTTP request must send `Authorization: Bearer <token>`."""

    def __init__(self, app: ASGIApp, token: str):
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if not bearer_matches(dict(scope["headers"]).get(b"authorization", b""), self.token):
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")],
                    }
                )
                await send({"type": "http.response.body", "body": b"ted-mcp: missing or wrong bearer token\n"})
                return
        await self.app(scope, receive, send)


def _as_host(name: str) -> str:
    """How a name appears in a Host header: an IPv6 address in brackets."""
    try:
        return f"[{name.strip('[]')}]" if ipaddress.ip_address(name.strip("[]")).version == 6 else name
    except ValueError:
        return name


def transport_security(host: str, allowed: list[str] | tuple[str, ...] = ()) -> TransportSecuritySettings:
    """DNS-rebinding protection for a server bound to `host`: the names a browser may have used
    to reach it, with any port, and the matching origins."""
    names = {*LOOPBACK_NAMES, _as_host(host), *(_as_host(a.strip()) for a in allowed if a.strip())}
    if host in ("0.0.0.0", "::", ""):
        names -= {"0.0.0.0", "[::]", ""}
        names |= {socket.gethostname(), socket.getfqdn()}
    hosts = sorted(names)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[*hosts, *(f"{h}:*" for h in hosts)],
        allowed_origins=[f"{scheme}://{h}{port}" for h in hosts for scheme in ("http", "https") for port in ("", ":*")],
    )


def connection_cap() -> int:
    """MAX_CONNECTIONS, or half the descriptors this process may open if that is fewer."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return MAX_CONNECTIONS
    return MAX_CONNECTIONS if soft == resource.RLIM_INFINITY else max(8, min(MAX_CONNECTIONS, soft // 2))


class BoundedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a cap on open connections and a deadline for each request
    to arrive whole, so connections that send nothing, or a byte at a time, cannot hold the server."""

    max_connections = MAX_CONNECTIONS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self.connections.discard(self)
            transport.close()
            return
        self._start_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # cancels the timer: armed again below while a request is incomplete
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # arms the keep-alive timer for an idle connection
        self._start_deadline(arm=False)

    def _start_deadline(self, arm: bool = True) -> None:
        self._deadline = self.loop.time() + REQUEST_SECONDS
        if arm:
            self._arm()

    def _arm(self) -> None:
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_at(self._deadline, self.timeout_keep_alive_handler)


def _report(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # One plain line, nothing imported or formatted that could fail while descriptors are out.
    try:
        print(f"ted-mcp: {context.get('message')}: {context.get('exception')!r}", file=sys.stderr, flush=True)
    except Exception:  # noqa: BLE001 — a handler that raises is what wedged the loop
        pass


async def serve(app: ASGIApp, host: str, port: int) -> None:
    asyncio.get_running_loop().set_exception_handler(_report)
    BoundedH11Protocol.max_connections = connection_cap()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        http=BoundedH11Protocol,
        limit_concurrency=MAX_CONCURRENCY,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        backlog=BoundedH11Protocol.max_connections,
    )
    await uvicorn.Server(config).serve()
