"""Evaluation: the student on held-out problems, with the library in its system prompt and without.

Both arms see the same problems, the same number of samples and the same instructions; the
only difference is the experience block. Evaluating reads the library and never changes it:
no attempts are recorded and no usage is counted, so measuring a library does not move it.
Every call is in the ledger under the evaluation's id (`eval-…`), which is where its cost
comes from.
"""

import uuid
from collections.abc import Callable

import anyio
import anyio.to_thread

from ted.errors import InvalidInput, ModelError, ModelRefused
from ted.ledger import Ledger
from ted.llm.base import GenerationSettings, Model
from ted.llm.capabilities import require_images
from ted.runs.datasets import Problem
from ted.runs.report import EvalReport, PairedOutcome, evaluation_report
from ted.runs.student import answer, read_tasks
from ted.store import Store

Tick = Callable[[bool], None]


async def evaluate(
    store: Store,
    ledger: Ledger,
    student: Model,
    library: str,
    problems: list[Problem],
    *,
    dataset: str,
    samples: int = 1,
    concurrency: int = 8,
    settings: GenerationSettings | None = None,
    seed: int = 0,
    on_sample: Tick | None = None,
) -> EvalReport:
    """Grade `samples` answers per problem and arm; a failed call counts as a wrong answer, except
    one no retry can fix (a refused key, an unknown model), which ends the evaluation."""
    for name, value in (("samples", samples), ("concurrency", concurrency)):
        if value < 1:
            raise InvalidInput(f"{name} must be at least 1 (it was {value}).")
    tasks = await anyio.to_thread.run_sync(read_tasks, problems)
    if any(task.images for task in tasks.values()):
        require_images(student.name, "this dataset")
    prompt = await store.experience_prompt(library)
    eval_id = "eval-" + uuid.uuid4().hex[:12]
    limiter = anyio.CapacityLimiter(concurrency)
    arms = {"with": prompt.prompt, "without": ""}
    grades: dict[tuple[str, str], list[bool]] = {(p.id, arm): [False] * samples for p in problems for arm in arms}
    failures: list[ModelError] = []

    async def sample(problem: Problem, arm: str, k: int) -> None:
        task = tasks[problem.id]
        async with limiter:
            model = ledger.bind(student, "student", library=library, task_id=task.id, job_id=eval_id, settings=settings)
            try:
                correct = (await answer(model, task, problem.answer, arms[arm])).grade.correct
            except ModelRefused:
                raise
            except ModelError as e:
                # Counted wrong, not dropped: dropping would flatter the arm that failed more.
                failures.append(e)
                correct = False
        grades[problem.id, arm][k] = correct
        if on_sample:
            on_sample(correct)

    async with anyio.create_task_group() as tg:
        for problem in problems:
            for arm in arms:
                for k in range(samples):
                    tg.start_soon(sample, problem, arm, k)

    if len(failures) == len(grades) * samples:
        raise ModelError(
            f"Every call to {student.name} failed, so there is nothing to report; the first: {failures[0]}"
        )
    return evaluation_report(
        [
            PairedOutcome(problem_id=p.id, with_library=grades[p.id, "with"], without_library=grades[p.id, "without"])
            for p in problems
        ],
        dataset=dataset,
        student=student.name,
        library=library,
        library_version=prompt.version,
        library_items=len(prompt.items),
        library_tokens=prompt.tokens,
        cost=await ledger.totals(job_id=eval_id),
        seed=seed,
    )
