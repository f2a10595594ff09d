"""The ted-mcp MCP server: thin typed wrappers over `ted.library`.

The store lives in the server's lifespan (one connection per process); every tool reads it
from the request context. A `TedError` becomes a tool error carrying the same message, so
the calling agent reads what to fix and nothing was written.
"""

import importlib
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Annotated

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, ToolAnnotations
from pydantic import Field

from ted import library as lib
from ted.errors import TedError
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
    TaskId,
    TaskText,
    TrajectoryText,
    library_name,
)
from ted.prompts import SERVER_INSTRUCTIONS, solve_prompt
from ted.store import Store, default_db_path

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
ADDITIVE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False)


@contextmanager
def tool_errors() -> Iterator[None]:
    try:
        yield
    except TedError as e:
        raise ToolError(str(e)) from e


def _store(ctx: Context) -> Store:
    return ctx.request_context.lifespan_context


def build_server(db_path: Path | str | None = None) -> MCPServer[Store]:
    """The server, bound to one database file (default: `TED_DB` or the user data dir)."""
    path = Path(db_path) if db_path is not None else default_db_path()

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[Store]:
        async with Store.open(path) as store, anyio.create_task_group() as tg:
            print(f"ted-mcp: experience store at {store.path}", file=sys.stderr, flush=True)
            # The grader's sympy takes a second to import; do it now, off the event loop, rather
            # than inside the first record_attempt that carries a ground truth.
            tg.start_soon(anyio.to_thread.run_sync, importlib.import_module, "math_verify")
            yield store

    mcp = MCPServer(
        "ted-mcp",
        title="TED experience library",
        instructions=SERVER_INSTRUCTIONS,
        lifespan=lifespan,
        log_level="WARNING",
    )

    @mcp.tool(annotations=READ_ONLY)
    async def get_experiences(
        ctx: Context,
        library: LibraryName = "default",
        task: Annotated[TaskText | None, Field(description="The task you are about to solve (optional).")] = None,
    ) -> ExperiencePrompt:
        """Read the experience library before you solve a task.

        Returns `prompt`, the lessons to put before your own instructions (empty when nothing
        has been learned yet), the items with their ids and usage counts, the library version,
        its token count and budget. Cite a lesson as [E3] when you apply it.
        """
        with tool_errors():
            return await lib.get_experiences(_store(ctx), library, task)

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
        with tool_errors():
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
        with tool_errors():
            return await lib.add_experience(_store(ctx), library, text, source="add_experience")

    @mcp.tool(annotations=READ_ONLY)
    async def list_libraries(ctx: Context) -> LibraryList:
        """List the experience libraries with their version, size, token count and attempts."""
        with tool_errors():
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
        with tool_errors():
            return await lib.rollback(_store(ctx), library, version)

    @mcp.resource(
        "ted://libraries/{library}/prompt",
        name="experience-prompt",
        description="The text a library adds to a system prompt.",
        mime_type="text/markdown",
    )
    async def experience_prompt_resource(library: str, ctx: Context) -> str:
        try:
            return (await lib.get_experiences(_store(ctx), library_name(library))).prompt
        except TedError as e:
            raise ResourceError(str(e)) from e

    @mcp.resource(
        "ted://libraries/{library}/history",
        name="library-history",
        description="Every version of a library: kind, reason, operations and the lessons it held.",
        mime_type="application/json",
    )
    async def history_resource(library: str, ctx: Context) -> str:
        try:
            versions = await _store(ctx).history(library_name(library))
        except TedError as e:
            raise ResourceError(str(e)) from e
        return "[" + ",".join(v.model_dump_json() for v in versions) + "]"

    @mcp.prompt(title="Solve with experiences")
    async def solve_with_experiences(task: str, ctx: Context, library: str = "default") -> str:
        """A task framed with the library's lessons and the request to cite them."""
        try:
            prompt = await lib.get_experiences(_store(ctx), library_name(library))
        except TedError as e:
            raise MCPError(code=INVALID_PARAMS, message=str(e)) from e
        return solve_prompt(prompt.prompt, task)

    return mcp
