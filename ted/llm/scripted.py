"""`ScriptedModel`: an in-process model for tests, shipped with the library (like pydantic-ai's
TestModel and FunctionModel) so users can test code built on ted the way we do.

    ScriptedModel(["first reply", '{"answer": 4}', ModelError("down")])   # answers in order
    ScriptedModel(lambda messages, system, output: "…")                   # answers by function
    ScriptedModel()                                                       # a minimal valid reply

It records every request, counts calls, reports usage with the same tokenizer the library
budgets use, and raises exceptions where the script says so — in the list, or by call number
with `errors={2: ModelError(...)}`. Like the provider adapters it refuses, before answering, to
take images under a name `ted.llm.capabilities` knows as text-only.

A function script is called with `(messages, system, output)`: a double that answers by the
step it is asked for reads `output.name` (the reply schema's name) and the schema itself (its
required labels, its enums of lesson ids), never the prompt's wording.
"""

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from ted.llm.base import Completion, GenerationSettings, Message, OutputSchema, Usage
from ted.llm.capabilities import check_messages
from ted.tokens import count_tokens

Answer = str | Completion
ReplyFunction = Callable[[list[Message], str | None, OutputSchema | None], Answer | Awaitable[Answer]]


class ScriptedRequest(BaseModel):
    messages: list[Message]
    system: str | None
    output: OutputSchema | None
    settings: GenerationSettings


class ScriptedModel:
    """A `Model` that answers from a script; see the module docstring."""

    def __init__(
        self,
        replies: Sequence[Answer | BaseException] | ReplyFunction | None = None,
        *,
        name: str = "scripted:model",
        errors: Mapping[int, BaseException] | None = None,
        delay: float = 0.0,
    ):
        """`errors` maps 1-based call numbers to exceptions raised instead of answering;
        `delay` (seconds) makes each call yield to the event loop, for concurrency tests."""
        self.name = name
        self.replies = replies
        self.errors = dict(errors or {})
        self.delay = delay
        self.requests: list[ScriptedRequest] = []

    @property
    def calls(self) -> int:
        return len(self.requests)

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        system: str | None = None,
        output: OutputSchema | None = None,
        settings: GenerationSettings | None = None,
    ) -> Completion:
        check_messages(self.name, messages)
        request = ScriptedRequest(
            messages=list(messages), system=system, output=output, settings=settings or GenerationSettings()
        )
        self.requests.append(request)
        number = len(self.requests)
        if self.delay:
            await asyncio.sleep(self.delay)
        if number in self.errors:
            raise self.errors[number]
        answer = await self._answer(number, request)
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, Completion):
            return answer
        prompt = "\n".join([system or "", *(m.text for m in request.messages)])
        usage = Usage(input_tokens=count_tokens(prompt), output_tokens=count_tokens(answer))
        return Completion(text=answer, usage=usage, model=self.name)

    async def _answer(self, number: int, request: ScriptedRequest) -> Answer | BaseException:
        if self.replies is None:
            if request.output is None:
                return "scripted reply"
            return json.dumps(example_for_schema(request.output.json_schema))
        if callable(self.replies):
            result = self.replies(request.messages, request.system, request.output)
            return await result if inspect.isawaitable(result) else result
        if number > len(self.replies):
            # Not a ModelError: code under test may handle those, and this is a bug in the test.
            raise RuntimeError(
                f"{self.name} ran out of replies: call {number}, but the script has {len(self.replies)}. "
                "Add replies, or pass a function."
            )
        return self.replies[number - 1]


def example_for_schema(schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """A small value that validates against a JSON schema: every property, the first choice of
    each union and enum, the fewest array items allowed. Patterns are not honoured."""
    root = root or schema
    if "$ref" in schema:
        target: Any = root
        for key in schema["$ref"].removeprefix("#/").split("/"):
            target = target[key]
        return example_for_schema(target, root)
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return example_for_schema(schema[key][0], root)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        return {name: example_for_schema(sub, root) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [example_for_schema(schema.get("items", {}), root) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        return "x" * max(1, schema.get("minLength", 1))
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    return {"boolean": False, "null": None}.get(kind)
