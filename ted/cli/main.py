"""`ted`: look after experience libraries from a shell.

    ted libraries                       ted history LIB
    ted show LIB [--version N]          ted diff LIB A B
    ted add LIB TEXT                    ted rollback LIB VERSION
    ted export LIB [--format json|md] [--output FILE]
    ted import LIB FILE [--replace] [--format json|md]
    ted config LIB [--teacher M] [--student M] [--budget N] [--max-items N] [--student-temperature T …]
    ted costs [--library LIB] [--job JOB]
    ted distill --dataset FILE --library LIB [--student M --teacher M --epochs 3 --rollouts 5 …]
    ted distill --resume JOB
    ted eval --dataset FILE --library LIB [--student M] [--samples K]

The database is --db, else TED_DB, else the file in the user's data directory — the same
one the MCP server uses, so what you change here the agents see at their next call. A
TedError prints `ted: <message>` on stderr and exits 1; a usage error exits 2.
"""

import argparse
import asyncio
import importlib.metadata
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pydantic_core
from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from ted import agent, transfer
from ted.cli.runs import add_commands, add_generation_options, generation_options
from ted.errors import InvalidInput, TedError
from ted.ledger import Ledger
from ted.llm.registry import split_name
from ted.store import Store
from ted.store.database import default_db_path
from ted.store.records import ChangeResult, LibraryList, library_name


async def libraries(store: Store, args: argparse.Namespace, out: Console) -> None:
    summaries = await store.list_libraries()
    if args.json:
        return _print_json(LibraryList(libraries=summaries))
    if not summaries:
        return out.print(f"No libraries in {store.path} yet. Start one with: ted add NAME TEXT", markup=False)
    table = _table("name", "version", "items", "tokens", "over", "attempts", "updated")
    for s in summaries:
        table.add_row(
            s.name,
            str(s.version),
            f"{s.items} / {s.max_items}",
            f"{s.tokens} / {s.token_budget}",
            Text("yes", style="bold red") if s.over_budget else "no",
            str(s.attempts),
            _time(s.updated_at),
        )
    out.print(table)


async def show(store: Store, args: argparse.Namespace, out: Console) -> None:
    if args.version is not None:
        past = await store.version(args.library, args.version)
        if args.json:
            return _print_json(past)
        table = _table(
            "id", "lesson", title=Text(f"{args.library} at version {past.version} ({past.kind}: {past.reason})")
        )
        for item in past.snapshot:
            table.add_row(item.id, Text(item.text))
        return out.print(table if past.snapshot else f"{args.library} had no lessons at version {past.version}.")
    items = await store.experiences(args.library)
    if args.json:
        return _print_json(items)
    prompt = await store.experience_prompt(args.library)
    if not items:
        return out.print(
            f"{args.library} has no lessons (version {prompt.version}). Add one with: ted add {args.library} TEXT"
        )
    table = _table(
        "id",
        "lesson",
        "used",
        "helpful",
        "harmful",
        "tokens",
        "priority",
        title=f"{args.library} · version {prompt.version}",
        caption=f"{len(items)} / {prompt.max_items} items · {prompt.tokens} / {prompt.token_budget} tokens",
    )
    for e in items:
        table.add_row(
            e.id,
            Text(e.text),
            str(e.usage_count),
            str(e.helpful_count),
            str(e.harmful_count),
            str(e.tokens),
            f"{e.priority:.2f}",
        )
    out.print(table)
    _warn_if_over_budget(out, prompt.over_budget, args.library)


async def add(store: Store, args: argparse.Namespace, out: Console) -> None:
    result = await agent.add_experience(store, args.library, args.text, source="cli")
    _report(out, result, f"Added {result.operations[0].id} to {args.library}")


async def history(store: Store, args: argparse.Namespace, out: Console) -> None:
    versions = await store.history(args.library)
    if args.json:
        return _print_json(versions)
    table = _table("version", "kind", "reason", "ops", "items", "time", title=f"history of {args.library}")
    for v in versions:
        table.add_row(
            str(v.version), v.kind, Text(v.reason), str(len(v.operations)), str(len(v.snapshot)), _time(v.created_at)
        )
    out.print(table)


async def diff(store: Store, args: argparse.Namespace, out: Console) -> None:
    d = await agent.diff(store, args.library, args.a, args.b)
    if args.json:
        return _print_json(d)
    out.print(f"{args.library}: version {d.from_version} → {d.to_version}")
    for item in d.added:
        out.print(Text(f"+ [{item.id}] {_indent(item.text)}", style="green"))
    for item in d.removed:
        out.print(Text(f"- [{item.id}] {_indent(item.text)}", style="red"))
    for change in d.changed:
        out.print(Text(f"~ [{change.id}] {_indent(change.before)}\n    → {_indent(change.after)}", style="yellow"))
    if not (d.added or d.removed or d.changed):
        out.print("No differences.")


async def rollback(store: Store, args: argparse.Namespace, out: Console) -> None:
    result = await agent.rollback(store, args.library, args.version)
    _report(out, result, f"Rolled {args.library} back to the content of version {args.version}")


async def export(store: Store, args: argparse.Namespace, out: Console) -> None:
    fmt = args.format or (transfer.format_of(args.output) if args.output else "json")
    text = transfer.render(await transfer.read_library(store, args.library), fmt)
    if args.output is None:
        sys.stdout.write(text)
        return
    try:
        args.output.write_text(text, encoding="utf-8")
    except OSError as e:
        raise InvalidInput(f"Cannot write {args.output}: {e.strerror}. Choose another --output path.") from None
    out.print(f"Wrote {len(text.splitlines())} lines of {fmt} for {args.library} to {args.output}", markup=False)


async def import_(store: Store, args: argparse.Namespace, out: Console) -> None:
    data = transfer.load(args.file, args.format)  # checks the whole file before any write
    result = await transfer.import_experiences(store, args.library, data, replace=args.replace, source=args.file.name)
    _report(out, result, f"Imported {_count(len(data.experiences), 'lesson')} from {args.file} into {args.library}")


async def config(store: Store, args: argparse.Namespace, out: Console) -> None:
    for model in (args.teacher, args.student):
        if model is not None:
            split_name(model)  # a typo should fail here, not at the first critique
    generation = {role: given for role in ("student", "teacher") if (given := generation_options(args, role))}
    changes = (args.teacher, args.student, args.budget, args.max_items)
    if all(v is None for v in changes) and not generation:
        state = await store.library_state(args.library)
    else:
        state = await store.configure(
            args.library,
            teacher=args.teacher,
            student=args.student,
            token_budget=args.budget,
            max_items=args.max_items,
            generation=generation,
        )
    if args.json:
        return _print_json(state.model_dump(mode="json", exclude={"experiences", "next_experience"}))
    sampling = [
        f"{role} {settings.model_dump_json(exclude_none=True)}"
        for role in ("student", "teacher")
        if (settings := getattr(state.settings, role)).model_dump(exclude_none=True)
    ]
    out.print(
        f"{state.name}: teacher {state.teacher_model or 'from TED_TEACHER'}, "
        f"student {state.student_model or 'from TED_STUDENT'}, "
        f"budget {state.settings.token_budget} tokens / {state.settings.max_items} lessons"
        + (f"; sampling: {', '.join(sampling)}" if sampling else ""),
        markup=False,
    )


async def costs(store: Store, args: argparse.Namespace, out: Console) -> None:
    rows = await Ledger(store).totals(library=args.library, job_id=args.job)
    if args.json:
        return _print_json(rows)
    if not rows:
        return out.print("No model calls recorded yet.")
    table = _table("role", "model", "calls", "failed", "input", "output", "cost", "time", title="tokens and cost")
    for r in rows:
        table.add_row(
            r.role,
            r.model,
            str(r.calls),
            str(r.failed),
            f"{r.input_tokens:,}",
            f"{r.output_tokens:,}",
            _dollars(r.cost_usd),
            f"{r.latency_ms / 1000:.1f} s",
        )
    known = [r.cost_usd for r in rows if r.cost_usd is not None]
    total = _dollars(sum(known)) + (" + unpriced calls" if len(known) < len(rows) else "")
    table.caption = f"{_count(sum(r.calls for r in rows), 'call')} · {total}"
    out.print(table)


def _dollars(value: float | None) -> str:
    # Unknown, not $0: a model missing from the price table (see TED_PRICES) has no price.
    return "unknown" if value is None else f"${value:,.4f}"


def _report(out: Console, result: ChangeResult, done: str) -> None:
    out.print(
        f"{done}: now version {result.version}, {_count(result.items, 'lesson')}, {result.tokens} tokens.", markup=False
    )
    _warn_if_over_budget(out, result.over_budget, result.library)


def _warn_if_over_budget(out: Console, over: bool, library: str) -> None:
    if over:
        out.print(
            Text(
                f"{library} is over its token or item budget: compress it with the compress_library tool, "
                "or the student's prompt carries more than it should.",
                style="yellow",
            )
        )


def _table(*columns: str, **options) -> Table:
    # In a narrow terminal rich squeezes the widest column first; the lesson is what people came for.
    # Model names are identifiers: fold them rather than cut them with an ellipsis.
    cells = (
        Column(c, min_width=20 if c in ("lesson", "reason") else None, no_wrap=c in ("model", "role"), overflow="fold")
        for c in columns
    )
    return Table(*cells, box=box.SIMPLE_HEAD, **options)


def _indent(text: str) -> str:
    return text.replace("\n", "\n    ")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _print_json(value: BaseModel | Sequence[BaseModel] | dict) -> None:
    # Plain stdout, not rich: scripts parse this, and rich would wrap and colour it.
    sys.stdout.write(pydantic_core.to_json(value, indent=2).decode() + "\n")


def _time(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def _db_option(parser: argparse.ArgumentParser, default) -> None:
    # Accepted before or after the command. A subcommand's default is SUPPRESS so its absent
    # --db does not overwrite one given before it; each parser gets its own action because
    # argparse shares `parents=` actions and their defaults between parsers.
    parser.add_argument(
        "--db", type=Path, default=default, help="database file (default: TED_DB, else the user data dir)"
    )


def _version() -> str:
    try:
        return importlib.metadata.version("ted-mcp")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ted", description="Look after TED experience libraries.")
    _db_option(parser, default=None)
    parser.add_argument("--version", action="version", version=f"ted-mcp {_version()}")
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

    command("libraries", libraries, "list the libraries", json=True, library=False)
    command("show", show, "show a library's lessons", json=True).add_argument(
        "--version", type=int, help="show the lessons as they were at this version"
    )
    command("add", add, "add a lesson").add_argument("text", help="the lesson, quoted")
    command("history", history, "list every version of a library", json=True)
    d = command("diff", diff, "show what changed between two versions", json=True)
    d.add_argument("a", type=int, metavar="A", help="the earlier version")
    d.add_argument("b", type=int, metavar="B", help="the later version")
    command("rollback", rollback, "restore a version's lessons, as a new version").add_argument("version", type=int)
    e = command("export", export, "write a library's lessons as JSON or Markdown")
    e.add_argument("--format", choices=["json", "md"], help="default: from --output's extension, else json")
    e.add_argument("--output", "-o", type=Path, help="file to write (default: stdout)")
    i = command("import", import_, "add the lessons of a JSON or Markdown file to a library")
    i.add_argument("file", type=Path, help="a .json or .md file, e.g. one `ted export` wrote")
    i.add_argument("--format", choices=["json", "md"], help="default: from the file's extension")
    i.add_argument("--replace", action="store_true", help="retire the library's current lessons in the same version")
    c = command("config", config, "show or set a library's teacher, student and budget", json=True)
    c.add_argument("--teacher", help="the teacher model, provider:model (default: TED_TEACHER)")
    c.add_argument("--student", help="the student model, provider:model (default: TED_STUDENT)")
    c.add_argument("--budget", type=int, help="token budget of the experience prompt (default 4000)")
    c.add_argument("--max-items", type=int, help="most lessons the library may hold (default 15)")
    add_generation_options(c)
    s = command("costs", costs, "model calls, tokens and cost per role and model", json=True, library=False)
    s.add_argument("--library", help="only calls made for this library")
    s.add_argument("--job", help="only calls made by this distillation job")
    add_commands(command)
    return parser


async def run(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if getattr(args, "library", None) is not None:
            library_name(args.library)  # before opening the database: a typo should not create a file
        async with Store.open(args.db or default_db_path()) as store:
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
