"""`ted distill` and `ted eval`: the long runs, with a progress bar and a report at the end.

    ted distill --dataset train.jsonl --library gsm8k --student M --teacher M [--epochs 3 --rollouts 5]
        [--student-max-tokens N --teacher-temperature T --student-seed S …] [--failure-share 0.5]
    ted distill --resume JOB [--max-cost 5]
    ted eval --dataset test.jsonl --library gsm8k --student M [--samples 3] [--student-temperature T …]

Both write report.json, report.md and report.png into `--report DIR` (default
`ted-reports/<job or eval>`). A distillation is a job in the database like one started by
the `distill_batch` tool: interrupt it (Ctrl-C, a crash) and `--resume` it; no paid call is
repeated.
"""

import argparse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ted.errors import InvalidInput, invalid_input
from ted.ledger import Ledger
from ted.llm.base import GenerationSettings, Model
from ted.llm.registry import get_model
from ted.runs import jobs
from ted.runs.datasets import load_dataset
from ted.runs.distill import run_job
from ted.runs.evaluate import evaluate
from ted.runs.jobs import Job
from ted.runs.prepare import create_job, prepare_job, prepare_resume
from ted.runs.report import distill_report
from ted.runs.report_files import write_distill_report, write_eval_report
from ted.store import Store


def _progress(out: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=out,
        transient=False,
    )


def _status(job: Job, cost: float | None) -> str:
    epoch = job.epochs[-1] if job.epochs else None
    accuracy = f"{epoch.accuracy:.0%}" if epoch and epoch.accuracy is not None else "–"
    size = f"{epoch.items} lessons" if epoch else ""
    dollars = "cost unknown" if cost is None else f"${cost:.4f}"
    return (
        f"epoch {min(job.epoch + 1, job.params.epochs)}/{job.params.epochs} · accuracy {accuracy} · {size} · {dollars}"
    )


@asynccontextmanager
async def _closing_models() -> AsyncIterator[Callable[[str], Model]]:
    """`get_model`, closing on the way out the HTTP connections of every model it gave.

    Models are cached per process with their SDK clients, whose connections belong to this
    command's event loop. Left open when the loop ends (`ted.cli.run` called in-process, by a
    script or a test), they are closed later from whatever loop runs then, and fail there.
    """
    used: list[Model] = []

    def resolve(name: str) -> Model:
        used.append(model := get_model(name))
        return model

    try:
        yield resolve
    finally:
        for model in dict.fromkeys(used):
            if (close := getattr(model, "aclose", None)) is not None:
                await close()


async def distill(store: Store, args: argparse.Namespace, out: Console) -> None:
    ledger = Ledger(store)
    if args.resume:
        # Claimed before anything is printed: a finished job, or one that another live process
        # runs, is refused here with the reason. run_job's own claim then finds the lease ours.
        await prepare_resume(store, get_model, args.resume)
        job = await jobs.reopen(
            store, args.resume, jobs.this_process(), max_cost_usd=args.max_cost, max_tokens=args.max_tokens
        )
    else:
        if not (args.dataset and args.library):
            raise InvalidInput("ted distill needs --dataset FILE and --library NAME (or --resume JOB).")
        prepared = await prepare_job(
            store,
            get_model,
            await load_dataset(args.dataset, limit=args.limit),
            library=args.library,
            student=args.student,
            teacher=args.teacher,
            student_settings=generation_options(args, "student"),
            teacher_settings=generation_options(args, "teacher"),
            check_models=not args.estimate,
            field=_flag,
            epochs=args.epochs,
            rollouts=args.rollouts,
            concurrency=args.concurrency,
            compression=args.compression,
            critique_all=args.critique_all,
            failure_share=args.failure_share,
            max_cost_usd=args.max_cost,
            max_tokens=args.max_tokens,
        )
        params, guess = prepared.params, prepared.estimate
        out.print(
            f"{guess.problems} problems × {params.epochs} epochs × {params.rollouts} rollouts: at most "
            f"{guess.student_calls:,} student and {guess.teacher_calls:,} teacher calls, up to about "
            f"{guess.input_tokens:,} tokens in and {guess.output_tokens:,} out.",
            markup=False,
        )
        if args.estimate:
            return
        job = await create_job(store, prepared)
    out.print(f"Job {job.id} on library {job.params.library} (resume with: ted distill --resume {job.id})")

    total = job.problems_total * job.params.epochs
    with _progress(out) as bar:
        task = bar.add_task("distilling", total=total, completed=job.problems_done, status="")

        async def show(j: Job) -> None:
            cost = sum(t.cost_usd or 0.0 for t in await ledger.totals(job_id=j.id))
            bar.update(task, completed=j.problems_done, status=_status(j, cost))

        async with _closing_models() as models:
            job = await run_job(store, ledger, models, job.id, on_progress=show)
    report = await distill_report(store, ledger, job)
    files = write_distill_report(report, args.report or Path("ted-reports") / job.id)
    out.print(f"Job {job.id} {job.state}" + (f": {job.error}" if job.error else "."), markup=False)
    for e in report.epochs:
        accuracy = f"{e.accuracy:.1%}" if e.accuracy is not None else "–"
        out.print(
            f"  epoch {e.epoch}: rollout accuracy {accuracy}, {e.library.items} lessons, "
            f"{e.library.tokens} tokens, {e.critiques} critiques, {e.compressions} compressions",
            markup=False,
        )
    cost = report.cost.cost_usd
    out.print(
        f"{report.cost.calls:,} model calls, "
        + ("cost unknown" if cost is None else f"${cost:.4f}")
        + f". Report: {files.markdown_path}",
        markup=False,
    )
    if job.state != "done":
        raise InvalidInput(f"The job ended {job.state}: {job.error} Resume it with: ted distill --resume {job.id}")


async def evaluate_command(store: Store, args: argparse.Namespace, out: Console) -> None:
    data = await load_dataset(args.dataset, limit=args.limit)
    state = await store.library_state(args.library)  # evaluating a library that does not exist is a typo
    total = len(data.problems) * 2 * args.samples
    async with _closing_models() as models:
        student = models(state.model_for("student", args.student))
        with _progress(out) as bar:
            task = bar.add_task("evaluating", total=total, status="")
            right = {"n": 0, "ok": 0}

            def tick(correct: bool) -> None:
                right["n"] += 1
                right["ok"] += correct
                bar.update(task, advance=1, status=f"{right['ok'] / right['n']:.0%} correct so far (both arms)")

            report = await evaluate(
                store,
                Ledger(store),
                student,
                args.library,
                data.problems,
                dataset=str(data.path or data.name),
                samples=args.samples,
                concurrency=args.concurrency,
                settings=state.generation_for("student", generation_options(args, "student")),
                on_sample=tick,
            )
    directory = args.report or Path("ted-reports") / f"eval-{args.library}-v{report.library_version}"
    files = write_eval_report(report, directory)
    ci = report.interval
    out.print(
        f"{report.n_problems} problems × {args.samples} samples. With the library (v{report.library_version}): "
        f"{report.with_library.accuracy:.1%}; without: {report.without_library.accuracy:.1%}; difference "
        f"{report.difference:+.1%} (95% CI {ci.low:+.1%} to {ci.high:+.1%}). Report: {files.markdown_path}",
        markup=False,
    )


def _flag(field: str) -> str:
    """A DistillParams field as the option that sets it."""
    return {"max_cost_usd": "--max-cost"}.get(field, "--" + field.replace("_", "-"))


GENERATION_HELP = {
    "max_tokens": "output tokens at most (default 16384)",
    "temperature": "sampling temperature, 0-2",
    "top_p": "nucleus sampling, 0-1",
    "seed": "sampling seed (OpenAI and compatible servers; Anthropic has none)",
}


def add_generation_options(parser, roles: tuple[str, ...] = ("student", "teacher")) -> None:
    """--student-max-tokens, --teacher-temperature, …: one option per role and generation setting."""
    for role in roles:
        for field in GenerationSettings.model_fields:
            kind = int if field in ("max_tokens", "seed") else float
            parser.add_argument(
                f"--{role}-{field.replace('_', '-')}",
                type=kind,
                dest=f"{role}_{field}",
                metavar="N",
                help=f"the {role}'s {GENERATION_HELP[field]}",
            )


def generation_options(args, role: str) -> GenerationSettings | None:
    """The role's generation settings given on the command line, or None."""
    given = {f: v for f in GenerationSettings.model_fields if (v := getattr(args, f"{role}_{f}", None)) is not None}
    if not given:
        return None
    try:
        return GenerationSettings.model_validate(given)
    except ValidationError as e:
        raise invalid_input(e, "Invalid", field=lambda f: f"--{role}-{f.replace('_', '-')}") from None


def add_commands(command) -> None:
    """Register `distill` and `eval` with the `ted` parser's `command(...)` helper."""
    d = command("distill", distill, "run the TED loop over a dataset as a resumable job", library=False)
    d.add_argument("--dataset", type=Path, help="a JSONL file of {id, question, answer, images?}")
    d.add_argument("--library", help="the library to distil into, e.g. gsm8k")
    d.add_argument("--student", help="provider:model (default: the library's, else TED_STUDENT)")
    d.add_argument("--teacher", help="provider:model (default: the library's, else TED_TEACHER)")
    d.add_argument("--epochs", type=int, default=3)
    d.add_argument("--rollouts", type=int, default=5, help="student attempts per problem and epoch")
    d.add_argument("--concurrency", type=int, default=8, help="problems in flight; 1 is the paper's strict order")
    d.add_argument(
        "--compression",
        choices=["teacher", "none", "truncate", "random"],
        default="teacher",
        help="teacher is the method; the others reproduce the paper's ablations",
    )
    d.add_argument("--critique-all", action="store_true", help="critique groups whose rollouts were all correct")
    d.add_argument(
        "--failure-share",
        type=float,
        default=1.0,
        help="fail the job once this share of a batch's critiques could not be made (default 1: all of them)",
    )
    add_generation_options(d)
    d.add_argument("--limit", type=int, help="use only the first N problems")
    d.add_argument("--max-cost", type=float, help="stop cleanly once the job cost this many dollars")
    d.add_argument("--max-tokens", type=int, help="stop cleanly once the job used this many tokens")
    d.add_argument("--estimate", action="store_true", help="print the estimate of calls and tokens, and stop")
    d.add_argument("--resume", metavar="JOB", help="resume an interrupted, failed or stopped job")
    d.add_argument("--report", type=Path, help="folder for report.json/.md/.png (default: ted-reports/JOB)")

    e = command("eval", evaluate_command, "score the student with and without a library", library=False)
    e.add_argument("--dataset", type=Path, required=True, help="held-out problems, JSONL")
    e.add_argument("--library", required=True, help="the library to evaluate")
    e.add_argument("--student", help="provider:model (default: the library's, else TED_STUDENT)")
    e.add_argument("--samples", type=int, default=1, help="answers per problem and arm")
    e.add_argument("--limit", type=int, help="use only the first N problems")
    e.add_argument("--concurrency", type=int, default=8, help="calls in flight")
    add_generation_options(e, ("student",))
    e.add_argument("--report", type=Path, help="folder for report.json/.md/.png")
