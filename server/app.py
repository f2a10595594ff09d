"""The ted-mcp MCP server: `build_server` opens the store in the lifespan and registers the
tools, resources and prompt, which are plain functions in their own modules.

A `TedError` raised by a tool becomes a tool error carrying the same message (a resource's, a
resource error), so the calling agent reads what to fix, and nothing was written.
"""

import functools
import importlib
import importlib.metadata
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.types import ToolAnnotations

from ted.errors import TedError
from ted.ledger import Ledger
from ted.llm.base import Model
from ted.llm.registry import get_model
from ted.prompts import SERVER_INSTRUCTIONS
from ted.store import Store
from ted.store.database import default_db_path
from ted_server import job_tools, library_tools, resources, teacher_tools
from ted_server.context import Ted
from ted_server.runner import JobRunner


def _hints(read_only: bool = False, destructive: bool = False, open_world: bool = False) -> ToolAnnotations:
    return ToolAnnotations(
        read_only_hint=read_only, destructive_hint=destructive, idempotent_hint=read_only, open_world_hint=open_world
    )


# Every tool with its annotations; the teacher tools call the configured model provider: open world.
TOOLS: list[tuple[Callable[..., Awaitable[Any]], ToolAnnotations]] = [
    (library_tools.get_experiences, _hints(read_only=True)),
    (library_tools.record_attempt, _hints()),
    (library_tools.add_experience, _hints()),
    (library_tools.list_libraries, _hints(read_only=True)),
    (library_tools.rollback_library, _hints(destructive=True)),
    (teacher_tools.request_critique, _hints(open_world=True)),
    (teacher_tools.compress_library, _hints(destructive=True, open_world=True)),
    (job_tools.distill_batch, _hints(open_world=True)),
    (job_tools.get_job, _hints(read_only=True)),
    (job_tools.cancel_job, _hints(destructive=True)),
]


def reported_as(error: type[Exception], fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """`fn`, with a TedError it raises turned into `error` (a tool or resource error), same message."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except TedError as e:
            raise error(str(e)) from e

    return wrapper


def build_server(
    db_path: Path | str | None = None,
    *,
    models: Callable[[str], Model] | None = None,
    resume_jobs: bool = False,
) -> MCPServer[Ted]:
    """The server, bound to one database file (default: `TED_DB` or the user data dir).

    `models` turns a `provider:model` name into a model (default: the provider adapters);
    tests pass scripted models here. Interrupted jobs are listed at start and resumed only with
    `resume_jobs` (`ted-mcp --resume-jobs`).
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
            if resumed := await runner.interrupted(resume=resume_jobs):
                print(f"ted-mcp: resuming interrupted jobs {', '.join(resumed)}", file=sys.stderr, flush=True)
            try:
                yield Ted(store=store, ledger=ledger, models=resolve, runner=runner)
            finally:
                # A job still running stays `running` in the database with this (soon gone)
                # process as its owner, so the next start lists it as interrupted; don't wait here.
                tg.cancel_scope.cancel()

    mcp = MCPServer(
        "ted-mcp",
        title="TED experience library",
        version=importlib.metadata.version("ted-mcp"),
        instructions=SERVER_INSTRUCTIONS,
        lifespan=lifespan,
        log_level="WARNING",
    )
    for tool, hints in TOOLS:
        mcp.tool(annotations=hints)(reported_as(ToolError, tool))
    for uri, name, description, mime_type, read in resources.RESOURCES:
        mcp.resource(uri, name=name, description=description, mime_type=mime_type)(reported_as(ResourceError, read))
    mcp.prompt(title="Solve with experiences")(resources.solve_with_experiences)
    return mcp
