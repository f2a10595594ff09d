"""`ted-mcp`: run the server over stdio (what Claude Desktop launches) or streamable HTTP.

The database is opened, migrated and verified before anything listens: a file written by a
newer ted-mcp, or a damaged one, stops the server with the reason instead of a server that
says it serves and then fails every call.
"""

import argparse
import importlib.metadata
import sys
from pathlib import Path

import anyio

from ted.cli.ui import add_serving_options
from ted.errors import TedError
from ted.http_serving import MissingToken, serve
from ted.store import Store
from ted.store.database import default_db_path
from ted_server.app import build_server
from ted_server.stdio import run_stdio

WAITING = (
    "ted-mcp: waiting for an MCP client on stdin. Clients such as Claude Desktop start this command "
    "themselves (`ted setup CLIENT` prints their configuration); press Ctrl-C to quit."
)


async def check_database(path: Path) -> None:
    async with Store.open(path, verify=True):
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ted-mcp", description="The ted-mcp experience-library MCP server.")
    parser.add_argument("--version", action="version", version=f"ted-mcp {importlib.metadata.version('ted-mcp')}")
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    add_serving_options(parser, 8765)  # HTTP only; the same options and rules as `ted ui`
    parser.add_argument("--db", default=None, help="SQLite file (default: $TED_DB or the user data directory).")
    parser.add_argument(
        "--resume-jobs",
        action="store_true",
        help="Take over interrupted distillation jobs that this process's model settings can run "
        "(without it they are only listed, with the command that resumes them).",
    )
    parser.add_argument(
        "--allow-test-models",
        action="store_true",
        help="Let clients name the in-process test doubles (scripted:…); for tests only.",
    )
    args = parser.parse_args(argv)

    path = Path(args.db) if args.db else default_db_path()
    try:
        mcp = build_server(path, resume_jobs=args.resume_jobs, allow_test_models=args.allow_test_models)
        # The arguments first (a refused token touches no database), then the database, then listen.
        app = None
        if args.transport == "http":
            from ted_server.http import http_app  # the dashboard's pages and templates: only for HTTP

            app = http_app(mcp, args.host, args.token, args.allowed_host, path)
        anyio.run(check_database, path)
        if app is None:
            if sys.stdin.isatty():  # a person, not a client: say what this is and how to leave
                print(WAITING, file=sys.stderr, flush=True)
            anyio.run(run_stdio, mcp)
        else:
            url = f"http://{args.host}:{args.port}"
            print(f"ted-mcp: serving MCP on {url}/mcp and the dashboard on {url}/ui/", file=sys.stderr, flush=True)
            anyio.run(serve, app, args.host, args.port)
    except MissingToken as e:
        parser.exit(2, f"ted-mcp: {e}\n")
    except TedError as e:
        parser.exit(1, f"ted-mcp: {e}\n")
    except KeyboardInterrupt:
        parser.exit(130, "ted-mcp: stopped.\n")


if __name__ == "__main__":
    main()
