"""What every tool shares, opened once in the server's lifespan, and how a tool reaches it."""

from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
from mcp.server.mcpserver import Context

from ted.ledger import Ledger
from ted.llm.base import Model
from ted.llm.registry import load_model
from ted.store import Store
from ted.store.records import LibraryState
from ted_server.runner import JobRunner


@dataclass
class Ted:
    store: Store
    ledger: Ledger
    models: Callable[[str], Model]
    runner: JobRunner
    # Set once a client has listed the tools: the start is over, background loading may begin.
    listed: anyio.Event = field(default_factory=anyio.Event)

    async def teacher(self, state: LibraryState) -> Model:
        """The library's own teacher, else `TED_TEACHER`; resolved per call so keys are read late."""
        return await load_model(self.models, state.model_for("teacher"))


def ted(ctx: Context) -> Ted:
    return ctx.request_context.lifespan_context
