"""`ted`: look after experience libraries from a shell.

    ted libraries                       ted history LIB
    ted show LIB [--version N]          ted diff LIB A B
    ted add LIB TEXT                    ted rollback LIB VERSION
    ted edit LIB ID TEXT                ted rm LIB ID
    ted drop LIB [--yes]                ted compress LIB [--strategy teacher|truncate|random]
    ted export LIB [--format json|md] [--output FILE]
    ted import LIB FILE [--replace] [--format json|md]
    ted config LIB [--teacher M] [--student M] [--guard M] [--budget N] [--max-items N] [--quarantine on|off]
                   [--student-temperature T …]
                   [--serve working|promoted] [--selection all|relevant] [--archive-items N] [--priority usage|evidence]
    ted review [LIB] [--approve ID | --reject ID] [--all]
    ted promote LIB VERSION|working     ted evidence LIB --dataset FILE --max-calls N
    ted distill --dataset FILE --library LIB [--student M --teacher M --epochs 3 --rollouts 5 …]
    ted distill --resume JOB            ted jobs [--library LIB]
    ted eval --dataset FILE --library LIB [--student M] [--samples K]
    ted costs [--library LIB] [--job JOB]
    ted setup CLIENT [--teacher M] [--student M]
    ted ui [--host 127.0.0.1] [--port 8766] [--token T]

The database is --db, else TED_DB, else the file in the user's data directory — the same
one the MCP server uses, so what you change here the agents see at their next call. A
TedError prints `ted: <message>` on stderr and exits 1; a usage error exits 2.
"""

import argparse
import asyncio
import importlib.metadata
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from ted.cli import library, runs, serving, setup, ui
from ted.errors import TedError
from ted.guard import Guard
from ted.ledger import Ledger
from ted.llm.registry import closing_models
from ted.store import Store
from ted.store.database import default_db_path
from ted.store.records import library_name


def _db_option(parser: argparse.ArgumentParser, default) -> None:
    # Accepted before or after the command. A subcommand's default is SUPPRESS so its absent
    # --db does not overwrite one given before it; each parser gets its own action because
    # argparse shares `parents=` actions and their defaults between parsers.
    parser.add_argument(
        "--db", type=Path, default=default, help="database file (default: TED_DB, else the user data dir)"
    )


def version() -> str:
    try:
        return importlib.metadata.version("ted-mcp")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ted", description="Look after TED experience libraries.")
    _db_option(parser, default=None)
    parser.add_argument("--version", action="version", version=f"ted-mcp {version()}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    def command(name: str, run, help: str, json: bool = False, library: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(run=run)
        _db_option(sub, default=argparse.SUPPRESS)
        if library:
            sub.add_argument("library", help="library name, e.g. gsm8k")
        if json:
            sub.add_argument("--json", action="store_true", help="print JSON for scripts")
        return sub

    library.add_commands(command)
    serving.add_commands(command)
    runs.add_commands(command)
    setup.add_command(command)
    ui.add_command(command)
    return parser


async def run(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        # Before opening the database: a typo or a refused option should not create a file.
        if getattr(args, "library", None) is not None:
            library_name(args.library)
        if (check := getattr(args, "check", None)) is not None:
            check(args)
        async with Store.open(args.db or default_db_path()) as store, closing_models() as models:
            store.reviewer = Guard(store, Ledger(store), models)  # a lesson's review, when a guard is set
            await args.run(store, args, Console(highlight=False))
    except TedError as e:
        print(f"ted: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return asyncio.run(run(argv))
    except KeyboardInterrupt:
        # A distillation interrupted here is resumable; `ted distill` printed how when it started.
        print("ted: interrupted.", file=sys.stderr)
        return 130
