"""`ted-mcp --transport http`: MCP over streamable HTTP at /mcp, and the dashboard under /ui.

Both answer under one rule (`ted.http_serving`): a bearer token beyond loopback (a blank one is
none), Host and Origin checked on every bind address, and connections that cannot pile up. /mcp
takes the token as `Authorization: Bearer`; the dashboard takes that too, or the session a
browser gets by typing it into its sign-in page (`ted.ui.access`), which never opens /mcp.
"""

from pathlib import Path

from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp

from ted.http_serving import BearerAuth, require_token, transport_security
from ted.ui.app import dashboard


def http_app(
    mcp: MCPServer,
    host: str,
    token: str | None,
    allowed_hosts: list[str] | tuple[str, ...] = (),
    db: Path | str | None = None,
) -> ASGIApp:
    """/mcp for MCP clients and /ui for browsers (on the database `db`); MissingToken off loopback
    without a token, before anything is opened."""
    token = require_token(host, token)
    app = mcp.streamable_http_app(host=host, transport_security=transport_security(host, allowed_hosts))
    mcp_app = BearerAuth(app, token) if token else app
    return dashboard(mcp_app, host=host, token=token, allowed_hosts=allowed_hosts, path=db)
