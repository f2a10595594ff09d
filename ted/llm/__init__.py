"""Models: one async protocol (`Model.complete`), provider adapters, structured replies.

    from ted.llm import get_model, structured
    teacher = get_model("anthropic:claude-sonnet-4-5")
    solution, completions = await structured(teacher, [Message.user("…")], Solution)

The adapters are imported on first use (importing the two SDKs takes over a second), so
`import ted.llm` stays cheap for code that only needs the protocol or the test double.
"""

from typing import TYPE_CHECKING, Any

from ted.llm.base import (
    Completion,
    GenerationSettings,
    ImagePart,
    Message,
    Model,
    OutputSchema,
    Part,
    TextPart,
    Usage,
)
from ted.llm.capabilities import takes_images
from ted.llm.provider import ModelSettings, StructuredOutput
from ted.llm.registry import PROVIDERS, clear_model_cache, get_model, load_model
from ted.llm.scripted import ScriptedModel, ScriptedRequest
from ted.llm.structured import extract_json, output_schema, parse_reply, strict_schema, structured

if TYPE_CHECKING:
    from ted.llm.anthropic import AnthropicModel
    from ted.llm.openai import OpenAIModel

__all__ = [
    "PROVIDERS",
    "AnthropicModel",
    "Completion",
    "GenerationSettings",
    "ImagePart",
    "Message",
    "Model",
    "ModelSettings",
    "OpenAIModel",
    "OutputSchema",
    "Part",
    "ScriptedModel",
    "ScriptedRequest",
    "StructuredOutput",
    "TextPart",
    "Usage",
    "clear_model_cache",
    "extract_json",
    "get_model",
    "load_model",
    "output_schema",
    "parse_reply",
    "strict_schema",
    "structured",
    "takes_images",
]


def __getattr__(name: str) -> Any:
    if name == "AnthropicModel":
        from ted.llm.anthropic import AnthropicModel

        return AnthropicModel
    if name == "OpenAIModel":
        from ted.llm.openai import OpenAIModel

        return OpenAIModel
    raise AttributeError(f"module 'ted.llm' has no attribute {name!r}")
