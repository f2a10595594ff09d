"""`ted-mcp`: run the server over stdio (what Claude Desktop launches) or streamable HTTP."""

import argparse
import importlib.metadata
import os
import sys

import anyio

from ted_server.app import build_server
from ted_server.http import MissingToken, http_app, serve
from ted_server.stdio import run_stdio

WAITING = (
    "ted-mcp: waiting for an MCP client on stdin. Clients such as Claude Desktop start this command "
    "themselves (`ted setup CLIENT` prints their configuration); press Ctrl-C to quit."
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ted-mcp", description="The ted-mcp experience-library MCP server.")
    parser.add_argument("--version", action="version", version=f"ted-mcp {importlib.metadata.version('ted-mcp')}")
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1).")
    parser.add_argument("--port", type=int, default=8765, help="HTTP port (default 8765).")
    parser.add_argument(
        "--token",
        default=os.environ.get("TED_HTTP_TOKEN"),
        help="Bearer token HTTP clients must send; required off loopback (default: $TED_HTTP_TOKEN).",
    )
    parser.add_argument("--db", default=None, help="SQLite file (default: $TED_DB or the user data directory).")
    parser.add_argument(
        "--resume-jobs",
        action="store_true",
        help="Take over interrupted distillation jobs that this process's model settings can run "
        "(without it they are only listed, with the command that resumes them).",
    )
    args = parser.parse_args(argv)

    mcp = build_server(args.db, resume_jobs=args.resume_jobs)
    try:
        if args.transport == "stdio":
            if sys.stdin.isatty():  # a person, not a client: say what this is and how to leave
                print(WAITING, file=sys.stderr, flush=True)
            anyio.run(run_stdio, mcp)
        else:
            app = http_app(mcp, args.host, args.token)
            print(f"ted-mcp: serving MCP on http://{args.host}:{args.port}/mcp", file=sys.stderr, flush=True)
            anyio.run(serve, app, args.host, args.port)
    except MissingToken as e:
        parser.exit(2, f"ted-mcp: {e}\n")
    except KeyboardInterrupt:
        parser.exit(130, "ted-mcp: stopped.\n")


if __name__ == "__main__":
    main()
