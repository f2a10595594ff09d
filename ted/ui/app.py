"""The dashboard as an ASGI app: server-rendered pages under /ui, behind `ted.ui.access`.

`dashboard(...)` serves /ui and hands every other path to `other` (the MCP app under
`ted-mcp --transport http`; for `ted ui`, a redirect to /ui). It opens its own store on the
database for as long as the server runs (or uses the one it is given), so it works the same in
either process. Pages are HTML rendered by Jinja2 with autoescaping on: lesson texts, attempts
and job errors are untrusted, and are shown, never interpreted. The one script (`live.js`)
refreshes a running job's figures with HTML the server renders, so there is one renderer.
"""

import tempfile
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

import anyio
from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from ted.errors import InvalidInput, NotFound, TedError
from ted.ledger import Ledger
from ted.pricing import format_cost
from ted.runs import evaluations, jobs, plots
from ted.runs.report import distill_report
from ted.store import Store
from ted.store.records import library_name
from ted.ui import pages
from ted.ui.access import CSRF_FIELD, Access

PREFIX = "/ui"
# Everything the pages load comes from the dashboard itself; nothing may frame it (no clickjacking
# of the approve button), and forms post only to it.
HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}

ENV = Environment(loader=PackageLoader("ted.ui"), autoescape=True, undefined=StrictUndefined, trim_blocks=True)


def _when(moment: datetime | None) -> str:
    return "–" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M")


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


ENV.filters.update(when=_when, percent=_percent, cost=format_cost)
ENV.globals.update(csrf_field=CSRF_FIELD, provenance_items=pages.provenance_items)


def render(request: Request, template: str, status: int = 200, **context) -> HTMLResponse:
    html = ENV.get_template(template).render(
        root=request.scope.get("root_path", ""),
        form_token=request.scope["state"]["form_token"],
        path=request.url.path,
        **context,
    )
    return HTMLResponse(html, status)


def _store(request: Request) -> Store:
    return request.app.state.store


def _ledger(request: Request) -> Ledger:
    return Ledger(request.app.state.store)


def _name(request: Request) -> str:
    return library_name(request.path_params["name"])


def _number(request: Request, key: str, default: int | None = None) -> int | None:
    value = request.query_params.get(key)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"{key} must be a whole number such as 3, not {value[:40]!r}.") from None


async def libraries_page(request: Request) -> Response:
    return render(request, "libraries.html", rows=await pages.libraries(_store(request)))


async def library_page(request: Request) -> Response:
    return render(request, "library.html", page=await pages.library(_store(request), _name(request)))


async def lesson_page(request: Request) -> Response:
    page = await pages.lesson(_store(request), _name(request), request.path_params["lesson_id"])
    return render(request, "lesson.html", page=page)


async def history_page(request: Request) -> Response:
    page = await pages.history(_store(request), _name(request), _number(request, "before"))
    return render(request, "history.html", page=page)


async def diff_page(request: Request) -> Response:
    a, b = _number(request, "from"), _number(request, "to")
    return render(request, "diff.html", page=await pages.diff(_store(request), _name(request), a, b))


async def jobs_page(request: Request) -> Response:
    return render(request, "jobs.html", rows=await pages.job_rows(_store(request), _ledger(request)))


def job_view(template: str) -> Callable[[Request], Awaitable[Response]]:
    """A page of one job: the job itself, the part of it live.js refreshes, its report."""

    async def view(request: Request) -> Response:
        page = await pages.job(_store(request), _ledger(request), request.path_params["job_id"])
        return render(request, template, page=page)

    return view


async def reports_page(request: Request) -> Response:
    return render(request, "reports.html", page=await pages.reports(_store(request)))


async def evaluation_page(request: Request) -> Response:
    report = await evaluations.get(_store(request), request.path_params["report_id"])
    return render(request, "evaluation.html", report=report)


async def evaluation_plot(request: Request) -> Response:
    report = await evaluations.get(_store(request), request.path_params["report_id"])
    return await _png(plots.plot_evaluation, report)


async def distillation_plot(request: Request) -> Response:
    job = await jobs.get(_store(request), request.path_params["job_id"])
    return await _png(plots.plot_distillation, await distill_report(_store(request), _ledger(request), job))


async def _png(plot: Callable, report) -> Response:
    """The report's plot, drawn as `ted eval` / `ted distill` draw report.png (off the event loop)."""

    def draw() -> bytes:
        with tempfile.TemporaryDirectory() as folder:
            return plot(report, Path(folder) / "report.png").read_bytes()

    return Response(await anyio.to_thread.run_sync(draw), media_type="image/png")


async def review_page(request: Request) -> Response:
    # What was just decided is read back from the store, not echoed from the address.
    return render(request, "review.html", page=await pages.review(_store(request), _number(request, "decided")))


def decision(approve: bool) -> Callable[[Request], Awaitable[Response]]:
    """The POST by which a person approves or rejects a quarantined lesson (`Store.decide`)."""

    async def view(request: Request) -> Response:
        decided = await _store(request).decide(request.path_params["lesson_id"], approve=approve)
        return RedirectResponse(f"{request.scope.get('root_path', '')}/review?decided={decided.id}", 303)

    return view


async def login_page(request: Request) -> Response:
    failed = request.query_params.get("failed") == "1"
    return render(request, "login.html", next=request.query_params.get("next", "/"), failed=failed)


async def _error(request: Request, error: Exception) -> Response:
    status = 404 if isinstance(error, NotFound) else 400 if isinstance(error, InvalidInput) else 500
    return render(request, "error.html", status=status, message=str(error), status_code=status)


def pages_app() -> Starlette:
    """The pages, at paths relative to where they are mounted."""
    routes = [
        Route("/", libraries_page),
        Route("/libraries/{name}", library_page),
        Route("/libraries/{name}/lessons/{lesson_id}", lesson_page),
        Route("/libraries/{name}/history", history_page),
        Route("/libraries/{name}/diff", diff_page),
        Route("/jobs", jobs_page),
        Route("/jobs/{job_id}", job_view("job.html")),
        Route("/jobs/{job_id}/live", job_view("job_live.html")),
        Route("/jobs/{job_id}/report", job_view("distillation.html")),
        Route("/jobs/{job_id}/report.png", distillation_plot),
        Route("/reports", reports_page),
        Route("/reports/{report_id}", evaluation_page),
        Route("/reports/{report_id}/report.png", evaluation_plot),
        Route("/review", review_page),
        Route("/review/{lesson_id:int}/approve", decision(approve=True), methods=["POST"]),
        Route("/review/{lesson_id:int}/reject", decision(approve=False), methods=["POST"]),
        Route("/login", login_page),
        Mount("/static", StaticFiles(packages=[("ted.ui", "static")]), name="static"),
    ]
    return Starlette(routes=routes, exception_handlers={TedError: _error})


class Dashboard:
    """/ui to the dashboard, every other path to `other`; the dashboard's store open while the server runs."""

    def __init__(self, other: ASGIApp, access: dict, store: Store | None, path: Path | None):
        self.other, self.path = other, path
        self.pages = pages_app()
        self.pages.state.store = store  # or, given a path, the store the lifespan opens
        site = Starlette(routes=[Mount(PREFIX, app=Access(self.pages, **access))])
        self.site = _with_headers(site)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self.pages.state.store is None:
            # Opened before the other app starts and closed after it stops.
            async with Store.open(self.path) as store:
                self.pages.state.store = store
                try:
                    return await self.other(scope, receive, send)
                finally:
                    self.pages.state.store = None
        path = scope.get("path", "")
        under = path == PREFIX or path.startswith(PREFIX + "/")
        await (self.site if under and scope["type"] == "http" else self.other)(scope, receive, send)


def _with_headers(app: ASGIApp) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    *((k.encode(), v.encode()) for k, v in HEADERS.items()),
                ]
            await send(message)

        await app(scope, receive, sending)

    return wrapped


async def _to_dashboard(request: Request) -> Response:
    return RedirectResponse(PREFIX + "/", 307)


def dashboard(
    other: ASGIApp | None = None,
    *,
    host: str,
    token: str | None,
    allowed_hosts: list[str] | tuple[str, ...] = (),
    store: Store | None = None,
    path: Path | str | None = None,
) -> Dashboard:
    """The dashboard under /ui in front of `other` (default: a redirect from / to /ui/), served on
    `host` under `ted.http_serving`'s rules (`allowed_hosts`: more Host names browsers may use).

    Give the `store` to use, or the `path` of the database to open while the server runs.
    Raises MissingToken when `host` is not loopback and there is no token.
    """
    if other is None:
        other = Starlette(routes=[Route("/", _to_dashboard)])
    access = {"host": host, "token": token, "allowed_hosts": allowed_hosts}  # who may reach it: `Access`
    return Dashboard(other, access, store=store, path=Path(path) if path is not None else None)
