"""`ted promote` and `ted evidence`, and how the library commands show what a library serves:
its served and working versions, promotions and refusals, and each lesson's evidence.

    ted promote LIB VERSION|working [--reason TEXT]
    ted evidence LIB --dataset FILE [--samples K] [--limit N] [--version served|working|N] --max-calls N
    ted evidence LIB --dataset FILE --estimate
"""

import argparse
import getpass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from ted import agent
from ted.cli.output import local_time, table
from ted.cli.runs import version_choice
from ted.errors import InvalidInput
from ted.ledger import Ledger
from ted.llm.registry import closing_models
from ted.runs.datasets import load_dataset
from ted.runs.evidence import EvidenceReport, measure_evidence, plan_evidence
from ted.runs.report_files import write_evidence_report
from ted.store import Store
from ted.store.records import LessonEvidence, LibrarySettings, LibraryState, LibraryVersion

# The `ted config` options that choose and rank lessons, by their LibrarySettings names.
CHOOSING = ("selection", "archive_items", "archive_tokens", "priority")


def promoted_choice(text: str) -> str | int:
    """`working` or a version number, as `ted promote` takes them."""
    if text == "served":
        raise argparse.ArgumentTypeError("give a version number or 'working'; the served version is served already")
    return version_choice(text)


async def promote(store: Store, args: argparse.Namespace, out: Console) -> None:
    by = f"ted promote ({getpass.getuser()})"
    done = await agent.promote(store, args.library, args.version, by=by, reason=args.reason)
    out.print(
        f"{args.library} now serves version {done.served_version} (working version {done.working_version}); "
        f"critiques change the working version until the next promotion. `ted config {args.library} --serve working` "
        "serves the working version again.",
        markup=False,
    )


async def evidence(store: Store, args: argparse.Namespace, out: Console) -> None:
    data = await load_dataset(args.dataset, limit=args.limit)
    measurement = await plan_evidence(store, args.library, data.problems, version=args.version, samples=args.samples)
    guess = measurement.estimate()
    out.print(
        f"{guess.lessons} lessons of {args.library} v{guess.version} on {guess.problems} problems × {guess.samples} "
        f"samples: {guess.calls:,} student answers ({guess.upper_bound:,} before shared prompts are counted once).",
        markup=False,
    )
    if args.estimate:
        return
    if args.max_calls is None:
        raise InvalidInput(f"Set the budget: run again with --max-calls {guess.calls} (or more).")
    measurement.within(args.max_calls)  # refused before a model is named
    state = await store.library_state(args.library)
    progress = Progress(TextColumn("measuring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=out)
    async with closing_models() as models:
        with progress as bar:
            task = bar.add_task("measuring", total=guess.calls)
            report = await measure_evidence(
                store,
                Ledger(store),
                models(state.model_for("student", args.student)),
                measurement,
                dataset=str(data.path or data.name),
                max_calls=args.max_calls,
                settings=state.generation_for("student"),
                concurrency=args.concurrency,
                on_answer=lambda _: bar.update(task, advance=1),
            )
    folder = args.report or Path("ted-reports") / f"evidence-{args.library}-v{report.version}"
    files = write_evidence_report(report, folder)
    _print_evidence(out, report)
    out.print(f"Stored with the lessons (ted show {args.library}). Report: {files.markdown_path}", markup=False)


def _print_evidence(out: Console, report: EvidenceReport) -> None:
    listed = table(
        ("id", "label"),
        ("lesson", "text"),
        ("evidence", "number"),
        ("95% CI", "number"),
        title=f"{report.library} v{report.version}: {report.accuracy:.1%} with every lesson, "
        f"{report.n_problems} problems × {report.samples}",
        caption="evidence: accuracy with minus without the lesson, in points; ! removing it helped",
    )
    for m in report.lessons:
        listed.add_row(
            m.id,
            Text(m.text),
            _points(m.difference, m.flagged),
            f"{m.interval.low * 100:+.1f} to {m.interval.high * 100:+.1f}",
        )
    out.print(listed)


def _points(difference: float, flagged: bool) -> Text:
    figure = f"{difference * 100:+.1f}"
    return Text(figure + "!", style="bold red") if flagged else Text(figure)


def evidence_cell(evidence: LessonEvidence | None) -> Text:
    """A lesson's evidence in `ted show`: its difference in points, `!` when removing it helped."""
    return Text("–") if evidence is None else _points(evidence.difference, evidence.flagged)


def kept(settings: LibrarySettings, lessons: int, tokens: int, measured: bool) -> str:
    """`ted show`'s caption: the library's size against what it may keep, and how it serves."""
    caption = f"{lessons} of {settings.kept_items} lessons · {tokens} of {settings.kept_tokens} tokens"
    if settings.selection == "relevant":
        caption += f" · each task is served up to {settings.max_items} lessons, {settings.token_budget} tokens"
    if measured:
        caption += " · evidence: accuracy with minus without the lesson, in points (! removing it helped)"
    return caption


def print_promotions(out: Console, versions: list[LibraryVersion]) -> None:
    """`ted history`'s second table: every promotion and refusal, oldest first."""
    decisions = sorted((p for v in versions for p in v.promotions), key=lambda p: p.created_at)
    if not decisions:
        return
    listed = table(
        ("version", "number"),
        ("decision", "label"),
        ("by", "name"),
        ("reason", "text"),
        ("time", "number"),
        title="promotions and refusals",
    )
    for p in decisions:
        decision = Text(p.decision, style="green" if p.decision == "promoted" else "red")
        listed.add_row(str(p.version), decision, p.by, Text(p.reason), local_time(p.created_at))
    out.print(listed)


def serves(state: LibraryState) -> str:
    """What `ted config` says about what the library serves and how it ranks its lessons."""
    s = state.settings
    served = "its working version" if state.served_version is None else f"version {state.served_version} (promoted)"
    chooses = (
        f"each task the lessons that fit it from an archive of {s.archive_items} lessons / {s.archive_tokens} tokens"
        if s.selection == "relevant"
        else "every lesson"
    )
    return f"serves {served}, {chooses}, ranked by {s.priority}"


def add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--serve", choices=["working", "promoted"], help="serve the working version, or promoted ones")
    parser.add_argument("--selection", choices=["all", "relevant"], help="serve every lesson, or those fitting a task")
    parser.add_argument("--archive-items", type=int, help="with --selection relevant: lessons kept (default 100)")
    parser.add_argument("--archive-tokens", type=int, help="with --selection relevant: tokens kept (default 40000)")
    parser.add_argument("--priority", choices=["usage", "evidence"], help="rank lessons by log(1+usage) or evidence")


def add_commands(command) -> None:
    """Register `promote` and `evidence` with the `ted` parser's `command(...)` helper."""
    p = command("promote", promote, "serve a version of a library from now on")
    p.add_argument("version", type=promoted_choice, help="a version number, or 'working' for the newest")
    p.add_argument("--reason", help="why, for the library's history")

    e = command("evidence", evidence, "measure each lesson's effect on the student's accuracy")
    e.add_argument("--dataset", type=Path, required=True, help="held-out problems, JSONL")
    e.add_argument("--version", type=version_choice, default="served", help="served (default), working or N")
    e.add_argument("--samples", type=int, default=1, help="answers per problem and arm")
    e.add_argument("--limit", type=int, help="use only the first N problems")
    e.add_argument("--max-calls", type=int, help="the most student answers allowed (required to run)")
    e.add_argument("--student", help="provider:model (default: the library's, else TED_STUDENT)")
    e.add_argument("--concurrency", type=int, default=8, help="calls in flight")
    e.add_argument("--estimate", action="store_true", help="print how many answers it takes, and stop")
    e.add_argument("--report", type=Path, help="folder for report.json/.md (default: ted-reports/evidence-LIB-vN)")
