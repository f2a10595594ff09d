"""The one model protocol every provider adapter implements.

A model takes messages (text and images) and returns text plus token usage. Everything else
— structured replies, repair, the ledger — is built on that single method, so an adapter is
small and a test double is trivial (`ted.llm.scripted`).
"""

from collections.abc import Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Thinking models spend thousands of tokens before they answer; 4,096 cut them short.
DEFAULT_MAX_TOKENS = 16_384
SAMPLING = ("temperature", "top_p", "seed")


class TextPart(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ImagePart(BaseModel):
    """An image by URL (passed to the provider as is) or inline as base64 data.

    `ted.images.read_image` makes these from what a user names (a path, a data URL, a URL).
    """

    type: Literal["image"] = "image"
    url: str | None = None
    data: str | None = Field(None, description="base64-encoded bytes")
    media_type: str = "image/png"

    @model_validator(mode="after")
    def _one_source(self) -> "ImagePart":
        # Refused here, not in each adapter, so a bad part fails where it is built.
        if (self.url is None) == (self.data is None):
            raise ValueError("An ImagePart needs exactly one of `url` or `data` (base64); ted.images reads files.")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            # A data: URL is inline data: sent as a URL, Anthropic would be asked to fetch it.
            raise ValueError("An ImagePart's `url` is an http(s) URL; ted.images.read_image decodes data: URLs.")
        return self


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

    @property
    def images(self) -> list[ImagePart]:
        return [p for p in self.content if isinstance(p, ImagePart)]


class GenerationSettings(BaseModel):
    """How a model samples one reply. A field left None is not sent (the provider's default),
    so settings from several places layer: `given.over(library).over(environment)`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: int | None = Field(
        None, ge=16, le=1_000_000, description=f"Output tokens at most (default {DEFAULT_MAX_TOKENS:,})."
    )
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, description="Sent where the provider takes one (OpenAI and compatible servers).")

    def over(self, base: "GenerationSettings | None") -> "GenerationSettings":
        """These settings, with `base`'s where these leave a field unset."""
        if base is None:
            return self
        return base.model_copy(update=self.model_dump(exclude_none=True))

    @property
    def output_tokens(self) -> int:
        return self.max_tokens or DEFAULT_MAX_TOKENS

    def keep(self, sampling: Sequence[str]) -> "GenerationSettings":
        """These settings without the sampling ones (of `SAMPLING`) a provider does not take."""
        return self.model_copy(update={name: None for name in SAMPLING if name not in sampling})


class Usage(BaseModel):
    input_tokens: int = Field(0, description="Every prompt token, those served from or written to a cache included.")
    output_tokens: int = 0
    cache_read_tokens: int = Field(0, description="Of input_tokens, those read from the provider's prompt cache.")
    cache_write_tokens: int = Field(0, description="Of input_tokens, those written to the provider's prompt cache.")


class Completion(BaseModel):
    text: str
    usage: Usage = Field(default_factory=Usage)
    model: str = Field(description="The `provider:model` name that answered.")
    truncated: bool = Field(False, description="The reply stopped at max_tokens, so it may be cut short.")
    reasoning: str | None = Field(
        None, description="Reasoning the provider returned apart from the reply (thinking blocks, reasoning_content)."
    )

    @property
    def transcript(self) -> str:
        """The reply with the reasoning that led to it, as a teacher should read a trajectory."""
        if not self.reasoning:
            return self.text
        return f"[reasoning]\n{self.reasoning.strip()}\n[/reasoning]\n{self.text}"


class OutputSchema(BaseModel):
    """A JSON schema the reply must follow; adapters use the provider's structured output for it.

    `json_schema` is strict (`ted.llm.structured.strict_schema`): every property required, no
    defaults, no other properties, unions as `anyOf`, so the providers can enforce it exactly.
    """

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
        output: OutputSchema | None = None,
        settings: GenerationSettings | None = None,
    ) -> Completion:
        """One call. Raises ted.errors.ModelError when the provider fails after its retries."""
        ...
