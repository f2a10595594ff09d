"""Models for a `ted` command that calls them, closed when the command ends."""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from ted.llm.base import Model
from ted.llm.registry import get_model


@asynccontextmanager
async def closing_models() -> AsyncIterator[Callable[[str], Model]]:
    """`get_model`, closing on the way out the HTTP connections of every model it gave.

    Models are cached per process with their SDK clients, whose connections belong to this
    command's event loop. Left open when the loop ends (`ted.cli.run` called in-process, by a
    script or a test), they are closed later from whatever loop runs then, and fail there.
    """
    used: list[Model] = []

    def resolve(name: str) -> Model:
        used.append(model := get_model(name))
        return model

    try:
        yield resolve
    finally:
        for model in dict.fromkeys(used):
            if (close := getattr(model, "aclose", None)) is not None:
                await close()
