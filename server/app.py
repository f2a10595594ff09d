"""The ted-mcp MCP server: thin typed wrappers over `ted.library`.

The store lives in the server's lifespan (one connection per process); every tool reads it
from the request context. A `TedError` becomes a tool error carrying the same message, so
the calling agent reads what to fix and nothing was written.
"""

import importlib
import importlib.metadata
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field
from ted_server.runner import JobRunner

from ted import jobs
from ted import library as lib
from ted.compression import CompressionResult
from ted.compression import compress_library as compress
from ted.critique import CritiqueResult, critique_task
from ted.database import default_db_path
from ted.datasets import dataset_from_items, load_dataset
from ted.distill import Estimate, estimate
from ted.errors import InvalidInput, TedError
from ted.jobs import Compression, DistillParams, JobStatus
from ted.ledger import Ledger
from ted.library import model_name
from ted.llm.base import Model
from ted.llm.registry import get_model
from ted.models import (
    MAX_CITED_IDS,
    AnswerText,
    AttemptResult,
    ChangeResult,
    ExperienceId,
    ExperiencePrompt,
    ExperienceText,
    LibraryList,
    LibraryName,
    LibraryState,
    TaskId,
    TaskText,
    TrajectoryText,
    library_name,
)
from ted.prompts import SERVER_INSTRUCTIONS, solve_prompt
from ted.store import Store

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
ADDITIVE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False)
# The teacher tools call the configured model provider: open world.
TEACHER = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)
TEACHER_DESTRUCTIVE = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True
)


@contextmanager
def reported_as(error: type[Exception]) -> Iterator[None]:
    """A TedError inside becomes `error` (a tool or resource error) with the same message."""
    try:
        yield
    except TedError as e:
        raise error(str(e)) from e


@dataclass
class Ted:
    """What every tool shares, opened once in the server's lifespan."""

    store: Store
    ledger: Ledger
    models: Callable[[str], Model]
    runner: JobRunner

    def teacher(self, state: LibraryState) -> Model:
        """The library's own teacher, else `TED_TEACHER`; resolved per call so keys are read late."""
        return self.models(model_name(state, "teacher"))


class DistillStarted(BaseModel):
    started: bool
    estimate: Estimate
    job: JobStatus | None


def _store(ctx: Context) -> Store:
    return ctx.request_context.lifespan_context.store


def build_server(
    db_path: Path | str | None = None, *, models: Callable[[str], Model] | None = None
) -> MCPServer[Ted]:
    """The server, bound to one database file (default: `TED_DB` or the user data dir).

    `models` turns a `provider:model` name into a model (default: the provider adapters);
    tests pass scripted models here.
    """
    path = Path(db_path) if db_path is not None else default_db_path()

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[Ted]:
        async with Store.open(path) as store, anyio.create_task_group() as tg:
            print(f"ted-mcp: experience store at {store.path}", file=sys.stderr, flush=True)
            # The grader's sympy takes a second to import; do it now, off the event loop, rather
            # than inside the first record_attempt that carries a ground truth.
            tg.start_soon(anyio.to_thread.run_sync, importlib.import_module, "math_verify")
            ledger, resolve = Ledger(store), models or get_model
            runner = JobRunner(store, ledger, resolve, tg)
            if resumed := await runner.resume_interrupted():
                print(f"ted-mcp: resuming interrupted jobs {', '.join(resumed)}", file=sys.stderr, flush=True)
            try:
                yield Ted(store=store, ledger=ledger, models=resolve, runner=runner)
            finally:
                # A job still running stays `running` in the database with this (soon gone)
                # process as its owner, so the next start resumes it; don't wait for it here.
                tg.cancel_scope.cancel()

    mcp = MCPServer(
        "ted-mcp",
        title="TED experience library",
        version=importlib.metadata.version("ted-mcp"),
        instructions=SERVER_INSTRUCTIONS,
        lifespan=lifespan,
        log_level="WARNING",
    )

    @mcp.tool(annotations=READ_ONLY)
    async def get_experiences(
        ctx: Context,
        library: LibraryName = "default",
        task: Annotated[TaskText | None, Field(description="The task you are about to solve (optional).")] = None,
    ) -> Annotated[CallToolResult, ExperiencePrompt]:
        """Read the experience library before you solve a task.

        Returns `prompt`, the lessons to put before your own instructions (empty when nothing
        has been learned yet), the items with their ids and usage counts, the library version,
        its token count and budget. Cite a lesson as [E3] when you apply it.
        """
        with reported_as(ToolError):
            prompt = await lib.get_experiences(_store(ctx), library, task)
        # The text block mirrors the structured content as compact JSON: the SDK's default
        # (indented) nearly doubles the reply of the call every agent makes before every task.
        return CallToolResult(
            content=[TextContent(type="text", text=prompt.model_dump_json())],
            structured_content=prompt.model_dump(mode="json"),
        )

    @mcp.tool(annotations=ADDITIVE)
    async def record_attempt(
        ctx: Context,
        task: TaskText,
        trajectory: TrajectoryText,
        answer: AnswerText | None = None,
        library: LibraryName = "default",
        task_id: TaskId | None = None,
        ground_truth: AnswerText | None = None,
        correct: Annotated[bool | None, Field(description="Your verdict when there is no ground truth.")] = None,
        used_experience_ids: Annotated[list[ExperienceId], Field(max_length=MAX_CITED_IDS)] = [],
        model: Annotated[str | None, Field(max_length=200, description="The model that made the attempt.")] = None,
    ) -> AttemptResult:
        """Record one attempt at a task, after you solved it.

        Pass your reasoning as `trajectory` (citing lessons as [E3]) and your final `answer`.
        With a `ground_truth` the attempt is graded and the grade returned; otherwise pass
        `correct` if you learned the outcome. Each cited experience, from `used_experience_ids`
        and from [E#] citations in the trajectory, counts one use. Unknown ids are reported back.
        """
        with reported_as(ToolError):
            return await lib.record_attempt(
                _store(ctx),
                library=library,
                task=task,
                trajectory=trajectory,
                answer=answer,
                task_id=task_id,
                ground_truth=ground_truth,
                correct=correct,
                used_experience_ids=used_experience_ids,
                model=model,
            )

    @mcp.tool(annotations=ADDITIVE)
    async def add_experience(ctx: Context, text: ExperienceText, library: LibraryName = "default") -> ChangeResult:
        """Add a lesson to a library by hand.

        Write a general lesson that helps with many tasks of this kind (a reasoning pattern
        that works, or a failure to avoid), never the answer to one task. Makes a new version.
        """
        with reported_as(ToolError):
            return await lib.add_experience(_store(ctx), library, text, source="add_experience")

    @mcp.tool(annotations=READ_ONLY)
    async def list_libraries(ctx: Context) -> LibraryList:
        """List the experience libraries with their version, size, token count and attempts."""
        with reported_as(ToolError):
            return LibraryList(libraries=await _store(ctx).list_libraries())

    @mcp.tool(annotations=DESTRUCTIVE)
    async def rollback_library(
        ctx: Context,
        library: LibraryName,
        version: Annotated[int, Field(ge=0, description="The version whose lessons to bring back.")],
    ) -> ChangeResult:
        """Undo changes: make the library's lessons what they were at `version`.

        History is kept: the rollback is itself a new version, so it can be undone too.
        """
        with reported_as(ToolError):
            return await lib.rollback(_store(ctx), library, version)

    @mcp.tool(annotations=TEACHER)
    async def request_critique(ctx: Context, task_id: TaskId, library: LibraryName = "default") -> CritiqueResult:
        """Ask the teacher to critique your recorded attempts at a task and update the library.

        Call it after record_attempt, once the task has a ground truth or an outcome. The
        teacher compares the attempts with its own (cached) solution and the ground truth and
        turns what it finds into general lessons: new ones, sharper wordings, deletions. The
        reply lists what changed and the new version; the library is compressed if it grew
        past its budget. Lessons that copy the attempts or address the agent are rejected.
        """
        ted: Ted = ctx.request_context.lifespan_context
        with reported_as(ToolError):
            state = await ted.store.library_state(library)
            return await critique_task(ted.store, ted.ledger, ted.teacher(state), library, task_id)

    @mcp.tool(annotations=TEACHER_DESTRUCTIVE)
    async def compress_library(
        ctx: Context,
        library: LibraryName = "default",
        strategy: Annotated[
            Literal["teacher", "truncate", "random"],
            Field(description="teacher: merge/rewrite/delete/retain by the teacher; truncate and random are ablations."),
        ] = "teacher",
        dry_run: Annotated[bool, Field(description="Show the plan without applying it.")] = False,
        seed: Annotated[int | None, Field(description="Seed for the random strategy.")] = None,
    ) -> CompressionResult:
        """Shrink a library to its token budget and item cap.

        The teacher sees every lesson with its priority log(1 + usage), helpful/harmful counts and
        tokens, and merges, rewrites, deletes or retains each; if its plan still leaves the library
        over budget the lowest-priority lessons are removed. Applied as one version (undo with
        rollback_library); with dry_run=true nothing changes.
        """
        ted: Ted = ctx.request_context.lifespan_context
        with reported_as(ToolError):
            state = await ted.store.library_state(library)
            teacher = ted.ledger.bind(ted.teacher(state), "compress", library=library) if strategy == "teacher" else None
            return await compress(ted.store, library, strategy=strategy, teacher=teacher, dry_run=dry_run, seed=seed)

    @mcp.tool(annotations=TEACHER)
    async def distill_batch(
        ctx: Context,
        dataset: Annotated[
            str | list[dict[str, Any]] | None,
            Field(description="A JSONL file on the server's machine (absolute path), or a list of items "
                  "{id, question, answer, images?}. Not needed with `resume`."),
        ] = None,
        library: LibraryName = "default",
        epochs: Annotated[int, Field(ge=1, le=100)] = 3,
        rollouts: Annotated[int, Field(ge=1, le=64, description="Student attempts per problem and epoch.")] = 5,
        concurrency: Annotated[int, Field(ge=1, le=256, description="Problems in flight; 1 = strict order.")] = 8,
        student: Annotated[str | None, Field(description="provider:model; default: the library's, else TED_STUDENT.")] = None,
        teacher: Annotated[str | None, Field(description="provider:model; default: the library's, else TED_TEACHER.")] = None,
        compression: Annotated[
            Compression, Field(description="teacher (the method); none, truncate, random reproduce the ablations.")
        ] = "teacher",
        critique_all: Annotated[bool, Field(description="Critique groups whose rollouts were all correct too.")] = False,
        limit: Annotated[int | None, Field(ge=1, description="Use only the first `limit` problems.")] = None,
        max_cost_usd: Annotated[float | None, Field(gt=0, description="Stop cleanly at this cost.")] = None,
        max_tokens: Annotated[int | None, Field(gt=0, description="Stop cleanly at this many tokens.")] = None,
        estimate_only: Annotated[bool, Field(description="Return the estimate without starting.")] = False,
        resume: Annotated[
            str | None,
            Field(min_length=1, max_length=64, description="The id of a failed, stopped or interrupted job to "
                  "resume instead of starting one; of the other arguments only the caps apply."),
        ] = None,
    ) -> DistillStarted:
        """Start the whole TED loop over a dataset as a background job; returns its id at once.

        Each epoch the student answers every problem `rollouts` times with the library in its
        prompt; the teacher critiques the groups with wrong answers and the library is
        compressed to its budget. Follow it with get_job (wait=true to receive progress),
        stop it with cancel_job, and continue a failed or stopped one with resume=<job id>
        (calls already paid for are not repeated). The reply carries an estimate of calls and tokens.
        """
        ted: Ted = ctx.request_context.lifespan_context
        with reported_as(ToolError):
            if resume is not None:
                job = await jobs.get(ted.store, resume)
                for name in (job.params.student, job.params.teacher):
                    ted.models(name)  # a key that is still missing fails now, naming its variable
                await ted.runner.resume(resume, max_cost_usd=max_cost_usd, max_tokens=max_tokens)
                guess = estimate(job.params, await jobs.problems(ted.store, resume))
                status = await jobs.status(ted.store, ted.ledger, resume)
                return DistillStarted(started=True, estimate=guess, job=status)
            if dataset is None:
                raise InvalidInput("Give a dataset (a JSONL file's path or a list of items), or a job id as `resume`.")
            if isinstance(dataset, str):
                data = await load_dataset(dataset, limit=limit)
            else:
                data = await dataset_from_items(dataset, limit=limit)
            state = await jobs.library_for(ted.store, library)  # an estimate creates nothing
            params = DistillParams(
                library=library, student=model_name(state, "student", student),
                teacher=model_name(state, "teacher", teacher), epochs=epochs, rollouts=rollouts,
                concurrency=concurrency, compression=compression, critique_all=critique_all,
                max_cost_usd=max_cost_usd, max_tokens=max_tokens,
            )  # fmt: skip
            guess = estimate(params, data.problems, state.settings.encoding, state.settings.token_budget)
            if estimate_only:
                return DistillStarted(started=False, estimate=guess, job=None)
            for name in (params.student, params.teacher):
                ted.models(name)  # a missing key fails now, naming its variable, not inside the job
            job = await jobs.create(ted.store, params, data.problems, data.path or data.name)
            ted.runner.start(job.id)
            return DistillStarted(started=True, estimate=guess, job=await jobs.status(ted.store, ted.ledger, job.id))

    @mcp.tool(annotations=READ_ONLY)
    async def get_job(
        ctx: Context,
        job_id: Annotated[str, Field(min_length=1, max_length=64)],
        wait: Annotated[bool, Field(description="Wait until the job ends (or `timeout`), sending progress.")] = False,
        timeout: Annotated[float, Field(gt=0, le=3600, description="Seconds to wait at most.")] = 300,
    ) -> JobStatus:
        """State, progress (problems done / total, epoch), cost so far, library version and error of a job.

        With wait=true the call returns when the job ends or after `timeout` seconds, and
        sends progress notifications: where the job stands at once, then after every batch.
        """
        ted: Ted = ctx.request_context.lifespan_context

        async def report(status: JobStatus) -> None:
            await ctx.report_progress(
                status.problems_done, status.problems_total * status.params.epochs,
                f"epoch {min(status.epoch + 1, status.params.epochs)}/{status.params.epochs}, "
                f"library v{status.library_version}, {status.state}",
            )  # fmt: skip

        with reported_as(ToolError):
            seen = ted.runner.generation(job_id)  # before the read: a change after it is waited for
            status = await jobs.status(ted.store, ted.ledger, job_id)
            if not wait or status.finished:
                return status
            with anyio.move_on_after(timeout):
                await report(status)
                while not status.finished:
                    await ted.runner.wait_for_change(job_id, seen, timeout)
                    seen = ted.runner.generation(job_id)
                    previous, status = status, await jobs.status(ted.store, ted.ledger, job_id)
                    if (status.problems_done, status.state) != (previous.problems_done, previous.state):
                        await report(status)
            return status

    @mcp.tool(annotations=DESTRUCTIVE)
    async def cancel_job(ctx: Context, job_id: Annotated[str, Field(min_length=1, max_length=64)]) -> JobStatus:
        """Stop a job cleanly: the batch in flight is dropped, everything applied before it stays.

        Returns once the job has stopped; a job run by another server process stops when that
        process next looks (cancel_requested is then true and get_job shows it end).
        """
        ted: Ted = ctx.request_context.lifespan_context
        with reported_as(ToolError):
            await ted.runner.cancel(job_id)
            return await jobs.status(ted.store, ted.ledger, job_id)

    @mcp.resource(
        "ted://libraries/{library}/prompt",
        name="experience-prompt",
        description="The text a library adds to a system prompt.",
        mime_type="text/markdown",
    )
    async def experience_prompt_resource(library: str, ctx: Context) -> str:
        with reported_as(ResourceError):
            return (await lib.get_experiences(_store(ctx), library_name(library))).prompt

    @mcp.resource(
        "ted://libraries/{library}/history",
        name="library-history",
        description="Every version of a library: kind, reason, operations and the lessons it held.",
        mime_type="application/json",
    )
    async def history_resource(library: str, ctx: Context) -> str:
        with reported_as(ResourceError):
            versions = await _store(ctx).history(library_name(library))
        return "[" + ",".join(v.model_dump_json() for v in versions) + "]"

    @mcp.resource(
        "ted://jobs/{job_id}",
        name="job",
        description="A distillation job: state, progress, cost, library version, error.",
        mime_type="application/json",
    )
    async def job_resource(job_id: str, ctx: Context) -> str:
        ted: Ted = ctx.request_context.lifespan_context
        with reported_as(ResourceError):
            return (await jobs.status(ted.store, ted.ledger, job_id)).model_dump_json()

    @mcp.prompt(title="Solve with experiences")
    async def solve_with_experiences(task: str, ctx: Context, library: str = "default") -> str:
        """A task framed with the library's lessons and the request to cite them."""
        try:
            prompt = await lib.get_experiences(_store(ctx), library_name(library))
        except TedError as e:
            raise MCPError(code=INVALID_PARAMS, message=str(e)) from e
        return solve_prompt(prompt.prompt, task)

    return mcp
