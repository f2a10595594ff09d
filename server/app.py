"""The ted-mcp MCP server: `build_server` opens the store in the lifespan and registers the
tools, resources and prompt, which are plain functions in their own modules.

A `TedError` raised by a tool becomes a tool error carrying the same message (a resource's, a
resource error), so the calling agent reads what to fix, and nothing was written.
"""

import functools
import importlib
import importlib.metadata
import inspect
import os
import sqlite3
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.types import ToolAnnotations

from ted import grading
from ted.errors import ConfigError, TedError
from ted.guard import Guard
from ted.ledger import Ledger
from ted.llm.base import Model
from ted.llm.registry import closing_models, get_model, import_configured_adapters, split_name
from ted.prompts import server_instructions
from ted.redaction import redact
from ted.store import Store
from ted.store.database import default_db_path
from ted_server import job_tools, library_tools, resources, teacher_tools
from ted_server.context import Ted
from ted_server.runner import JobRunner


def _hints(
    read_only: bool = False, destructive: bool = False, idempotent: bool | None = None, open_world: bool = False
) -> ToolAnnotations:
    # Every tool carries its annotations in tools/list, so only what says something is sent:
    # idempotentHint is false unless said, and a read-only tool's destructive and idempotent hints
    # mean nothing (MCP: "meaningful only when readOnlyHint == false"). readOnlyHint and
    # openWorldHint are always sent (the latter's default is true).
    return ToolAnnotations(
        read_only_hint=read_only,
        destructive_hint=None if read_only else destructive,
        idempotent_hint=None if read_only else idempotent or None,
        open_world_hint=open_world,
    )


# Every tool with its title and annotations; the teacher tools call the configured model
# provider: open world.
TOOLS: list[tuple[Callable[..., Awaitable[Any]], str, ToolAnnotations]] = [
    (library_tools.get_experiences, "Read the experience library", _hints(read_only=True)),
    (library_tools.record_attempt, "Record an attempt", _hints()),
    (library_tools.add_experience, "Add a lesson", _hints()),
    (library_tools.edit_experience, "Edit a lesson", _hints(destructive=True, idempotent=True)),
    (library_tools.remove_experience, "Remove a lesson", _hints(destructive=True, idempotent=True)),
    (library_tools.list_libraries, "List libraries", _hints(read_only=True)),
    (library_tools.rollback_library, "Roll a library back", _hints(destructive=True)),
    (library_tools.delete_library, "Delete a library", _hints(destructive=True, idempotent=True)),
    (library_tools.promote_version, "Serve a version", _hints(destructive=True)),
    (job_tools.measure_evidence, "Measure lessons' evidence", _hints(open_world=True)),
    (teacher_tools.request_critique, "Ask the teacher for a critique", _hints(open_world=True)),
    (teacher_tools.compress_library, "Compress a library", _hints(destructive=True, open_world=True)),
    (job_tools.distill_batch, "Distil a library over a dataset", _hints(open_world=True)),
    (job_tools.get_job, "Follow a job", _hints(read_only=True)),
    (job_tools.list_jobs, "List jobs", _hints(read_only=True)),
    (job_tools.cancel_job, "Cancel a job", _hints(destructive=True, idempotent=True)),
]


def reported_as(error: type[Exception], fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """`fn`, with a TedError it raises turned into `error` (a tool or resource error), same message,
    and anything else it raises into one that names the cause (its traceback goes to the log)."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except TedError as e:
            raise error(str(e)) from e
        except Exception as e:  # noqa: BLE001 — every failure reaches the client with a cause
            print(f"ted-mcp: {fn.__name__} failed:\n{redact(traceback.format_exc())}", file=sys.stderr, flush=True)
            raise error(unexpected(e)) from e

    return wrapper


# What a reply's schema does without: the limits and defaults of what a caller may send (a reply
# carries every field, within the server's own limits), `required` (a reply carries every field
# its record declares, defaults and nulls included: the list only repeated the property names,
# a tenth of tools/list), formats (a reply's times are the server's own), and prose. A client
# checks a reply against its schema; the model reads the reply itself, and the tool's description
# says what it means.
REPLY_DROPS = frozenset(
    {"default", "pattern", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
    | {"minItems", "maxItems", "description", "required", "format"}
)


def compact(schema: Any, reply: bool = False) -> Any:
    """A tool's JSON schema without what every client loads with tools/list and never needs.

    Gone everywhere: the titles pydantic derives from names ("library" → "Library"), a sixth
    of the list, and the docstrings of the records in `$defs`, written for Python readers (the
    argument that takes one has its own description). Gone from a reply's schema: `REPLY_DROPS`.
    Only keywords go: a property that is itself named "title" or "description" is kept.
    """
    if isinstance(schema, list):
        return [compact(item, reply) for item in schema]
    if not isinstance(schema, dict):
        return schema
    dropped = REPLY_DROPS | {"title"} if reply else {"title"}
    kept = {}
    for key, value in schema.items():
        if key == "default" and value is None:  # an optional argument: not in `required` says so
            continue
        if key == "additionalProperties" and value is True:  # what a schema allows anyway
            continue
        if key == "$defs":
            kept[key] = {
                name: {k: v for k, v in compact(sub, reply).items() if k != "description"}
                for name, sub in value.items()
            }
        elif key == "properties":
            kept[key] = {name: compact(sub, reply) for name, sub in value.items()}
        elif key not in dropped:
            kept[key] = compact(value, reply)
    match kept.get("anyOf"):
        # `X | None` as one type: what pydantic spells anyOf [{type: X}, {type: null}].
        case [{"type": str(one)}, {"type": "null"}] if len(kept["anyOf"][0]) == 1:
            del kept["anyOf"]
            kept["type"] = [one, "null"]
    return kept


def tool(fn: Callable[..., Awaitable[Any]], title: str, hints: ToolAnnotations) -> Tool:
    """`fn` as an MCP tool: its docstring, dedented, as the description, compact schemas, and no
    argument name it does not have."""
    made = strict_arguments(
        Tool.from_function(
            reported_as(ToolError, fn), title=title, description=inspect.cleandoc(fn.__doc__ or ""), annotations=hints
        )
    )
    made.parameters = compact(made.parameters)
    # The SDK reads the output schema from the metadata when tools are listed.
    made.fn_metadata.output_schema = compact(made.fn_metadata.output_schema, reply=True)
    return made


def unexpected(e: Exception) -> str:
    """What an error ted-mcp did not raise on purpose means to the caller, without its internals."""
    if isinstance(e, OverflowError):
        return "A number is too large for the database (the limit is 2**63 - 1); pass a smaller one."
    if isinstance(e, ValueError) and "null" in str(e).lower():
        return "A text argument contains a NUL character (\\x00); remove it and try again."
    if isinstance(e, OSError):
        return f"The server could not use a file or connection: {e.strerror or type(e).__name__}. Check it and retry."
    if isinstance(e, sqlite3.Error):
        return f"The database failed ({redact(str(e))}); this call did not complete. Check the disk and retry."
    return (
        f"ted-mcp failed with {type(e).__name__}: {redact(str(e))[:300]}. This is a bug in ted-mcp; the server's "
        "log has the details, and this call did not complete."
    )


def strict_arguments(tool: Tool) -> Tool:
    """The tool, refusing argument names it does not have: a misspelled `libary` is an error that
    names it, not a call that quietly goes to the default library. (The published schema stays as
    it was: its properties already say every name there is, and the tool list stays small.)"""
    base = tool.fn_metadata.arg_model
    config = {**base.model_config, "extra": "forbid"}
    tool.fn_metadata.arg_model = type(base.__name__, (base,), {"model_config": config, "__module__": base.__module__})
    return tool


def real_models(name: str) -> Model:
    """The provider adapters, refusing the in-process test doubles: a client that names
    `scripted:…` must not get a model that costs nothing and answers whatever it is scripted to."""
    if split_name(name)[0] == "scripted":
        raise ConfigError(
            f"Model {name!r} is a test double, which this server only offers when started for tests "
            "(ted-mcp --allow-test-models). Name a real model: anthropic:…, openai:…, openrouter:… or local:…."
        )
    return get_model(name)


async def _load_adapters_once_listed(shared: Ted) -> None:
    """Import the provider SDKs this environment configures (a second or more each) in a worker
    thread once the first tools/list is answered: not competing with the start, and done before
    the first critique or distill_batch needs them, rather than inside it."""
    await shared.listed.wait()
    await anyio.to_thread.run_sync(import_configured_adapters, abandon_on_cancel=True)


def build_server(
    db_path: Path | str | None = None,
    *,
    models: Callable[[str], Model] | None = None,
    resume_jobs: bool = False,
    allow_test_models: bool = False,
) -> MCPServer[Ted]:
    """The server, bound to one database file (default: `TED_DB` or the user data dir).

    `models` turns a `provider:model` name into a model (default: the provider adapters, without
    the `scripted:` test doubles unless `allow_test_models`); tests pass scripted models here.
    Interrupted jobs are listed at start and resumed only with `resume_jobs` (`ted-mcp --resume-jobs`).
    """
    path = Path(db_path) if db_path is not None else default_db_path()
    resolve = models or (get_model if allow_test_models else real_models)

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[Ted]:
        # Models closed after the jobs stop: their connections belong to this loop.
        async with (
            Store.open(path, verify=True) as store,
            closing_models(resolve) as resolved,
            anyio.create_task_group() as tg,
        ):
            print(f"ted-mcp: experience store at {store.path}", file=sys.stderr, flush=True)
            # The grading workers take seconds to start (sympy); start them now, off the event loop,
            # rather than inside the first record_attempt that carries a ground truth.
            tg.start_soon(functools.partial(anyio.to_thread.run_sync, grading.pool().warm, abandon_on_cancel=True))
            ledger = Ledger(store)
            store.reviewer = Guard(store, ledger, resolved)
            runner = JobRunner(store, ledger, resolved, tg)
            if resumed := await runner.interrupted(resume=resume_jobs):
                print(f"ted-mcp: resuming interrupted jobs {', '.join(resumed)}", file=sys.stderr, flush=True)
            shared = Ted(store=store, ledger=ledger, models=resolved, runner=runner)
            tg.start_soon(_load_adapters_once_listed, shared)
            try:
                yield shared
            finally:
                # A job still running stays `running` in the database with this (soon gone)
                # process as its owner, so the next start lists it as interrupted; don't wait here.
                tg.cancel_scope.cancel()

    mcp = MCPServer(
        "ted-mcp",
        title="TED experience library",
        version=importlib.metadata.version("ted-mcp"),
        instructions=server_instructions(os.environ.get("TED_TEACHER")),
        lifespan=lifespan,
        log_level="WARNING",
        tools=[tool(fn, title, hints) for fn, title, hints in TOOLS],
        middleware=[resources.listings],
    )
    for uri, name, description, mime_type, read in resources.RESOURCES:
        mcp.resource(uri, name=name, description=description, mime_type=mime_type)(reported_as(ResourceError, read))
    mcp.prompt(title="Solve with experiences")(resources.solve_with_experiences)
    return mcp
