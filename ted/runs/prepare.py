"""One way to start a distillation: from the `distill_batch` tool, from `ted distill`, and on resume.

Preparing reads everything a job needs before it exists: the problems, the library's settings
and models (the one given, else the library's, else TED_STUDENT / TED_TEACHER), each role's
generation settings (those given, over the library's, over TED_<ROLE>_<SETTING>), an estimate
with the library's real budget, and, unless only an estimate was asked for, a model for each
name, so that a missing key — or a text-only model for a dataset with images — fails here,
naming what to change, and not inside the job.
"""

import math
import random
from collections.abc import Callable
from typing import Any, Literal

import anyio.to_thread
from pydantic import BaseModel, Field, ValidationError, computed_field

from ted.errors import ConfigError, InvalidInput, invalid_input
from ted.llm.base import GenerationSettings, Model
from ted.llm.capabilities import require_images
from ted.llm.registry import load_model
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
    validation_problems: int = 0
    validation_rounds: int = Field(0, description="Comparisons of the working version with the served one.")
    validation_calls: int = Field(
        0, description="Student answers on the validation set: both versions in the first round, then only the new one."
    )
    input_tokens: int
    output_tokens: int
    note: str = (
        "Teacher calls are an upper bound (every group critiqued, every batch compressed); groups whose "
        "rollouts are all correct skip the critique, so a good student costs less. Tokens assume "
        "~400-token student answers."
    )

    @computed_field
    @property
    def validation_share(self) -> float:
        """What the validation set adds, as a share of the distillation's own calls (upper bounds both)."""
        distillation = self.student_calls + self.teacher_calls
        return self.validation_calls / distillation if distillation else 0.0


def validation_rounds(params: DistillParams, problems: int) -> int:
    """How many times a job validates: after every `validation.every` batches and after the last one."""
    batches = math.ceil(problems / params.concurrency) * params.epochs
    every = params.validation.every or math.ceil(problems / params.concurrency)
    return batches // every + (batches % every != 0)


def estimate(
    params: DistillParams,
    problems: list[Problem],
    encoding: str = "cl100k_base",
    token_budget: int = 4000,
    validation: list[Problem] = (),
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
    # Each round asks the working version and the served one; the served one was asked before (it
    # is the version served or promoted at the previous round), and its answers are kept, except at
    # the first round.
    rounds = validation_rounds(params, n) if validation else 0
    validation_calls = (rounds + 1) * len(validation) * params.validation.samples if rounds else 0
    asked = sum(count_tokens(p.question, encoding) for p in validation) / max(len(validation), 1)
    return Estimate(
        problems=n,
        student_calls=n * e * r,
        teacher_calls=teacher_calls,
        validation_problems=len(validation),
        validation_rounds=rounds,
        validation_calls=validation_calls,
        input_tokens=round(student_in + teacher_in + validation_calls * (asked + budget + 150)),
        output_tokens=round(400 * (n * e * r + validation_calls) + teacher_out),
    )


class Prepared(BaseModel):
    """A job ready to be created (or resumed), with its estimate."""

    params: DistillParams
    problems: list[Problem]
    validation: list[Problem] = Field(default_factory=list, description="Held out to decide promotions.")
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
    validation_set: Dataset | None = None,
    **options: Any,
) -> Prepared:
    """A new job's parameters and estimate; `options` are the other DistillParams fields.

    The validation set is `validation_set`, or the `validation.split` share of the dataset held
    out from training. `field` names a parameter as the caller's user typed it, for errors
    (`--max-cost`).
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
    train, held = held_out(params, data.problems, validation_set.problems if validation_set else None, field)
    config = await _check_models(models, params, [*train, *held]) if check_models else {}
    settings = state.settings
    # Off the event loop: it tokenises every problem, and the first use loads the encoder (0.6 s).
    guess = await anyio.to_thread.run_sync(estimate, params, train, settings.encoding, settings.token_budget, held)
    return Prepared(
        params=params,
        problems=train,
        validation=held,
        solutions=data.reference_solutions,
        dataset=str(data.path or data.name),
        estimate=guess,
        config=config,
    )


def held_out(
    params: DistillParams, problems: list[Problem], validation: list[Problem] | None, field: Callable[[str], str] = str
) -> tuple[list[Problem], list[Problem]]:
    """The training problems and the validation set: the one given, or `validation.split` of the
    problems drawn with the job's seed (both keep the dataset's order). A validation problem that
    is also a training problem is refused: it would reward learning its answer."""
    split = params.validation.split
    if validation is not None and split is not None:
        raise InvalidInput(f"Give a validation dataset or {field('validation.split')}, not both.")
    if validation is None and split is None:
        given = [f"validation.{name}" for name in params.validation.model_fields_set]
        if given:
            raise InvalidInput(
                f"{', '.join(map(field, sorted(given)))} apply only with a validation set: give a validation dataset "
                f"or {field('validation.split')}."
            )
        return problems, []
    if split is not None:
        size = round(len(problems) * split)
        if not 1 <= size < len(problems):
            raise InvalidInput(
                f"{field('validation.split')} {split:g} of {len(problems)} problems holds out {size}: it must leave "
                "at least one problem for validation and one for training."
            )
        drawn = set(random.Random(params.seed).sample(range(len(problems)), size))
        return [p for i, p in enumerate(problems) if i not in drawn], [p for i, p in enumerate(problems) if i in drawn]
    trained = {p.question.strip() for p in problems}
    if shared := [p.id for p in validation if p.question.strip() in trained]:
        raise InvalidInput(
            f"{len(shared)} validation problems are training problems too ({', '.join(shared[:5])}): a validation set "
            "must be held out from training. Remove them from one of the two datasets."
        )
    return problems, validation


async def prepare_resume(store: Store, models: Callable[[str], Model], job_id: str) -> Prepared:
    """A stored job, ready to run again."""
    job = await jobs.get(store, job_id)
    problems, solutions = await jobs.problems(store, job_id)
    validation = await jobs.validation_problems(store, job_id)
    config = await _check_models(models, job.params, [*problems, *validation])
    settings = (await jobs.library_for(store, job.params.library)).settings
    guess = await anyio.to_thread.run_sync(
        estimate, job.params, problems, settings.encoding, settings.token_budget, validation
    )
    return Prepared(
        params=job.params,
        problems=problems,
        validation=validation,
        solutions=solutions,
        dataset=job.dataset,
        estimate=guess,
        config=config,
    )


async def create_job(store: Store, prepared: Prepared) -> Job:
    return await jobs.create(
        store,
        prepared.params,
        prepared.problems,
        prepared.dataset,
        solutions=prepared.solutions,
        config=prepared.config,
        validation=prepared.validation,
    )


def _model_name(state: LibraryState, role: Literal["student", "teacher"], given: str | None, *, required: bool) -> str:
    """The model for `role`; an estimate makes no call, so it needs none configured."""
    try:
        return state.model_for(role, given)
    except ConfigError:
        if required:
            raise
        return NOT_CONFIGURED


async def _check_models(
    models: Callable[[str], Model], params: DistillParams, problems: list[Problem]
) -> dict[str, str]:
    """Where each model is reached; a missing key, or a text-only model for images, fails now."""
    resolved = [await load_model(models, name) for name in (params.student, params.teacher)]
    if any(p.images for p in problems):
        for model in resolved:
            require_images(model.name, "this dataset")
    return jobs.endpoints(*resolved)
