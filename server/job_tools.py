"""The tools that run the student over a dataset: a distillation job (start, follow, cancel, list
them), and the measurement of each lesson's evidence."""

from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import Context
from pydantic import BaseModel, Field, WithJsonSchema

from ted.errors import InvalidInput
from ted.files import data_roots
from ted.llm.base import GenerationSettings
from ted.llm.registry import load_model
from ted.runs import jobs
from ted.runs.datasets import Dataset, dataset_from_items, load_dataset
from ted.runs.evidence import measure_evidence as measure
from ted.runs.evidence import plan_evidence
from ted.runs.jobs import Compression, JobStatus, JobSummary, ValidationParams
from ted.runs.prepare import Estimate, create_job, prepare_job, prepare_resume
from ted.store.records import Flag, LibraryName, VersionChoice
from ted_server.context import ted

JobId = Annotated[str, Field(min_length=1, max_length=64, description="A job id, e.g. 'job-1a2b3c4d5e6f'.")]
ModelName = Annotated[str | None, Field(description="provider:model; default: the library's, else the server's.")]
Sampling = Annotated[
    GenerationSettings | None,
    Field(description="Over the library's settings and TED_STUDENT_* / TED_TEACHER_*."),
]
FailureShare = Annotated[
    float, Field(gt=0, le=1, description="Fail the job once this share of one batch's critiques failed (1: all).")
]
Items = list[dict[str, Any]]


class DistillStarted(BaseModel):
    started: bool
    estimate: Estimate
    job: JobSummary | None = Field(description="The job started or resumed; follow it with get_job.")


class JobList(BaseModel):
    jobs: list[JobSummary]


class Validation(ValidationParams):
    """A job's validation set (`dataset`, or a `split` of the job's own) and how it decides."""

    dataset: str | Items | None = None


def _bare(schema: Any) -> Any:
    """An argument's record schema without its prose (the argument's description says what its
    fields mean) and with `X | None` as X (a field left out is None)."""
    if isinstance(schema, list):
        return [_bare(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    match schema.get("anyOf"):
        case [one, {"type": "null"}]:
            return _bare(one)
    return {k: _bare(v) for k, v in schema.items() if k not in ("description", "title", "additionalProperties")}


Problems = Annotated[
    str | Items | None,
    Field(
        description="A JSONL file in the server's data folders (TED_DATA_DIRS), or a list of items "
        "{id, question, answer, images?}. Not needed with `resume`."
    ),
]
HeldOut = Annotated[
    Validation | None,
    WithJsonSchema({"anyOf": [_bare(Validation.model_json_schema()), {"type": "null"}]}),
    Field(
        description="Held-out problems (a `dataset`, or a `split` of this one): a new version is served only if "
        "the student is not worse with it by more than `margin`."
    ),
]
Resume = Annotated[
    JobId | None,
    Field(description="A failed, cancelled or stopped job to continue; of the other arguments only the caps apply."),
]


async def distill_batch(
    ctx: Context,
    dataset: Problems = None,
    library: LibraryName = "default",
    epochs: Annotated[int, Field(ge=1, le=100, description="Passes over the dataset.")] = 3,
    rollouts: Annotated[int, Field(ge=1, le=64, description="Student attempts per problem and epoch.")] = 5,
    concurrency: Annotated[int, Field(ge=1, le=256, description="Problems in flight; 1 = strict order.")] = 8,
    student: ModelName = None,
    teacher: ModelName = None,
    compression: Annotated[
        Compression, Field(description="teacher (the method); none, truncate, random reproduce the ablations.")
    ] = "teacher",
    critique_all: Annotated[Flag, Field(description="Critique groups whose rollouts were all correct too.")] = False,
    student_settings: Sampling = None,
    teacher_settings: Sampling = None,
    failure_share: FailureShare = 1.0,
    validation: HeldOut = None,
    limit: Annotated[int | None, Field(ge=1, le=10**9, description="Use only the first `limit` problems.")] = None,
    max_cost_usd: Annotated[float | None, Field(gt=0, le=10**6, description="Stop cleanly at this cost.")] = None,
    max_tokens: Annotated[int | None, Field(gt=0, le=10**12, description="Stop cleanly at this many tokens.")] = None,
    estimate_only: Annotated[Flag, Field(description="Return the estimate without starting.")] = False,
    resume: Resume = None,
) -> DistillStarted:
    """Start the whole TED loop over a dataset as a background job; returns its id at once.

    Each epoch the student answers every problem `rollouts` times with the library in its
    prompt; the teacher critiques the groups with wrong answers and the library is
    compressed to its budget. Follow it with get_job (wait=true to receive progress),
    stop it with cancel_job, and continue a failed, cancelled or stopped one with resume=<job id>
    (calls already paid for are not repeated). The reply carries an estimate of calls and tokens.
    """
    shared = ted(ctx)
    if resume is not None:
        prepared = await prepare_resume(shared.store, shared.models, resume)
        await shared.runner.resume(resume, max_cost_usd=max_cost_usd, max_tokens=max_tokens)
        job_id = resume
    else:
        prepared = await prepare_job(
            shared.store,
            shared.models,
            await _dataset(dataset, limit),
            validation_set=await _dataset(validation.dataset, None) if validation and validation.dataset else None,
            library=library,
            student=student,
            teacher=teacher,
            student_settings=student_settings,
            teacher_settings=teacher_settings,
            check_models=not estimate_only,
            epochs=epochs,
            rollouts=rollouts,
            concurrency=concurrency,
            compression=compression,
            critique_all=critique_all,
            failure_share=failure_share,
            validation=validation.model_dump(exclude_unset=True, exclude={"dataset"}) if validation else {},
            max_cost_usd=max_cost_usd,
            max_tokens=max_tokens,
        )
        if estimate_only:
            return DistillStarted(started=False, estimate=prepared.estimate, job=None)
        job_id = (await create_job(shared.store, prepared)).id
        shared.runner.start(job_id)
    return DistillStarted(
        started=True, estimate=prepared.estimate, job=(await jobs.get(shared.store, job_id)).summary()
    )


async def _dataset(dataset: str | Items | None, limit: int | None) -> Dataset:
    if dataset is None:
        raise InvalidInput("Give a dataset (a JSONL file's path or a list of items), or a job id as `resume`.")
    # A client may name files only inside the data folders (TED_DATA_DIRS); see ted.files.
    if isinstance(dataset, str):
        return await load_dataset(dataset, limit=limit, roots=data_roots())
    return await dataset_from_items(dataset, limit=limit, roots=data_roots())


async def get_job(
    ctx: Context,
    job_id: JobId,
    wait: Annotated[Flag, Field(description="Wait until the job ends (or `timeout`), sending progress.")] = False,
    timeout: Annotated[float, Field(gt=0, le=3600, description="Seconds to wait at most.")] = 300,
) -> JobStatus:
    """State, progress (problems done / total, epoch), cost so far, library version and error of a job.

    With wait=true the call returns when the job ends or after `timeout` seconds, and
    sends progress notifications: where the job stands at once, then after every batch.
    """
    shared = ted(ctx)

    async def report(status: JobStatus) -> None:
        epochs = status.params.epochs
        await ctx.report_progress(
            status.problems_done,
            status.problems_total,
            f"epoch {min(status.epoch + 1, epochs)}/{epochs}, library v{status.library_version}, {status.state}",
        )

    seen = shared.runner.generation(job_id)  # before the read: a change after it is waited for
    status = await jobs.status(shared.store, shared.ledger, job_id)
    if not wait or status.finished:
        return status
    with anyio.move_on_after(timeout):
        await report(status)
        while not status.finished:
            await shared.runner.wait_for_change(job_id, seen, timeout)
            seen = shared.runner.generation(job_id)
            previous, status = status, await jobs.status(shared.store, shared.ledger, job_id)
            if (status.problems_done, status.state) != (previous.problems_done, previous.state):
                await report(status)
    return status


async def cancel_job(ctx: Context, job_id: JobId) -> JobSummary:
    """Stop a job cleanly: the batch in flight is dropped, everything applied before it stays.

    Not final: distill_batch(resume=job_id) continues it without repeating a paid call. A job
    run by another server process stops when that process next looks.
    """
    shared = ted(ctx)
    return (await shared.runner.cancel(job_id)).summary()


async def list_jobs(
    ctx: Context,
    library: Annotated[LibraryName | None, Field(description="Only this library's jobs.")] = None,
    limit: Annotated[int, Field(ge=1, le=200, description="At most this many, newest first.")] = 20,
) -> JobList:
    """List distillation jobs, newest first: id, library, state, progress, models, error.

    Use it to find a job id again; get_job gives one job's details and cost.
    """
    return JobList(jobs=[job.summary() for job in await jobs.listed(ted(ctx).store, library=library, limit=limit)])


class Measured(BaseModel):
    id: str
    difference: float
    low: float
    high: float
    flagged: bool


class EvidenceMeasured(BaseModel):
    version: int
    calls: int = Field(description="Student answers the measurement takes.")
    accuracy: float | None = Field(description="With every lesson; null when only the estimate was asked for.")
    lessons: list[Measured] = Field(description="Best evidence first; empty for an estimate.")


async def measure_evidence(
    ctx: Context,
    library: LibraryName,
    dataset: Annotated[str | Items, Field(description="Held-out problems, like distill_batch's `dataset`.")],
    max_calls: Annotated[int, Field(ge=1, description="The most student answers allowed; more is refused.")],
    version: VersionChoice = "served",
    estimate_only: Annotated[Flag, Field(description="Only count the answers it takes.")] = False,
) -> EvidenceMeasured:
    """Measure each lesson's evidence: accuracy with minus without it, paired per problem, with
    its 95% interval (flagged: removing it helped); kept with the lesson. Estimate first.
    """
    shared = ted(ctx)
    data = await _dataset(dataset, None)
    measurement = await plan_evidence(shared.store, library, data.problems, version=version)
    if estimate_only:
        guess = measurement.estimate()
        return EvidenceMeasured(version=guess.version, calls=guess.calls, accuracy=None, lessons=[])
    estimate = measurement.within(max_calls)  # refused before a model is even named
    state = await shared.store.library_state(library)
    model = await load_model(shared.models, state.model_for("student"))
    done = {"n": 0}

    def tick(_: bool) -> None:
        done["n"] += 1

    async def report_progress() -> None:
        while True:
            await ctx.report_progress(done["n"], estimate.calls, f"{done['n']} of {estimate.calls} answers")
            await anyio.sleep(1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(report_progress)
        report = await measure(
            shared.store,
            shared.ledger,
            model,
            measurement,
            dataset=str(data.path or data.name),
            max_calls=max_calls,
            settings=state.generation_for("student"),
            on_answer=tick,
        )
        tg.cancel_scope.cancel()
    lessons = [
        Measured(id=m.id, difference=m.difference, low=m.interval.low, high=m.interval.high, flagged=m.flagged)
        for m in report.lessons
    ]
    return EvidenceMeasured(version=report.version, calls=estimate.calls, accuracy=report.accuracy, lessons=lessons)
