"""OpenAI chat completions (`openai.AsyncOpenAI`), and every server that speaks the same wire
format at another base URL: vLLM, Ollama, llama.cpp's server, OpenRouter.

Compatible servers differ in how they take a schema, so `structured_output` picks one:
`json_schema` (response_format with the schema; OpenAI, OpenRouter, vLLM, recent Ollama and
llama.cpp), `json_object` (JSON mode plus the schema in the system prompt), or `prompt` (the
schema in the system prompt only). The schema is strict (`ted.llm.structured.strict_schema`)
and sent with `strict: true`, so OpenAI enforces it exactly; the SDK's own helper
(`openai.pydantic_function_tool`) leaves pydantic's `oneOf` in place, which strict mode refuses,
so the schema is made strict in one place for both providers instead.

OpenAI caches a prompt's prefix of 1,024 tokens or more by itself (the system prompt comes
first, so the student's library is that prefix); the tokens it read from the cache are kept
apart in the usage, for their lower price.

Images go as `image_url` parts, an http(s) URL as it is and inline data as a `data:` URL.
A seed, temperature or top_p is sent only when set (reasoning models refuse the latter two).
Reasoning a server returns apart from the reply (`reasoning_content` from vLLM and DeepSeek,
`reasoning` from OpenRouter and Ollama) is kept.

(This module is `ted.llm.openai`; `import openai` below is absolute, so it is the SDK.)
"""

from typing import Any, ClassVar, Literal

import openai

from ted.errors import ModelError
from ted.llm.base import Completion, GenerationSettings, ImagePart, Message, OutputSchema, Usage
from ted.llm.provider import ModelSettings, ProviderModel, StructuredOutput, join_system, schema_instructions


class OpenAIModel(ProviderModel):
    provider = "openai"
    default_base_url = "https://api.openai.com/v1"
    wire_format = "OpenAI chat-completions"
    sdk = openai
    structured_modes: ClassVar[tuple[StructuredOutput, ...]] = ("json_schema", "json_object", "prompt")

    def __init__(
        self,
        model: str,
        settings: ModelSettings | None = None,
        *,
        name: str | None = None,
        key_env: str | None = None,
        base_url_env: str | None = None,
        max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens",
    ):
        """`max_tokens_param`: OpenAI's own reasoning models accept only `max_completion_tokens`;
        many compatible servers know only the older `max_tokens`."""
        super().__init__(model, settings, name=name, key_env=key_env, base_url_env=base_url_env)
        self.max_tokens_param = max_tokens_param

    def _make_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            # Local servers need no key, but the SDK refuses to start without one; any
            # placeholder works there (vLLM and Ollama ignore it).
            api_key=self.settings.api_key or "not-needed",
            base_url=self.base_url,
            timeout=self.settings.timeout,
            max_retries=self.settings.max_retries,
            http_client=openai.DefaultAsyncHttpxClient(),  # why: ProviderModel.__init__
        )

    async def _call(
        self,
        client: openai.AsyncOpenAI,
        messages: list[Message],
        system: str | None,
        output: OutputSchema | None,
        settings: GenerationSettings,
    ) -> Completion:
        params: dict[str, Any] = {self.max_tokens_param: settings.output_tokens}
        params |= {key: value for key in self.sampling if (value := getattr(settings, key)) is not None}
        if output is not None and self.structured_output == "json_schema":
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": output.name,
                    "schema": output.json_schema,
                    "strict": self.settings.strict_schemas,
                },
            }
        elif output is not None:
            system = join_system(system, schema_instructions(output))
            if self.structured_output == "json_object":
                params["response_format"] = {"type": "json_object"}
        wire = ([{"role": "system", "content": system}] if system else []) + [_message(m) for m in messages]
        response = await client.chat.completions.create(model=self.model, messages=wire, **params)
        choices = getattr(response, "choices", None)
        if not choices:
            # Some gateways answer 200 with an error object instead of a completion.
            shown = response.model_dump_json()[:300] if hasattr(response, "model_dump_json") else str(response)[:300]
            raise ModelError(
                f"{self.name}: {self.base_url} answered without any choice: {shown}. "
                f"Check the model name and that {self._where} points at a chat-completions API."
            )
        choice = choices[0]
        usage = getattr(response, "usage", None)
        reasoning = getattr(choice.message, "reasoning_content", None) or getattr(choice.message, "reasoning", None)
        return Completion(
            text=choice.message.content or choice.message.refusal or "",
            usage=_usage(usage),
            model=self.name,
            truncated=choice.finish_reason == "length",
            reasoning=reasoning if isinstance(reasoning, str) and reasoning else None,
        )


def _usage(usage: Any) -> Usage:
    # Not every compatible server reports usage; zeros then, rather than a failure. OpenAI caches
    # a prompt's prefix by itself and says how much of prompt_tokens it read from the cache.
    if usage is None:
        return Usage()
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) or 0
    return Usage(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens, cache_read_tokens=cached)


def _message(message: Message) -> dict[str, Any]:
    # Plain strings for text-only turns: every compatible server takes them, not all take part lists.
    if all(not isinstance(p, ImagePart) for p in message.content):
        return {"role": message.role, "content": message.text}
    return {"role": message.role, "content": [_part(p) for p in message.content]}


def _part(part: Any) -> dict[str, Any]:
    if not isinstance(part, ImagePart):
        return {"type": "text", "text": part.text}
    url = part.url if part.url is not None else f"data:{part.media_type};base64,{part.data}"
    return {"type": "image_url", "image_url": {"url": url}}
