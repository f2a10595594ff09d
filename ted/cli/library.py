"""`ted` commands that read and change libraries and their lessons: the same operations as the
MCP tools, on the same database."""

import argparse
import getpass
import sys
from pathlib import Path

from rich.console import Console
from rich.text import Text

from ted import agent, transfer
from ted.cli import serving
from ted.cli.output import count, indent, local_time, print_json, report, table, warn_if_over_budget
from ted.cli.runs import add_generation_options, generation_options
from ted.errors import InvalidInput
from ted.ledger import Ledger
from ted.llm.registry import closing_models, split_name
from ted.store import Store
from ted.store.records import LibraryList


async def libraries(store: Store, args: argparse.Namespace, out: Console) -> None:
    summaries = await store.list_libraries()
    if args.json:
        return print_json(LibraryList(libraries=summaries))
    if not summaries:
        return out.print(f"No libraries in {store.path} yet. Start one with: ted add NAME TEXT", markup=False)
    listed = table(
        ("name", "name"),
        ("version", "number"),
        ("served", "number"),
        ("lessons", "number"),
        ("tokens", "number"),
        ("over", "number"),
        ("attempts", "number"),
        ("updated", "number"),
    )
    for s in summaries:
        listed.add_row(
            s.name,
            str(s.version),
            str(s.served_version) if s.serves == "promoted" else "working",
            f"{s.items}/{s.max_items}",
            f"{s.tokens}/{s.token_budget}",
            Text("yes", style="bold red") if s.over_budget else "no",
            str(s.attempts),
            local_time(s.updated_at),
        )
    out.print(listed)


async def show(store: Store, args: argparse.Namespace, out: Console) -> None:
    if args.version is not None:
        past = await store.version(args.library, args.version)
        if args.json:
            return print_json(past)
        listed = table(
            ("id", "label"),
            ("lesson", "text"),
            title=Text(f"{args.library} at version {past.version} ({past.kind}: {past.reason})"),
        )
        for item in past.snapshot:
            listed.add_row(item.id, Text(item.text))
        return out.print(listed if past.snapshot else f"{args.library} had no lessons at version {past.version}.")
    items = await store.experiences(args.library)
    if args.json:
        return print_json(items)
    prompt, settings = await store.whole_prompt(args.library, "working")
    if not items:
        return out.print(
            f"{args.library} has no lessons (version {prompt.version}). Add one with: ted add {args.library} TEXT"
        )
    measured = any(e.evidence for e in items)
    served = "" if prompt.served_version == prompt.version else f" · serves version {prompt.served_version}"
    listed = table(
        ("id", "label"),
        ("lesson", "text"),
        ("used", "number"),
        ("helped", "number"),
        ("harmed", "number"),
        ("tokens", "number"),
        ("priority", "number"),
        *([("evidence", "number")] if measured else []),
        title=f"{args.library} · version {prompt.version}{served}",
        caption=serving.kept(settings, len(items), prompt.tokens, measured),
    )
    for e in items:
        listed.add_row(
            e.id,
            Text(e.text),
            str(e.usage_count),
            str(e.helpful_count),
            str(e.harmful_count),
            str(e.tokens),
            f"{e.ranked(settings.priority):.2f}",
            *([serving.evidence_cell(e.evidence)] if measured else []),
        )
    out.print(listed)
    warn_if_over_budget(out, prompt.over_budget, args.library)


async def add(store: Store, args: argparse.Namespace, out: Console) -> None:
    result = await agent.add_experience(store, args.library, args.text, source="cli")
    report(out, result, f"Added {result.operations[0].id} to {args.library}")


async def edit(store: Store, args: argparse.Namespace, out: Console) -> None:
    result = await agent.edit_experience(store, args.library, args.id, args.text, source="cli")
    report(out, result, f"Edited {args.id} of {args.library}")


async def remove(store: Store, args: argparse.Namespace, out: Console) -> None:
    result = await agent.remove_experience(store, args.library, args.id, source="cli")
    report(
        out,
        result,
        f"Removed {args.id} from {args.library} (`ted rollback {args.library} {result.version - 1}` undoes it)",
    )


async def drop(store: Store, args: argparse.Namespace, out: Console) -> None:
    state = await store.library_state(args.library)  # a typo is refused before anything is asked
    if not args.yes:
        if not sys.stdin.isatty():
            raise InvalidInput(
                f"Deleting {args.library} cannot be undone: confirm with --yes (or run it on a terminal)."
            )
        out.print(
            f"Delete {args.library} for good: {count(len(state.experiences), 'lesson')}, every version and its "
            f"attempts? Type its name to confirm: ",
            end="",
            markup=False,
        )
        if input().strip() != args.library:
            return out.print("Not deleted.")
    gone = await store.delete_library(args.library)
    out.print(
        f"Deleted {gone.library}: {count(gone.lessons, 'lesson')}, {count(gone.versions, 'version')}, "
        f"{count(gone.attempts, 'attempt')}.",
        markup=False,
    )


async def history(store: Store, args: argparse.Namespace, out: Console) -> None:
    versions = await store.history(args.library)
    if args.json:
        return print_json(versions)
    listed = table(
        ("version", "number"),
        ("kind", "label"),
        ("reason", "text"),
        ("ops", "number"),
        ("lessons", "number"),
        ("time", "number"),
        title=f"history of {args.library}",
    )
    for v in versions:
        listed.add_row(
            str(v.version),
            v.kind,
            Text(v.reason),
            str(len(v.operations)),
            str(len(v.snapshot)),
            local_time(v.created_at),
        )
    out.print(listed)
    serving.print_promotions(out, versions)


async def diff(store: Store, args: argparse.Namespace, out: Console) -> None:
    d = await agent.diff(store, args.library, args.a, args.b)
    if args.json:
        return print_json(d)
    out.print(f"{args.library}: version {d.from_version} → {d.to_version}")
    for item in d.added:
        out.print(Text(f"+ [{item.id}] {indent(item.text)}", style="green"))
    for item in d.removed:
        out.print(Text(f"- [{item.id}] {indent(item.text)}", style="red"))
    for change in d.changed:
        out.print(Text(f"~ [{change.id}] {indent(change.before)}\n    → {indent(change.after)}", style="yellow"))
    if not (d.added or d.removed or d.changed):
        out.print("No differences.")


async def rollback(store: Store, args: argparse.Namespace, out: Console) -> None:
    result = await agent.rollback(store, args.library, args.version)
    report(out, result, f"Rolled {args.library} back to the content of version {args.version}")


async def compress(store: Store, args: argparse.Namespace, out: Console) -> None:
    async with closing_models() as models:
        result = await agent.compress(
            store, Ledger(store), models, args.library, strategy=args.strategy, dry_run=args.dry_run, seed=args.seed
        )
    if args.json:
        return print_json(result)
    what = "Would compress" if result.dry_run else "Compressed"
    out.print(
        f"{what} {args.library} ({result.strategy}): {result.items_before} → {result.items_after} lessons, "
        f"{result.tokens_before} → {result.tokens_after} of {result.token_budget} tokens"
        + ("" if result.dry_run else f"; now version {result.version}")
        + ".",
        markup=False,
    )
    for op in result.operations:
        out.print(
            f"  merge {', '.join(op.ids)} into {op.into}" if op.op == "merge" else f"  {op.op} {op.id}", markup=False
        )
    for dropped in result.dropped:
        out.print(f"  not applied: {dropped.reason}", markup=False)


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
    skipped = f" ({count(len(result.skipped), 'duplicate')} skipped)" if result.skipped else ""
    if result.change is None:
        return out.print(f"Nothing imported: {args.library} already has every lesson of {args.file}.", markup=False)
    imported = len(data.experiences) - len(result.skipped)
    report(out, result.change, f"Imported {count(imported, 'lesson')} from {args.file} into {args.library}{skipped}")


async def config(store: Store, args: argparse.Namespace, out: Console) -> None:
    for model in (args.teacher, args.student, args.guard):
        if model is not None:
            split_name(model)  # a typo should fail here, not at the first critique
    generation = {role: given for role in ("student", "teacher") if (given := generation_options(args, role))}
    quarantine = None if args.quarantine is None else args.quarantine == "on"
    choosing = {k: v for k in serving.CHOOSING if (v := getattr(args, k)) is not None}
    changes = (args.teacher, args.student, args.guard, args.budget, args.max_items, quarantine)
    if all(v is None for v in changes) and not generation and not choosing:
        state = await store.library_state(args.library)
    else:
        state = await store.configure(
            args.library,
            teacher=args.teacher,
            student=args.student,
            guard=args.guard,
            token_budget=args.budget,
            max_items=args.max_items,
            generation=generation,
            quarantine=quarantine,
            **choosing,
        )
    if args.serve is not None:
        await store.serve(args.library, args.serve, by=f"ted config ({getpass.getuser()})")
        state = await store.library_state(args.library)
    if args.json:
        return print_json(state.model_dump(mode="json", exclude={"experiences", "next_experience"}))
    sampling = [
        f"{role} {settings.model_dump_json(exclude_none=True)}"
        for role in ("student", "teacher")
        if (settings := getattr(state.settings, role)).model_dump(exclude_none=True)
    ]
    out.print(
        f"{state.name}: teacher {state.teacher_model or 'from TED_TEACHER'}, "
        f"student {state.student_model or 'from TED_STUDENT'}, "
        f"budget {state.settings.token_budget} tokens / {state.settings.max_items} lessons"
        + (f"; sampling: {', '.join(sampling)}" if sampling else "")
        + f"; guard {state.guard_model or 'from TED_GUARD (off when unset)'}, "
        f"refused lessons {'quarantined for review' if state.settings.quarantine else 'dropped'}"
        + f"; {serving.serves(state)}",
        markup=False,
    )


async def review(store: Store, args: argparse.Namespace, out: Console) -> None:
    if args.approve is not None or args.reject is not None:
        decided = await store.decide(args.approve or args.reject, approve=args.approve is not None)
        if args.json:
            return print_json(decided)
        done = f"version {decided.version}" if decided.version is not None else "nothing applied"
        return out.print(f"Quarantined lesson {decided.id} of {decided.library} {decided.state}: {done}.", markup=False)
    held = await store.quarantined(args.library, pending_only=not args.all)
    if args.json:
        return print_json(held)
    if not held:
        return out.print("No lessons are waiting for review.")
    listed = table(
        ("id", "number"),
        ("library", "name"),
        ("lesson", "text"),
        ("refused", "text"),
        ("state", "label"),
        title="quarantined lessons",
    )
    for q in held:
        listed.add_row(str(q.id), q.library, Text(q.text), Text(f"{q.refused_by}: {q.reason}"), q.state)
    out.print(listed)
    out.print("Approve one with `ted review --approve ID` (it is applied as a new version) or `--reject ID`.")


def add_commands(command) -> None:
    """Register the library commands with the `ted` parser's `command(...)` helper."""
    command("libraries", libraries, "list the libraries", json=True, library=False)
    command("show", show, "show a library's lessons", json=True).add_argument(
        "--version", type=int, help="show the lessons as they were at this version"
    )
    command("add", add, "add a lesson").add_argument("text", help="the lesson, quoted")
    e = command("edit", edit, "reword a lesson (same id, a new version)")
    e.add_argument("id", help="the lesson's id, e.g. E3")
    e.add_argument("text", help="its new text, quoted")
    command("rm", remove, "remove a lesson (a new version; rollback brings it back)").add_argument(
        "id", help="the lesson's id, e.g. E3"
    )
    command("drop", drop, "delete a library for good, after a confirmation").add_argument(
        "--yes", action="store_true", help="do not ask (needed when not run on a terminal)"
    )
    command("history", history, "list every version of a library", json=True)
    d = command("diff", diff, "show what changed between two versions", json=True)
    d.add_argument("a", type=int, metavar="A", help="the earlier version")
    d.add_argument("b", type=int, metavar="B", help="the later version")
    command("rollback", rollback, "restore a version's lessons, as a new version").add_argument("version", type=int)
    c = command("compress", compress, "bring a library within its budget", json=True)
    c.add_argument(
        "--strategy",
        choices=["teacher", "truncate", "random"],
        default="teacher",
        help="teacher merges, rewrites and deletes (needs a teacher model); truncate and random are the ablations",
    )
    c.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")
    c.add_argument("--seed", type=int, help="seed for --strategy random")
    x = command("export", export, "write a library's lessons as JSON or Markdown")
    x.add_argument("--format", choices=["json", "md"], help="default: from --output's extension, else json")
    x.add_argument("--output", "-o", type=Path, help="file to write (default: stdout)")
    i = command("import", import_, "add the lessons of a JSON or Markdown file to a library")
    i.add_argument("file", type=Path, help="a .json or .md file, e.g. one `ted export` wrote")
    i.add_argument("--format", choices=["json", "md"], help="default: from the file's extension")
    i.add_argument("--replace", action="store_true", help="retire the library's current lessons in the same version")
    g = command("config", config, "show or set a library's teacher, student and budget", json=True)
    g.add_argument("--teacher", help="the teacher model, provider:model (default: TED_TEACHER)")
    g.add_argument("--student", help="the student model, provider:model (default: TED_STUDENT)")
    g.add_argument("--guard", help="a model that reviews every new lesson, provider:model (default: TED_GUARD)")
    g.add_argument("--budget", type=int, help="token budget of the experience prompt (default 4000)")
    g.add_argument("--max-items", type=int, help="most lessons the library may hold (default 15)")
    serving.add_config_options(g)
    add_generation_options(g)
    g.add_argument(
        "--quarantine", choices=["on", "off"], help="keep refused lessons for `ted review` instead of dropping them"
    )
    r = command("review", review, "list, approve or reject quarantined lessons", json=True, library=False)
    r.add_argument("library", nargs="?", help="only this library's lessons")
    decision = r.add_mutually_exclusive_group()
    decision.add_argument("--approve", type=int, metavar="ID", help="apply this lesson as a new version")
    decision.add_argument("--reject", type=int, metavar="ID", help="drop this lesson for good")
    r.add_argument("--all", action="store_true", help="decided lessons too")
