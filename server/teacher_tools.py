"""The tools that call the teacher model: a critique of recorded attempts, a compression."""

from typing import Annotated

from mcp.server.mcpserver import Context
from pydantic import Field, Strict

from ted import agent
from ted.store.records import Flag, LibraryName, TaskId
from ted.teacher.compression import CompressionResult, Strategy
from ted.teacher.critique import CritiqueResult, critique_task
from ted_server.context import ted


async def request_critique(
    ctx: Context,
    task_id: Annotated[TaskId, Field(description="The task_id record_attempt returned for the attempts to critique.")],
    library: LibraryName = "default",
) -> CritiqueResult:
    """Ask the teacher to critique your recorded attempts at a task and update the library.

    Call it after record_attempt, once the task has a ground truth or an outcome. The
    teacher compares them with its own solution and the ground truth and turns what it finds
    into general lessons. The reply lists what changed and the new version; the library is
    compressed if it grew past its budget. Lessons that copy the attempts or address the agent are rejected.
    Needs a teacher model on the server; without one, skip it and keep recording attempts.
    """
    shared = ted(ctx)
    state = await shared.store.library_state(library)
    teacher, settings = await shared.teacher(state), state.generation_for("teacher")
    return await critique_task(shared.store, shared.ledger, teacher, library, task_id, settings)


async def compress_library(
    ctx: Context,
    library: LibraryName = "default",
    strategy: Annotated[
        Strategy,
        Field(description="teacher: merge/rewrite/delete/retain by the teacher; truncate and random are ablations."),
    ] = "teacher",
    dry_run: Annotated[Flag, Field(description="Show the plan without applying it.")] = False,
    seed: Annotated[Annotated[int, Strict()] | None, Field(description="Seed for the random strategy.")] = None,
) -> CompressionResult:
    """Shrink a library to its token budget and item cap.

    The teacher merges, rewrites, deletes or retains each lesson, seeing its priority, counts
    and tokens; if that still leaves the library over budget, the lowest-priority lessons go.
    Applied as one version (undo with rollback_library); with dry_run=true nothing changes.
    """
    shared = ted(ctx)
    return await agent.compress(
        shared.store, shared.ledger, shared.models, library, strategy=strategy, dry_run=dry_run, seed=seed
    )
