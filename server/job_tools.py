"""The tools for distillation jobs: start one over a dataset, follow it, cancel it, list them."""

from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import Context
from pydantic import BaseModel, Field

from ted.errors import InvalidInput
from ted.files import data_roots
from ted.llm.base import GenerationSettings
from ted.runs import jobs
from ted.runs.datasets import Dataset, dataset_from_items, load_dataset
from ted.runs.jobs import Compression, JobStatus, JobSummary
from ted.runs.prepare import Estimate, create_job, prepare_job, prepare_resume
from ted.store.records import Flag, LibraryName
from ted_server.context import ted

JobId = Annotated[str, Field(min_length=1, max_length=64, description="A job id, e.g. 'job-1a2b3c4d5e6f'.")]
ModelName = Annotated[str | None, Field(description="provider:model; default: the library's, else the server's.")]
Sampling = Annotated[
    GenerationSettings | None,
    Field(description="max_tokens, temperature, top_p, seed; over the library's and TED_STUDENT_* / TED_TEACHER_*."),
]
FailureShare = Annotated[
    float, Field(gt=0, le=1, description="Fail the job once this share of one batch's critiques failed (1: all).")
]


class DistillStarted(BaseModel):
    started: bool
    estimate: Estimate
    job: JobSummary | None = Field(description="The job started or resumed; follow it with get_job.")


class JobList(BaseModel):
    jobs: list[JobSummary]


async def distill_batch(
    ctx: Context,
    dataset: Annotated[
        str | list[dict[str, Any]] | None,
        Field(
            description="A JSONL file in the server's data folders (TED_DATA_DIRS), or a list of items "
            "{id, question, answer, images?}. Not needed with `resume`."
        ),
    ] = None,
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
    limit: Annotated[int | None, Field(ge=1, le=10**9, description="Use only the first `limit` problems.")] = None,
    max_cost_usd: Annotated[float | None, Field(gt=0, le=10**6, description="Stop cleanly at this cost.")] = None,
    max_tokens: Annotated[int | None, Field(gt=0, le=10**12, description="Stop cleanly at this many tokens.")] = None,
    estimate_only: Annotated[Flag, Field(description="Return the estimate without starting.")] = False,
    resume: Annotated[
        JobId | None,
        Field(
            description="A failed, cancelled or stopped job to continue; of the other arguments only the caps apply."
        ),
    ] = None,
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


async def _dataset(dataset: str | list[dict[str, Any]] | None, limit: int | None) -> Dataset:
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
