"""Serving over streamable HTTP, with a bearer token whenever it listens beyond loopback.

On 127.0.0.1 only local programs can connect (and the SDK checks Host/Origin against DNS
rebinding). Anywhere else the library would be open to the network, so the server refuses
to start without a token, and answers 401 to every request that does not carry it.
"""

import hmac
import ipaddress

import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_NAMES = {"localhost"}


class MissingToken(Exception):
    pass


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class BearerAuth:
    """ASGI middleware: every HTTP request must send `Authorization: Bearer <token>`."""

    def __init__(self, app: ASGIApp, token: str):
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            sent = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(sent, self.expected):
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


def http_app(mcp: MCPServer, host: str, token: str | None) -> ASGIApp:
    if token is None and not is_loopback(host):
        raise MissingToken(
            f"Refusing to serve on {host} without a bearer token: anyone who can reach it could rewrite "
            "your libraries. Set TED_HTTP_TOKEN or pass --token, or bind to 127.0.0.1."
        )
    app = mcp.streamable_http_app(host=host)
    return BearerAuth(app, token) if token else app


async def serve(app: ASGIApp, host: str, port: int) -> None:
    await uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning")).serve()
