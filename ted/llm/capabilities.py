"""What a model can take: whether it reads images.

Most current models do. Those known to read text only are listed by name pattern here, and
`TED_TEXT_ONLY_MODELS` (comma-separated `provider:model` patterns, e.g. `local:llama3*`) adds
the ones a user knows of, such as a local text model. A text-only model given an image task is
refused before any call: sent anyway, the provider would fail the request, or, worse, answer
without ever seeing the figure.
"""

import fnmatch
import os
from collections.abc import Sequence

from ted.errors import ConfigError
from ted.llm.base import Message

TEXT_ONLY_MODELS = (
    "openai:gpt-3.5*",
    "openai:gpt-4",
    "openai:gpt-4-0*",
    "openai:gpt-4-32k*",
    "openai:o1-mini*",
    "openai:o3-mini*",
    "*:deepseek-chat*",
    "*:deepseek-reasoner*",
    "openrouter:deepseek/*",
)


def takes_images(name: str) -> bool:
    given = [p.strip() for p in os.environ.get("TED_TEXT_ONLY_MODELS", "").split(",") if p.strip()]
    return not any(fnmatch.fnmatchcase(name, pattern) for pattern in (*TEXT_ONLY_MODELS, *given))


def require_images(name: str, what: str) -> None:
    """ConfigError unless the model `name` reads images; `what` names the task that has them."""
    if not takes_images(name):
        raise ConfigError(
            f"{name} reads text only, and {what} has images: use a model that takes images for this role "
            "(or, if this one does, leave it out of TED_TEXT_ONLY_MODELS)."
        )


def check_messages(name: str, messages: Sequence[Message]) -> None:
    """Refuse, before the call, to send images to a text-only model."""
    if any(m.images for m in messages):
        require_images(name, "this request")
