"""Claude through the Anthropic Messages API (`anthropic.AsyncAnthropic`).

Structured replies use tool use: one tool whose input schema is the reply's strict schema
(passed through the SDK's own `transform_schema`), marked `strict` so the API enforces it, and a
tool_choice that forces it, so the reply arrives as the tool's (already parsed) input. A reply
that ignores the tool falls back to its text, which `ted.llm.structured` then parses or repairs.

The system prompt is marked for Anthropic's prompt cache (`cache_control`): it is the stable
prefix of the calls ted-mcp repeats, the student's carrying the whole library, sent again for
every rollout of a batch. A prefix shorter than the model's minimum (1,024 tokens for most) is
simply not cached; a longer one is written once (at 1.25 times the input price) and read after
that (at a tenth). The usage figures say which tokens were read and written.

Images go as the documented `image` blocks: a `url` source for an http(s) URL, a `base64`
source for inline data. Thinking blocks, when a reply has them, are kept as its reasoning.
The API version this SDK speaks (2026-10-21) takes no sampling settings — temperature, top_p or
seed are refused even at their defaults — so of the generation settings only max_tokens is sent
(and recorded in the ledger).

(This module is `ted.llm.anthropic`; `import anthropic` below is absolute, so it is the SDK.)
"""

import json
from typing import Any, ClassVar

import anthropic

from ted.llm.base import Completion, GenerationSettings, ImagePart, Message, OutputSchema, Usage
from ted.llm.provider import ProviderModel, StructuredOutput, join_system, schema_instructions


class AnthropicModel(ProviderModel):
    provider = "anthropic"
    default_base_url = "https://api.anthropic.com"
    wire_format = "Anthropic Messages"
    sdk = anthropic
    structured_modes: ClassVar[tuple[StructuredOutput, ...]] = ("tool", "prompt")
    sampling: ClassVar[tuple[str, ...]] = ()

    def _make_client(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            api_key=self.settings.api_key,
            base_url=self.base_url,
            timeout=self.settings.timeout,
            max_retries=self.settings.max_retries,
            http_client=anthropic.DefaultAsyncHttpxClient(),  # why: ProviderModel.__init__
        )

    async def _call(
        self,
        client: anthropic.AsyncAnthropic,
        messages: list[Message],
        system: str | None,
        output: OutputSchema | None,
        settings: GenerationSettings,
    ) -> Completion:
        params: dict[str, Any] = {}
        if output is not None and self.structured_output == "tool":
            tool = {
                "name": output.name,
                "description": f"Give the reply as the input of this tool: one {output.name} object.",
                "input_schema": anthropic.transform_schema(output.json_schema),
            }
            if self.settings.strict_schemas:
                tool["strict"] = True
            params["tools"] = [tool]
            params["tool_choice"] = {"type": "tool", "name": output.name}
        elif output is not None:
            system = join_system(system, schema_instructions(output))
        if system:
            params["system"] = [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]
        response = await client.messages.create(
            model=self.model, max_tokens=settings.output_tokens, messages=[_message(m) for m in messages], **params
        )
        thinking = [block.thinking for block in response.content if block.type == "thinking"]
        return Completion(
            text=_reply_text(response, output),
            usage=_usage(response.usage),
            model=self.name,
            truncated=response.stop_reason == "max_tokens",
            reasoning="\n\n".join(thinking) or None,
        )


def _message(message: Message) -> dict[str, Any]:
    return {"role": message.role, "content": [_part(p) for p in message.content]}


def _part(part: Any) -> dict[str, Any]:
    if not isinstance(part, ImagePart):
        return {"type": "text", "text": part.text}
    if part.url is not None:
        return {"type": "image", "source": {"type": "url", "url": part.url}}
    return {"type": "image", "source": {"type": "base64", "media_type": part.media_type, "data": part.data}}


def _reply_text(response: Any, output: OutputSchema | None) -> str:
    if output is not None:
        for block in response.content:
            if block.type == "tool_use" and block.name == output.name:
                return json.dumps(block.input, ensure_ascii=False)
    return "".join(block.text for block in response.content if block.type == "text")


def _usage(usage: Any) -> Usage:
    # Anthropic reports cached prompt tokens apart from input_tokens; the ledger counts every
    # token the prompt consumed, so they are added back, and kept apart for their own prices.
    written = getattr(usage, "cache_creation_input_tokens", None) or 0
    read = getattr(usage, "cache_read_input_tokens", None) or 0
    return Usage(
        input_tokens=usage.input_tokens + written + read,
        output_tokens=usage.output_tokens,
        cache_read_tokens=read,
        cache_write_tokens=written,
    )
