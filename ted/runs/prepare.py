"""One way to start a distillation: from the `distill_batch` tool, from `ted distill`, and on resume.

Preparing reads everything a job needs before it exists: the problems, the library's settings
and models (the one given, else the library's, else TED_STUDENT / TED_TEACHER), each role's
generation settings (those given, over the library's, over TED_<ROLE>_<SETTING>), an estimate
with the library's real budget, and, unless only an estimate was asked for, a model for each
name, so that a missing key — or a text-only model for a dataset with images — fails here,
naming what to change, and not inside the job.
"""

import math
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from ted.errors import ConfigError, invalid_input
from ted.llm.base import GenerationSettings, Model
from ted.llm.capabilities import require_images
from ted.runs import jobs
from ted.runs.datasets import Dataset, Problem
from ted.runs.jobs import DistillParams, Job
from ted.store import Store
from ted.store.records import LibraryState
from ted.tokens import count_tokens

# The model an estimate shows for a role nobody configured yet.
NOT_CONFIGURED = "(not configured)"


class Estimate(BaseModel):
    """An upper bound on model calls and a rough token figure, before a job starts."""

    problems: int
    student_calls: int
    teacher_calls: int
    input_tokens: int
    output_tokens: int
    note: str = (
        "Teacher calls are an upper bound (every group critiqued, every batch compressed); groups whose "
        "rollouts are all correct skip the critique, so a good student costs less. Tokens assume "
        "~400-token student answers."
    )


def estimate(
    params: DistillParams, problems: list[Problem], encoding: str = "cl100k_base", token_budget: int = 4000
) -> Estimate:
    n, e, r = len(problems), params.epochs, params.rollouts
    question = sum(count_tokens(p.question, encoding) for p in problems) / max(n, 1)
    budget = token_budget  # the library at its largest, in every student prompt and compression
    student_in = (question + budget + 150) * n * e * r
    batches = math.ceil(n / params.concurrency) * e
    # solve once per problem, and again knowing the answer if wrong; summarise + critique per group
    # and epoch; at most one compression per batch.
    teacher_calls = 2 * n + 2 * n * e + (batches if params.compression == "teacher" else 0)
    teacher_in = n * question * 3 + n * 600 + n * e * (question + r * 500 + 600) * 2 + batches * budget * 1.5
    teacher_out = n * 1200 + n * e * (150 * (r + 1) + 300) + batches * budget
    return Estimate(
        problems=n,
        student_calls=n * e * r,
        teacher_calls=teacher_calls,
        input_tokens=round(student_in + teacher_in),
        output_tokens=round(400 * n * e * r + teacher_out),
    )


class Prepared(BaseModel):
    """A job ready to be created (or resumed), with its estimate."""

    params: DistillParams
    problems: list[Problem]
    solutions: dict[str, str] = Field(description="The dataset's worked solutions by problem id, for the teacher.")
    dataset: str
    estimate: Estimate
    config: dict[str, str] = Field(default_factory=dict, description="Where each model is reached.")


async def prepare_job(
    store: Store,
    models: Callable[[str], Model],
    data: Dataset,
    *,
    library: str,
    student: str | None = None,
    teacher: str | None = None,
    student_settings: GenerationSettings | None = None,
    teacher_settings: GenerationSettings | None = None,
    check_models: bool = True,
    field: Callable[[str], str] = str,
    **options: Any,
) -> Prepared:
    """A new job's parameters and estimate; `options` are the other DistillParams fields.

    `field` names a parameter as the caller's user typed it, for errors (`--max-cost`).
    """
    state = await jobs.library_for(store, library)  # an estimate creates nothing
    try:
        params = DistillParams(
            library=library,
            student=_model_name(state, "student", student, required=check_models),
            teacher=_model_name(state, "teacher", teacher, required=check_models),
            student_settings=state.generation_for("student", student_settings),
            teacher_settings=state.generation_for("teacher", teacher_settings),
            **options,
        )
    except ValidationError as e:
        raise invalid_input(e, "Invalid", field=field) from None
    config = _check_models(models, params, data.problems) if check_models else {}
    settings = state.settings
    return Prepared(
        params=params,
        problems=data.problems,
        solutions=data.reference_solutions,
        dataset=str(data.path or data.name),
        estimate=estimate(params, data.problems, settings.encoding, settings.token_budget),
        config=config,
    )


async def prepare_resume(store: Store, models: Callable[[str], Model], job_id: str) -> Prepared:
    """A stored job, ready to run again."""
    job = await jobs.get(store, job_id)
    problems, solutions = await jobs.problems(store, job_id)
    config = _check_models(models, job.params, problems)
    settings = (await jobs.library_for(store, job.params.library)).settings
    guess = estimate(job.params, problems, settings.encoding, settings.token_budget)
    return Prepared(
        params=job.params, problems=problems, solutions=solutions, dataset=job.dataset, estimate=guess, config=config
    )


async def create_job(store: Store, prepared: Prepared) -> Job:
    return await jobs.create(
        store,
        prepared.params,
        prepared.problems,
        prepared.dataset,
        solutions=prepared.solutions,
        config=prepared.config,
    )


def _model_name(state: LibraryState, role: Literal["student", "teacher"], given: str | None, *, required: bool) -> str:
    """The model for `role`; an estimate makes no call, so it needs none configured."""
    try:
        return state.model_for(role, given)
    except ConfigError:
        if required:
            raise
        return NOT_CONFIGURED


def _check_models(models: Callable[[str], Model], params: DistillParams, problems: list[Problem]) -> dict[str, str]:
    """Where each model is reached; a missing key, or a text-only model for images, fails now."""
    resolved = [models(name) for name in (params.student, params.teacher)]
    if any(p.images for p in problems):
        for model in resolved:
            require_images(model.name, "this dataset")
    return jobs.endpoints(*resolved)
