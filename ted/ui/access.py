"""Who may reach the dashboard, and how a page that changes something proves it came from it.

The rule is the HTTP transport's (`ted.http_serving`), the same for `ted ui` and /ui of
`ted-mcp --transport http`: Host and Origin must name this server on every bind address (the
MCP SDK's DNS-rebinding check, so a web page cannot rebind its domain to 127.0.0.1 and read the
dashboard), and beyond loopback the server refuses to start without a bearer token, and every
request must carry it: `Authorization: Bearer <token>`, or, for a browser that cannot send that
header, the session cookie that posting the token to the sign-in form sets (HttpOnly,
SameSite=Strict, and not the token itself, so the cookie never opens /mcp).

Approving a quarantined lesson is a person's decision, never an agent's: no MCP tool does it,
and the dashboard's approve and reject are POSTs that must carry its form token (random per
process, only readable by a page of the dashboard itself) and, when the browser sends them, an
Origin equal to the dashboard's own and a Sec-Fetch-Site of same-origin: a page on another site
can make a browser post a form, but it cannot read the token or forge those headers.
"""

import hashlib
import hmac
import secrets
from urllib.parse import parse_qs, quote, urlsplit

import anyio
from mcp.server.transport_security import TransportSecurityMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ted.http_serving import bearer_matches, require_token, transport_security

SESSION_COOKIE = "ted_ui_session"
CSRF_FIELD = "csrf"
LOGIN_PATH = "/login"
MAX_FORM_BYTES = 16_384


class Access:
    """ASGI middleware in front of the dashboard's pages: host check, token, login, form token."""

    def __init__(self, app: ASGIApp, *, host: str, token: str | None, allowed_hosts: list[str] | tuple[str, ...] = ()):
        self.app, self.token = app, require_token(host, token)
        self.hosts = TransportSecurityMiddleware(transport_security(host, allowed_hosts))
        # What the session cookie holds: derived from the token, so a leaked cookie is not the token.
        self.session = (
            hmac.new(self.token.encode(), b"ted-ui-session", hashlib.sha256).hexdigest() if self.token else None
        )
        self.form_token = secrets.token_urlsafe(32)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        body = b""
        if scope["method"] == "POST":
            # The dashboard's forms are a few fields; read the body here (bounded), once, and replay it.
            if (body := await _bounded_body(receive)) is None:
                return await PlainTextResponse("ted ui: form too large\n", 413)(scope, receive, send)
            receive = _replay(body, receive)
        refusal = await self._refusal(Request(scope, receive), body)
        if refusal is not None:
            return await refusal(scope, receive, send)
        scope.setdefault("state", {})["form_token"] = self.form_token
        await self.app(scope, receive, send)

    async def _refusal(self, request: Request, body: bytes) -> Response | None:
        if (refused := await self.hosts.validate_request(request)) is not None:
            return refused
        path = request.url.path.removeprefix(request.scope.get("root_path", ""))
        if path == LOGIN_PATH:
            return await self._login(request, body) if request.method == "POST" else None
        if self.session is not None and not self._signed_in(request):
            if request.method in ("GET", "HEAD"):
                return RedirectResponse(f"{request.scope.get('root_path', '')}{LOGIN_PATH}?next={quote(path)}", 303)
            return PlainTextResponse("ted ui: missing or wrong bearer token\n", 401, {"www-authenticate": "Bearer"})
        if request.method == "POST" and (why := self._forged(request, body)) is not None:
            return PlainTextResponse(f"ted ui: {why}\n", 403)
        return None

    def _signed_in(self, request: Request) -> bool:
        cookie = request.cookies.get(SESSION_COOKIE, "").encode()  # bytes: a str must be ASCII to compare
        sent = request.headers.get("authorization", "").encode()
        return bearer_matches(sent, self.token) or hmac.compare_digest(cookie, self.session.encode())

    def _forged(self, request: Request, body: bytes) -> str | None:
        """Why a POST is not from one of the dashboard's own pages, or None when it is."""
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
            return "this form was sent from another site; use the dashboard's own page."
        if request.headers.get("sec-fetch-site", "same-origin") != "same-origin":
            return "this form was sent from another site; use the dashboard's own page."
        sent = _form_field(body, CSRF_FIELD)
        if not hmac.compare_digest(sent.encode(), self.form_token.encode()):
            return "the page is out of date (the server restarted): reload it and try again."
        return None

    async def _login(self, request: Request, body: bytes) -> Response:
        root = request.scope.get("root_path", "")
        target = _local_path(_form_field(body, "next")) or "/"
        if self.session is None:
            return RedirectResponse(root + target, 303)
        if not hmac.compare_digest(_form_field(body, "token").encode(), self.token.encode()):
            await anyio.sleep(1)  # a guesser gets one try a second per connection, not thousands
            return RedirectResponse(f"{root}{LOGIN_PATH}?failed=1&next={quote(target)}", 303)
        response = RedirectResponse(root + target, 303)
        response.set_cookie(SESSION_COOKIE, self.session, httponly=True, samesite="strict", path=root or "/")
        return response


async def _bounded_body(receive: Receive) -> bytes | None:
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return body
        body += message.get("body", b"")
        if len(body) > MAX_FORM_BYTES:
            return None
        if not message.get("more_body", False):
            return body


def _replay(body: bytes, then: Receive) -> Receive:
    """A `receive` that gives the body already read, then whatever the client sends next (its disconnect)."""
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return await then()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _form_field(body: bytes, name: str) -> str:
    try:
        return parse_qs(body.decode(), max_num_fields=20).get(name, [""])[0]
    except (UnicodeDecodeError, ValueError):
        return ""


def _local_path(path: str) -> str | None:
    """`path` if it is a path on this site (no scheme, no host), else None: no open redirect."""
    parts = urlsplit(path)
    if parts.scheme or parts.netloc or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return None
    return path
