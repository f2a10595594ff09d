"""`ted distill`, `ted eval`, `ted jobs` and `ted costs`: the long runs and what they cost.

    ted distill --dataset train.jsonl --library gsm8k --student M --teacher M [--epochs 3 --rollouts 5]
        [--student-max-tokens N --teacher-temperature T --student-seed S …] [--failure-share 0.5]
        [--validation held_out.jsonl | --validation-split 0.2] [--margin 0.02 --keep best --validate-every N]
    ted distill --resume JOB [--max-cost 5]
    ted eval --dataset test.jsonl --library gsm8k --student M [--samples 3] [--student-temperature T …]
    ted jobs [--library gsm8k]
    ted costs [--library gsm8k] [--job JOB]

distill and eval write report.json, report.md and report.png into `--report DIR` (default
`ted-reports/<job>` and `ted-reports/eval-<library>-v<version>-<student>-<time>`). A
distillation is a job in the database like one started by the `distill_batch` tool: interrupt
it (Ctrl-C, a crash, a cancel) and `--resume` it; no paid call is repeated.

On a terminal a progress bar moves with every rollout; otherwise (a pipe, a log file) one line
is printed per batch, so a log shows where a run stands while it runs.
"""

import argparse
import re
from datetime import datetime
from pathlib import Path

import anyio
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ted.cli.output import count, print_json, table
from ted.errors import InvalidInput, TedError, invalid_input
from ted.ledger import CostSummary, Ledger
from ted.llm.base import GenerationSettings
from ted.llm.registry import closing_models, get_model
from ted.pricing import format_cost
from ted.runs import jobs
from ted.runs.datasets import load_dataset
from ted.runs.distill import run_job
from ted.runs.evaluate import evaluate
from ted.runs.jobs import Job
from ted.runs.prepare import Prepared, create_job, prepare_job, prepare_resume
from ted.runs.report import distill_report
from ted.runs.report_files import write_distill_report, write_eval_report
from ted.store import Store

# How often the bar reads the job's rollouts from the database while a batch runs.
POLL_SECONDS = 0.25


def _progress(out: Console) -> Progress:
    # Not drawn without a terminal: a log gets lines instead (drawn, it would get one at the end).
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=out,
        transient=False,
        disable=not out.is_terminal,
    )


async def _job_cost(ledger: Ledger, job: Job) -> CostSummary:
    return CostSummary.from_totals(await ledger.totals(job_id=job.id), (job.params.student, job.params.teacher))


def _cost_so_far(summary: CostSummary) -> str:
    return "cost unknown" if summary.cost_usd is None else format_cost(summary.cost_usd)


async def _status(ledger: Ledger, job: Job, accuracy: float | None) -> str:
    epoch = job.epochs[-1] if job.epochs else None
    cost = _cost_so_far(await _job_cost(ledger, job))
    shown = f"{accuracy:.0%}" if accuracy is not None else "–"
    lessons = f"{epoch.items} lessons · " if epoch else ""
    return f"epoch {min(job.epoch + 1, job.params.epochs)}/{job.params.epochs} · accuracy {shown} · {lessons}{cost}"


async def _follow(store: Store, ledger: Ledger, job: Job, out: Console) -> Job:
    """Run the job here, showing its progress: a bar by rollout on a terminal, a line per batch elsewhere."""
    async with closing_models() as models:
        if not out.is_terminal:

            async def line(j: Job) -> None:
                accuracy = j.epochs[-1].accuracy if j.epochs else None
                status = await _status(ledger, j, accuracy)
                out.print(f"{j.problems_done}/{j.problems_total} problems · {status}", markup=False)

            return await run_job(store, ledger, models, job.id, on_progress=line)

        latest = job

        async def applied(j: Job) -> None:
            nonlocal latest
            latest = j

        with _progress(out) as bar:
            task = bar.add_task("distilling", total=job.problems_total * job.params.rollouts, status="")

            async def poll() -> None:
                while True:
                    done, accuracy = await jobs.rollouts_done(store, job.id)
                    bar.update(task, completed=done, status=await _status(ledger, latest, accuracy))
                    await anyio.sleep(POLL_SECONDS)

            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(poll)
                    finished = await run_job(store, ledger, models, job.id, on_progress=applied)
                    tg.cancel_scope.cancel()
            except* TedError as group:  # a job that cannot start says why, as when there is no bar
                raise group.exceptions[0] from None
            done, accuracy = await jobs.rollouts_done(store, job.id)
            bar.update(task, completed=done, status=await _status(ledger, finished, accuracy))
        return finished


async def _start(store: Store, args: argparse.Namespace, out: Console) -> Job | None:
    """The job to run: the one to resume, or a new one after its estimate (None: only the estimate)."""
    if args.resume:
        # Claimed before anything is printed: a finished job, or one that another live process
        # runs, is refused here with the reason. run_job's own claim then finds the lease ours.
        await prepare_resume(store, get_model, args.resume)
        return await jobs.reopen(
            store, args.resume, jobs.this_process(), max_cost_usd=args.max_cost, max_tokens=args.max_tokens
        )
    if not (args.dataset and args.library):
        raise InvalidInput("ted distill needs --dataset FILE and --library NAME (or --resume JOB).")
    prepared = await prepare_job(
        store,
        get_model,
        await load_dataset(args.dataset, limit=args.limit),
        validation_set=await load_dataset(args.validation) if args.validation else None,
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
        validation={k: v for k, flag in VALIDATION_OPTIONS.items() if (v := getattr(args, flag)) is not None},
    )
    _print_estimate(out, prepared)
    return None if args.estimate else await create_job(store, prepared)


def _print_estimate(out: Console, prepared: Prepared) -> None:
    params, guess = prepared.params, prepared.estimate
    validation = (
        f", {guess.validation_calls:,} validation answers (+{guess.validation_share:.1%} calls) on "
        f"{guess.validation_problems} held-out problems over {guess.validation_rounds} rounds"
        if guess.validation_problems
        else ""
    )
    out.print(
        f"{guess.problems} problems × {params.epochs} epochs × {params.rollouts} rollouts: at most "
        f"{guess.student_calls:,} student and {guess.teacher_calls:,} teacher calls{validation}, up to about "
        f"{guess.input_tokens:,} tokens in and {guess.output_tokens:,} out.",
        markup=False,
    )


async def distill(store: Store, args: argparse.Namespace, out: Console) -> None:
    ledger = Ledger(store)
    if (job := await _start(store, args, out)) is None:
        return
    out.print(f"Job {job.id} on library {job.params.library} (resume with: ted distill --resume {job.id})")
    job = await _follow(store, ledger, job, out)
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
        for v in e.validations:
            out.print(f"    version {v.working_version} {v.decision}: {v.figures.describe()}", markup=False)
    if report.validation_problems:
        out.print(f"{report.library} serves version {report.served_version}.", markup=False)
    out.print(
        f"{report.cost.calls:,} model calls, {_cost_so_far(report.cost)}. Report: {files.markdown_path}", markup=False
    )
    if job.state != "done":
        raise InvalidInput(f"The job ended {job.state}: {job.error} Resume it with: ted distill --resume {job.id}")


def eval_report_dir(library: str, version: int, student: str, moment: datetime) -> Path:
    """Where an evaluation's report goes unless --report says: one folder per library version,
    student and time, so evaluating another student (or the same again) overwrites nothing."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", student).strip("-")
    return Path("ted-reports") / f"eval-{library}-v{version}-{slug}-{moment.strftime('%Y%m%d-%H%M%S')}"


async def evaluate_command(store: Store, args: argparse.Namespace, out: Console) -> None:
    data = await load_dataset(args.dataset, limit=args.limit)
    state = await store.library_state(args.library)  # evaluating a library that does not exist is a typo
    total = len(data.problems) * 2 * args.samples
    every = total if out.is_terminal else max(1, total // 10)  # without a bar: a line per tenth
    async with closing_models() as models:
        student = models(state.model_for("student", args.student))
        with _progress(out) as bar:
            task = bar.add_task("evaluating", total=total, status="")
            right = {"n": 0, "ok": 0}

            def tick(correct: bool) -> None:
                right["n"] += 1
                right["ok"] += correct
                status = f"{right['ok'] / right['n']:.0%} correct so far (both arms)"
                bar.update(task, advance=1, status=status)
                if right["n"] % every == 0 and not out.is_terminal:
                    out.print(f"{right['n']}/{total} answers · {status}", markup=False)

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
                version=args.version,
            )
    directory = args.report or eval_report_dir(args.library, report.library_version, student.name, datetime.now())
    files = write_eval_report(report, directory)
    ci = report.interval
    out.print(
        f"{report.n_problems} problems × {args.samples} samples. With the library (v{report.library_version}): "
        f"{report.with_library.accuracy:.1%}; without: {report.without_library.accuracy:.1%}; difference "
        f"{report.difference:+.1%} (95% CI {ci.low:+.1%} to {ci.high:+.1%}). Report: {files.markdown_path}",
        markup=False,
    )


async def list_jobs(store: Store, args: argparse.Namespace, out: Console) -> None:
    found = await jobs.listed(store, library=args.library, limit=args.limit)
    if args.json:
        return print_json([job.summary() for job in found])
    if not found:
        return out.print("No jobs yet. Start one with: ted distill --dataset FILE --library NAME")
    ledger = Ledger(store)
    listed = table(
        ("job", "label"),
        ("library", "name"),
        ("state", "label"),
        ("problems", "number"),
        ("epoch", "number"),
        ("cost", "number"),
        ("started", "number"),
    )
    for job in found:
        cost = (await _job_cost(ledger, job)).cost_usd
        listed.add_row(
            job.id,
            job.params.library,
            job.state,
            f"{job.problems_done}/{job.problems_total}",
            f"{min(job.epoch + 1, job.params.epochs)}/{job.params.epochs}",
            format_cost(cost),
            job.created_at.astimezone().strftime("%m-%d %H:%M"),
        )
    out.print(listed)
    resumable = [job.id for job in found if job.state in jobs.RESUMABLE]
    if resumable:
        out.print(f"Resume one with: ted distill --resume {resumable[0]}", markup=False)


async def costs(store: Store, args: argparse.Namespace, out: Console) -> None:
    rows = await Ledger(store).totals(library=args.library, job_id=args.job)
    if args.json:
        return print_json(rows)
    if not rows:
        return out.print("No model calls recorded yet.")
    failures = any(r.failed for r in rows)
    listed = table(
        ("role", "label"),
        ("model", "name"),
        ("calls", "number"),
        *([("failed", "number")] if failures else []),
        ("tokens in", "number"),
        ("out", "number"),
        ("cost", "number"),
        ("time", "number"),
        title="model calls, tokens and cost",
    )
    for r in rows:
        listed.add_row(
            r.role,
            r.model,
            f"{r.calls:,}",
            *([f"{r.failed:,}"] if failures else []),
            f"{r.input_tokens:,}",
            f"{r.output_tokens:,}",
            format_cost(r.cost_usd),
            f"{r.latency_ms / 1000:,.1f} s",
        )
    summary = CostSummary.from_totals(rows)
    unpriced = f" (no price for {', '.join(summary.unpriced_models)})" if summary.unpriced_models else ""
    listed.caption = f"{count(summary.calls, 'call')} · cost {format_cost(summary.cost_usd)}{unpriced}"
    out.print(listed)


def version_choice(text: str) -> str | int:
    """`served`, `working` or a version number, as --version takes them."""
    if text in ("served", "working"):
        return text
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r} is not a version: give served, working or a number")


# ValidationParams field → the attribute of its command-line option.
VALIDATION_OPTIONS = {
    "split": "validation_split",
    "samples": "validation_samples",
    "every": "validate_every",
    "margin": "margin",
    "keep": "keep",
}


def _flag(field: str) -> str:
    """A DistillParams field as the option that sets it."""
    if field.startswith("validation."):
        field = VALIDATION_OPTIONS.get(field.removeprefix("validation."), field)
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
    """Register `distill`, `eval`, `jobs` and `costs` with the `ted` parser's `command(...)` helper."""
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
    d.add_argument("--resume", metavar="JOB", help="resume a failed, cancelled, stopped or interrupted job")
    d.add_argument("--report", type=Path, help="folder for report.json/.md/.png (default: ted-reports/JOB)")
    v = d.add_argument_group("promotion on a validation set (the library then serves promoted versions only)")
    v.add_argument("--validation", type=Path, help="held-out problems, JSONL, never trained on")
    v.add_argument("--validation-split", type=float, help="or hold out this share of --dataset (e.g. 0.2)")
    v.add_argument("--validation-samples", type=int, help="answers per validation problem and version (default 1)")
    v.add_argument("--validate-every", type=int, metavar="N", help="validate every N batches (default: each epoch)")
    v.add_argument("--margin", type=float, help="promote when not worse than the served version by more (default 0)")
    v.add_argument("--keep", choices=["best", "last"], help="after a refusal go on from the served version or the last")

    e = command("eval", evaluate_command, "score the student with and without a library", library=False)
    e.add_argument("--dataset", type=Path, required=True, help="held-out problems, JSONL")
    e.add_argument("--library", required=True, help="the library to evaluate")
    e.add_argument("--student", help="provider:model (default: the library's, else TED_STUDENT)")
    e.add_argument("--samples", type=int, default=1, help="answers per problem and arm")
    e.add_argument("--limit", type=int, help="use only the first N problems")
    e.add_argument("--concurrency", type=int, default=8, help="calls in flight")
    add_generation_options(e, ("student",))
    e.add_argument(
        "--report", type=Path, help="folder for report.json/.md/.png (default: ted-reports/eval-LIB-vN-STUDENT-TIME)"
    )
    e.add_argument(
        "--version", type=version_choice, default="served", help="the version to evaluate: served (default), working, N"
    )

    j = command("jobs", list_jobs, "list distillation jobs, newest first", json=True, library=False)
    j.add_argument("--library", help="only this library's jobs")
    j.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")

    s = command("costs", costs, "model calls, tokens and cost per role and model", json=True, library=False)
    s.add_argument("--library", help="only calls made for this library")
    s.add_argument("--job", help="only calls made by this distillation job")
