"""What a validation set costs a distillation: extra model calls per epoch, as a share of the
distillation's own calls, from the estimate and from the ledger of a real run.

    python bench/validation_cost.py [--problems 100] [--epochs 3] [--rollouts 5] [--validation 20]

The defaults are the paper's distillation (100 training problems, 3 epochs, 5 rollouts,
concurrency 8) with a 20-problem validation set answered once per version. The estimate
(`ted.runs.prepare.estimate`) bounds every count from above: every group critiqued, every batch
compressed, and each round after the first asking one new version. The runs are the classroom
(`ted.testing.classroom`) through `run_job`, on a real SQLite file; the ledger's calls are read
per role at the end of each epoch. Two runs:

- helpful: the teacher proposes the lessons that help; they are promoted after epoch 1 and the
  library does not change after that, so later rounds find the working version unchanged;
- changing: the library starts with the helpful lessons, served; the teacher also critiques right
  answers and proposes a harmful lesson each epoch, refused each time, `keep=best` rolling the
  working version back: every round asks a new version, the case the estimate bounds.

It prints figures; it asserts nothing. A few seconds.
"""

import argparse
import asyncio
import math
import sqlite3
import tempfile
from collections import Counter
from pathlib import Path

from ted.ledger import Ledger
from ted.runs.datasets import dataset_from_items
from ted.runs.distill import run_job
from ted.runs.jobs import DistillParams, Job
from ted.runs.prepare import create_job, estimate, prepare_job
from ted.store import Store
from ted.store.records import AddOp
from ted.testing.classroom import HARMFUL, LESSONS, Classroom, problems

TEACHER = ("teacher-solve", "summarise", "critique", "compress")


def per_epoch_estimate(params: DistillParams, n: int, validation: int) -> list[tuple[int, int, int]]:
    """(student, teacher, validation) calls per epoch, as the estimate bounds them."""
    batches = math.ceil(n / params.concurrency)
    rows = []
    for epoch in range(params.epochs):
        teacher = (2 * n if epoch == 0 else 0) + 2 * n + batches  # solves (once), summaries, critiques, compressions
        asked = validation * params.validation.samples * (2 if epoch == 0 else 1)
        rows.append((n * params.rollouts, teacher, asked))
    return rows


async def run(args: argparse.Namespace, folder: Path, scenario: str) -> tuple[Job, list[Counter]]:
    changing = scenario == "changing"
    classroom = Classroom(teaches={"multiplication": HARMFUL["multiplication"]} if changing else None)
    models = classroom.models()
    async with Store.open(folder / f"{scenario}.db") as store:
        if changing:
            lessons = [AddOp(text=LESSONS[skill]) for skill in ("subtraction", "multiplication")]
            await store.apply("arith", lessons, "import", "the helpful lessons")
            await store.promote("arith", 1, by="bench", reason="the helpful lessons")
        prepared = await prepare_job(
            store,
            models,
            await dataset_from_items(problems(args.problems)),
            validation_set=await dataset_from_items(problems(args.validation, first=args.problems)),
            library="arith",
            student=classroom.student,
            teacher=classroom.teacher,
            epochs=args.epochs,
            rollouts=args.rollouts,
            critique_all=changing,
            validation={"keep": "best"} if changing else {},
        )
        job = await create_job(store, prepared)
        ends: list[Counter] = []

        async def at_epoch_end(j: Job) -> None:
            if j.batch == 0 and j.epoch > len(ends):
                with sqlite3.connect(store.path) as db:
                    rows = db.execute("SELECT role FROM model_calls WHERE job_id = ? AND ok", (j.id,)).fetchall()
                ends.append(Counter(role for (role,) in rows))

        job = await run_job(store, Ledger(store), models, job.id, on_progress=at_epoch_end)
    epochs = [ends[0]] + [later - earlier for earlier, later in zip(ends, ends[1:], strict=False)]
    return job, epochs


def share(extra: int, own: int) -> str:
    return f"{extra:>5,} / {own:>6,} = {extra / own:6.1%}" if own else f"{extra:>5,} / {own:>6,}"


def report(title: str, rows: list[tuple[int, int, int]]) -> None:
    print(f"\n{title}")
    print(f"  {'epoch':<6} {'student':>8} {'teacher':>8} {'validation':>10}   extra / distillation's own calls")
    for epoch, (student, teacher, asked) in enumerate(rows, start=1):
        print(f"  {epoch:<6} {student:>8,} {teacher:>8,} {asked:>10,}   {share(asked, student + teacher)}")
    student, teacher, asked = (sum(column) for column in zip(*rows, strict=True))
    print(f"  {'all':<6} {student:>8,} {teacher:>8,} {asked:>10,}   {share(asked, student + teacher)}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rollouts", type=int, default=5)
    parser.add_argument("--validation", type=int, default=20)
    args = parser.parse_args()

    params = DistillParams(
        library="arith", student="s", teacher="t", epochs=args.epochs, rollouts=args.rollouts, validation={}
    )
    held = (await dataset_from_items(problems(args.validation, first=args.problems))).problems
    guess = estimate(params, (await dataset_from_items(problems(args.problems))).problems, validation=held)
    print(
        f"{args.problems} training problems × {args.epochs} epochs × {args.rollouts} rollouts, concurrency "
        f"{params.concurrency}, {args.validation} validation problems × {params.validation.samples} answer"
    )
    print(
        f"estimate (upper bounds): {guess.student_calls:,} student + {guess.teacher_calls:,} teacher calls; "
        f"validation {guess.validation_calls:,} over {guess.validation_rounds} rounds = "
        f"+{guess.validation_share:.1%} of the distillation's calls"
    )
    report("estimate, per epoch", per_epoch_estimate(params, args.problems, args.validation))
    with tempfile.TemporaryDirectory() as folder:
        for scenario in ("helpful", "changing"):
            job, epochs = await run(args, Path(folder), scenario)
            rows = [(c["student"], sum(c[r] for r in TEACHER), c["validation"]) for c in epochs]
            decisions = ", ".join(v.decision for e in job.epochs for v in e.validations)
            report(f"classroom run, {scenario} ({job.state}; rounds: {decisions}), from the ledger", rows)


if __name__ == "__main__":
    asyncio.run(main())
