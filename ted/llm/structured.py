"""Replies validated against pydantic models, with exactly one repair call.

    solution, completions = await structured(model, messages, Solution, system=...)

The schema goes to the provider as structured output (tool use, response_format, or the
prompt — the adapter's choice), in the strict form the providers enforce (`strict_schema`):
every property required, no defaults, no other properties, unions as `anyOf`, and no limits
(lengths, patterns, counts) a provider would drop. A reply type must be written so that every
instance of that schema validates: limits on what a reply may say are checked after parsing,
per item, where one bad item is reported instead of failing the whole reply.

The reply is parsed leniently — a ```json fence or prose around one JSON object is fine — and
validated with pydantic. If that fails, the model is shown its reply and the validation errors
and asked once more; a second failure raises `InvalidReply`. There are no other retries here:
transport retries are the SDK's.
"""

import copy
import functools
import json
import re
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ted.errors import InvalidReply
from ted.llm.base import Completion, GenerationSettings, Message, Model, OutputSchema

T = TypeVar("T", bound=BaseModel)

_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n(.*?)```", re.DOTALL)
_MAX_ERRORS_SHOWN = 8
# What the strict subset of JSON Schema keeps (OpenAI strict mode, Anthropic strict tools).
_STRICT_KEYWORDS = frozenset(
    {"type", "properties", "required", "additionalProperties", "items", "anyOf", "enum", "const", "$ref", "$defs"}
    | {"title", "description"}
)


class UnusableReply(ValueError):
    """Why a reply could not be turned into the reply type; the text is shown to the model."""


@functools.lru_cache(maxsize=256)
def strict_schema(reply_type: type[BaseModel]) -> dict[str, Any]:
    """The reply type's JSON schema in the strict subset both providers enforce.

    Pydantic writes a discriminated union as `oneOf` with a `discriminator`, which OpenAI's
    strict mode refuses; it becomes `anyOf` (each variant's `op` const still tells them apart).
    Anything else outside the subset is a bug in the reply type, refused here (TypeError).
    """
    schema = reply_type.model_json_schema()
    _make_strict(schema, schema, reply_type.__name__)
    return schema


def _make_strict(node: Any, root: dict[str, Any], where: str) -> None:
    if isinstance(node, list):
        for item in node:
            _make_strict(item, root, where)
        return
    if not isinstance(node, dict):
        return
    if "$ref" in node and len(node) > 1:
        # A reference with siblings (a described field) is written out: OpenAI refuses the pair.
        target = root["$defs"][node.pop("$ref").removeprefix("#/$defs/")]
        node.update({**copy.deepcopy(target), **node})
    if "oneOf" in node:
        node["anyOf"] = node.pop("oneOf")
        node.pop("discriminator", None)
    if unknown := set(node) - _STRICT_KEYWORDS:
        raise TypeError(f"{where}: {sorted(unknown)} are outside the strict schema subset; check them after parsing.")
    if node.get("type") == "object":
        if isinstance(node.get("additionalProperties"), dict):
            raise TypeError(f"{where}: a mapping with free keys cannot be strict; name its keys (create_model).")
        properties = node.get("properties", {})
        if set(node.get("required", [])) != set(properties):
            raise TypeError(f"{where}: every property must be required (no defaults): {sorted(properties)}.")
        node["required"] = list(properties)
        node["additionalProperties"] = False
    for key in ("properties", "$defs"):
        for sub in node.get(key, {}).values():
            _make_strict(sub, root, where)
    for key in ("items", "anyOf"):
        if key in node:
            _make_strict(node[key], root, where)


def output_schema(reply_type: type[BaseModel]) -> OutputSchema:
    # Tool and json_schema names allow only [A-Za-z0-9_-], up to 64 characters.
    name = re.sub(r"[^A-Za-z0-9_-]", "_", reply_type.__name__)[:64] or "reply"
    return OutputSchema(name=name, json_schema=strict_schema(reply_type))


def extract_json(text: str) -> Any:
    """The one JSON value in `text`: the whole text, a fenced block, or the first object in prose."""
    stripped = text.strip()
    if not stripped:
        raise UnusableReply("The reply was empty.")
    try:
        return json.loads(stripped)
    except ValueError as e:
        first_error = e
    for block in _FENCE.findall(stripped):
        try:
            return json.loads(block)
        except ValueError:
            continue
    decoder = json.JSONDecoder()
    for start in (i for i, ch in enumerate(stripped) if ch == "{"):
        try:
            value, _ = decoder.raw_decode(stripped, start)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    raise UnusableReply(f"The reply is not JSON and contains no JSON object ({first_error}).")


def parse_reply(text: str, reply_type: type[T]) -> T:
    value = extract_json(text)
    try:
        return reply_type.model_validate(value)
    except ValidationError as e:
        raise UnusableReply(_describe(e)) from e


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors()[:_MAX_ERRORS_SHOWN]:
        where = ".".join(str(p) for p in item["loc"]) or "(the whole object)"
        lines.append(f"- {where}: {item['msg']}")
    more = error.error_count() - _MAX_ERRORS_SHOWN
    if more > 0:
        lines.append(f"- … and {more} more")
    return "The JSON does not match the schema:\n" + "\n".join(lines)


def _problem(completion: Completion, error: UnusableReply) -> str:
    if completion.truncated:
        return f"The reply was cut off at its output-token limit (max_tokens). {error}"
    return str(error)


async def structured(
    model: Model,
    messages: Sequence[Message],
    reply_type: type[T],
    *,
    system: str | None = None,
    settings: GenerationSettings | None = None,
) -> tuple[T, list[Completion]]:
    """The validated reply and every completion made for it (one, or two after a repair).

    Raises ModelError if a call fails, and InvalidReply (with `.completions` attached, so
    their usage can still be counted) when the repaired reply is invalid too.
    """
    output = output_schema(reply_type)
    first = await model.complete(messages, system=system, output=output, settings=settings)
    completions = [first]
    try:
        return parse_reply(first.text, reply_type), completions
    except UnusableReply as e:
        problem = _problem(first, e)
    repair = [
        *messages,
        # Anthropic refuses empty text blocks, so an empty reply is shown as a placeholder.
        Message.assistant(first.text or "(empty reply)"),
        Message.user(
            f"Your reply could not be used. {problem}\n\nReply again with one JSON object that follows the "
            f"{output.name} schema exactly. Keep the content you meant; fix only the form"
            + (", and be more concise so it fits." if first.truncated else ".")
        ),
    ]
    second = await model.complete(repair, system=system, output=output, settings=settings)
    completions.append(second)
    try:
        return parse_reply(second.text, reply_type), completions
    except UnusableReply as e:
        fix = (
            "raise this role's max_tokens — the reply was cut off"
            if second.truncated
            else "use a stronger model for this role, or set structured_output to a mode this provider supports"
        )
        error = InvalidReply(
            f"{model.name} did not give a valid {output.name} reply, even after one repair attempt: "
            f"{_problem(second, e)}\nTo fix: {fix}."
        )
        error.completions = completions  # type: ignore[attr-defined]
        raise error from e
