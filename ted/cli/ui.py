"""`ted ui`: the dashboard in a browser, on the same database as the other commands.

    ted ui [--host 127.0.0.1] [--port 8766] [--token T] [--allowed-host NAME]

It serves under the HTTP transport's rules (`ted.http_serving`): loopback by default, a bearer
token required anywhere else (checked before the database is opened), Host and Origin checked
on every address, and connections that cannot pile up.
"""

import argparse
import os

from rich.console import Console

from ted.store import Store

# uvicorn, the MCP SDK's header checks, starlette and jinja2 are imported by this command only,
# so the other commands start without them.


def check(args: argparse.Namespace) -> None:
    from ted.http_serving import require_token

    require_token(args.host, args.token)


async def ui(store: Store, args: argparse.Namespace, out: Console) -> None:
    from ted.http_serving import serve
    from ted.ui.app import dashboard

    app = dashboard(host=args.host, token=args.token, allowed_hosts=args.allowed_host, store=store)
    out.print(f"ted ui: the dashboard of {store.path} is on http://{args.host}:{args.port}/ui/", markup=False)
    await serve(app, args.host, args.port)


def add_serving_options(parser: argparse.ArgumentParser, port: int) -> None:
    """--host, --port, --token and --allowed-host, the same for `ted ui` and `ted-mcp --transport http`."""
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=port, help=f"port (default {port})")
    parser.add_argument(
        "--token",
        default=os.environ.get("TED_HTTP_TOKEN"),
        help="bearer token clients must send, required off loopback (default: $TED_HTTP_TOKEN)",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[h.strip() for h in os.environ.get("TED_HTTP_ALLOWED_HOSTS", "").split(",") if h.strip()],
        metavar="NAME",
        help="another Host name clients may use, e.g. a reverse proxy's (repeatable; $TED_HTTP_ALLOWED_HOSTS, "
        "comma-separated); the loopback names and the bind address are always allowed",
    )


def add_command(command) -> None:
    u = command("ui", ui, "serve the dashboard: libraries, versions, jobs, reports, review", library=False)
    add_serving_options(u, 8766)
    u.set_defaults(check=check)  # before the database is opened: a refused token touches no file
