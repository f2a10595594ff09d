"""The one model protocol every provider adapter implements.

A model takes messages (text and images) and returns text plus token usage. Everything else
— structured replies, repair, the ledger — is built on that single method, so an adapter is
small and a test double is trivial (`ted.llm.scripted`).
"""

import base64
import mimetypes
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field, model_validator


class TextPart(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ImagePart(BaseModel):
    """An image by URL (passed to the provider as is) or inline as base64 data."""

    type: Literal["image"] = "image"
    url: str | None = None
    data: str | None = Field(None, description="base64-encoded bytes")
    media_type: str = "image/png"

    @model_validator(mode="after")
    def _one_source(self) -> "ImagePart":
        # Refused here, not in each adapter, so a bad part fails where it is built.
        if (self.url is None) == (self.data is None):
            raise ValueError("An ImagePart needs exactly one of `url` or `data` (base64); for a file use from_path.")
        return self

    @classmethod
    def from_path(cls, path: str | Path) -> "ImagePart":
        path = Path(path)
        media_type = mimetypes.guess_type(path.name)[0] or "image/png"
        return cls(data=base64.b64encode(path.read_bytes()).decode(), media_type=media_type)


Part = TextPart | ImagePart


class Message(BaseModel):
    role: Literal["user", "assistant"]
    content: list[Part]

    @classmethod
    def user(cls, *parts: str | Part) -> "Message":
        return cls(role="user", content=[TextPart(text=p) if isinstance(p, str) else p for p in parts])

    @classmethod
    def assistant(cls, text: str) -> "Message":
        return cls(role="assistant", content=[TextPart(text=text)])

    @property
    def text(self) -> str:
        return "\n".join(p.text for p in self.content if isinstance(p, TextPart))


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0


class Completion(BaseModel):
    text: str
    usage: Usage = Field(default_factory=Usage)
    model: str = Field(description="The `provider:model` name that answered.")
    truncated: bool = Field(False, description="The reply stopped at max_tokens, so it may be cut short.")


class OutputSchema(BaseModel):
    """A JSON schema the reply must follow; adapters use the provider's structured output for it."""

    name: str
    json_schema: dict[str, Any]


@runtime_checkable
class Model(Protocol):
    name: str
    """`provider:model`, e.g. `anthropic:claude-sonnet-4-5` or `openai:gpt-4.1-mini`."""

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        system: str | None = None,
        max_tokens: int = 4096,
        output: OutputSchema | None = None,
    ) -> Completion:
        """One call. Raises ted.errors.ModelError when the provider fails after its retries."""
        ...
