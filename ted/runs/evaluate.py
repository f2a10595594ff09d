"""Evaluation: the student on held-out problems, with the library in its system prompt and without.

Both arms see the same problems, the same number of samples and the same instructions; the
only difference is the experience block. Evaluating reads the library and never changes it:
no attempts are recorded and no usage is counted, so measuring a library does not move it.
Every call is in the ledger under the evaluation's id (`eval-…`), which is where its cost
comes from, and the report is kept under the same id (`ted.runs.evaluations`).
"""

import uuid
from collections.abc import Callable

import anyio
import anyio.to_thread

from ted.errors import InvalidInput, ModelError
from ted.ledger import Ledger
from ted.llm.base import GenerationSettings, Model
from ted.llm.capabilities import require_images
from ted.runs import evaluations
from ted.runs.datasets import Problem
from ted.runs.report import EvalReport, PairedOutcome, evaluation_report
from ted.runs.student import Question, grade_answers, read_tasks
from ted.store import Store
from ted.store.records import VersionChoice

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
    version: VersionChoice = "served",
) -> EvalReport:
    """Grade `samples` answers per problem and arm; a failed call counts as a wrong answer, except
    one no retry can fix (a refused key, an unknown model), which ends the evaluation.

    The library's arm is the version asked for (the served one by default), each problem given
    the lessons `get_experiences` serves for it."""
    for name, value in (("samples", samples), ("concurrency", concurrency)):
        if value < 1:
            raise InvalidInput(f"{name} must be at least 1 (it was {value}).")
    tasks = await anyio.to_thread.run_sync(read_tasks, problems)
    if any(task.images for task in tasks.values()):
        require_images(student.name, "this dataset")
    prompt = await store.experience_prompt(library, version)
    served = {p.id: (await store.experience_prompt(library, prompt.version, p.question)).prompt for p in problems}
    eval_id = "eval-" + uuid.uuid4().hex[:12]
    questions = {
        (p.id, arm, k): Question(tasks[p.id], p.answer, served[p.id] if arm == "with" else "")
        for p in problems
        for arm in ("with", "without")
        for k in range(samples)
    }

    def bind(key: tuple[str, str, int]) -> Model:
        task_id = tasks[key[0]].id
        return ledger.bind(student, "student", library=library, task_id=task_id, job_id=eval_id, settings=settings)

    grades, failures = await grade_answers(bind, questions, limit=concurrency, on_answer=on_sample)
    if len(failures) == len(questions):
        raise ModelError(
            f"Every call to {student.name} failed, so there is nothing to report; the first: {failures[0]}"
        )
    outcomes = [
        PairedOutcome(
            problem_id=p.id,
            with_library=[grades[p.id, "with", k] for k in range(samples)],
            without_library=[grades[p.id, "without", k] for k in range(samples)],
        )
        for p in problems
    ]
    report = evaluation_report(
        outcomes,
        dataset=dataset,
        student=student.name,
        library=library,
        library_version=prompt.version,
        report_id=eval_id,
        library_items=len(prompt.items),
        library_tokens=prompt.tokens,
        cost=await ledger.totals(job_id=eval_id),
        seed=seed,
    )
    await evaluations.save(store, report)
    return report
