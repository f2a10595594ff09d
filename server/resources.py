"""What a client can read without a tool call: a library's prompt and history, a job; and the
`solve_with_experiences` prompt that frames a task with a library's lessons.

The resources are templates; `resources/list` also names every library's prompt, so a client
that browses resources (the Inspector, Claude Desktop's attach menu) finds the libraries.
"""

from typing import Annotated, Any

from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, Resource
from pydantic import Field

from ted import agent
from ted.errors import TedError
from ted.prompts import solve_prompt
from ted.runs import jobs
from ted.store.records import library_name
from ted_server.context import Ted, ted


async def experience_prompt(library: str, ctx: Context) -> str:
    return (await agent.get_experiences(ted(ctx).store, library_name(library))).prompt


async def library_history(library: str, ctx: Context) -> str:
    versions = await ted(ctx).store.history(library_name(library))
    return "[" + ",".join(v.model_dump_json() for v in versions) + "]"


async def job(job_id: str, ctx: Context) -> str:
    shared = ted(ctx)
    return (await jobs.status(shared.store, shared.ledger, job_id)).model_dump_json()


# (uri, name, description, mime type, function)
RESOURCES = [
    (
        "ted://libraries/{library}/prompt",
        "experience-prompt",
        "The text a library adds to a system prompt.",
        "text/markdown",
        experience_prompt,
    ),
    (
        "ted://libraries/{library}/history",
        "library-history",
        "Every version of a library: kind, reason, operations and the lessons it held.",
        "application/json",
        library_history,
    ),
    (
        "ted://jobs/{job_id}",
        "job",
        "A distillation job: state, progress, cost, library version, error.",
        "application/json",
        job,
    ),
]


LISTED_LIBRARIES = 100


async def listings(ctx: ServerRequestContext[Ted, Any], call_next) -> Any:
    """Server middleware: `resources/list` as the SDK answers it, plus each library's prompt; and
    the first `tools/list` noted (`Ted.listed`)."""
    result = await call_next(ctx)
    if ctx.method == "tools/list":
        ctx.lifespan_context.listed.set()
    if ctx.method != "resources/list":
        return result
    # The first libraries by name: a client loads this list whole, and list_libraries pages the rest.
    for library in await ctx.lifespan_context.store.list_libraries(limit=LISTED_LIBRARIES):
        listed = Resource(
            uri=f"ted://libraries/{library.name}/prompt",
            name=library.name,
            title=f"Lessons of {library.name}",
            description=f"version {library.version}: {library.items} lessons, {library.tokens} tokens",
            mime_type="text/markdown",
        )
        result["resources"].append(listed.model_dump(mode="json", by_alias=True, exclude_none=True))
    return result


async def solve_with_experiences(
    task: Annotated[str, Field(description="The task to solve.")],
    ctx: Context,
    library: Annotated[str, Field(description="The library whose lessons to apply (default: 'default').")] = "default",
) -> str:
    """A task framed with the library's lessons and the request to cite them."""
    try:
        prompt = await agent.get_experiences(ted(ctx).store, library_name(library), task)
    except TedError as e:
        raise MCPError(code=INVALID_PARAMS, message=str(e)) from e
    return solve_prompt(prompt.prompt, task)
