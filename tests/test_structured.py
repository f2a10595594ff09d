"""Structured replies (lenient parsing, one repair, InvalidReply) and the ScriptedModel double,
all in process: no server, no network."""

import asyncio
import json
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field, create_model

from ted.errors import InvalidReply, ModelError
from ted.llm import (
    Completion,
    GenerationSettings,
    Message,
    Model,
    ScriptedModel,
    Usage,
    extract_json,
    output_schema,
    strict_schema,
    structured,
)
from ted.llm.scripted import example_for_schema
from ted.llm.structured import UnusableReply
from ted.tokens import count_tokens

pytestmark = pytest.mark.anyio


class Verdict(BaseModel):
    correct: bool
    score: int


class Add(BaseModel):
    op: Literal["add"]
    text: str


class Drop(BaseModel):
    op: Literal["delete"]
    id: str


class Plan(BaseModel):
    """Nested models, a discriminated union, a nullable field: the shapes the teacher replies in."""

    summary: str
    operations: list[Annotated[Add | Drop, Field(discriminator="op")]]
    confidence: float | None


# -- lenient parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"correct": true, "score": 7}',
        '  \n{"correct": true, "score": 7}\n',
        'Here you go:\n```json\n{"correct": true, "score": 7}\n```\nHope that helps.',
        '```\n{"correct": true, "score": 7}\n```',
        'My verdict is {"correct": true, "score": 7} as requested.',
        'Thinking {not json} then {"correct": true, "score": 7}',
    ],
)
def test_extract_json_finds_the_object(text):
    assert extract_json(text) == {"correct": True, "score": 7}


def test_extract_json_keeps_braces_inside_strings():
    assert extract_json('Result: {"text": "use {x} and }", "n": 1} end') == {"text": "use {x} and }", "n": 1}


@pytest.mark.parametrize("text", ["", "   ", "no json at all", "{broken", "```json\n{nope}\n```"])
def test_extract_json_refuses_text_without_an_object(text):
    with pytest.raises(UnusableReply):
        extract_json(text)


def test_output_schema_names_are_safe_for_tool_and_schema_names():
    assert output_schema(Plan).name == "Plan"
    odd = type("Reply[int] v2", (Plan,), {})
    assert output_schema(odd).name == "Reply_int__v2"


def test_the_schema_sent_is_strict():
    """Pydantic's discriminated union (`oneOf` + `discriminator`, which OpenAI's strict mode
    refuses) is sent as `anyOf`; every object closed and every property required."""
    schema = strict_schema(Plan)
    text = json.dumps(schema)
    assert "oneOf" not in text and "discriminator" not in text and '"default"' not in text
    assert schema["properties"]["operations"]["items"]["anyOf"] == [
        {"$ref": "#/$defs/Add"},
        {"$ref": "#/$defs/Drop"},
    ]
    for node in (schema, *schema["$defs"].values()):
        assert node["additionalProperties"] is False and node["required"] == list(node["properties"])


@pytest.mark.parametrize(
    ("field", "why"),
    [
        (Annotated[str, Field(min_length=1)], "minLength"),
        (Annotated[str, Field(pattern=r"^E\d+$")], "pattern"),
        (Annotated[list[str], Field(max_length=3)], "maxItems"),
    ],
)
def test_a_reply_type_with_a_limit_the_providers_drop_is_refused(field, why):
    with pytest.raises(TypeError, match=why):
        strict_schema(create_model("Limited", value=(field, ...)))


def test_a_reply_type_with_a_default_is_refused():
    with pytest.raises(TypeError, match="every property must be required"):
        strict_schema(create_model("Defaulted", value=(str, "x")))


# -- structured() -------------------------------------------------------------------------------


async def test_a_valid_reply_takes_one_call():
    model = ScriptedModel(['{"correct": false, "score": 2}'])
    verdict, completions = await structured(model, [Message.user("grade")], Verdict, system="You grade.")
    assert verdict == Verdict(correct=False, score=2) and len(completions) == 1
    [request] = model.requests
    assert request.output == output_schema(Verdict) and request.system == "You grade."


async def test_an_invalid_reply_gets_one_repair_that_shows_reply_and_errors():
    model = ScriptedModel(['{"correct": "maybe", "score": "eleven"}', '{"correct": true, "score": 10}'])
    verdict, completions = await structured(
        model, [Message.user("grade")], Verdict, settings=GenerationSettings(max_tokens=300)
    )
    assert verdict.score == 10 and len(completions) == 2 and model.calls == 2
    repair = model.requests[1]
    assert [m.role for m in repair.messages] == ["user", "assistant", "user"]
    assert repair.messages[1].text == '{"correct": "maybe", "score": "eleven"}'
    feedback = repair.messages[2].text
    assert "- correct:" in feedback and "- score: Input should be a valid integer" in feedback
    assert repair.output == output_schema(Verdict) and repair.settings.max_tokens == 300


async def test_a_second_invalid_reply_raises_invalid_reply_after_exactly_two_calls():
    model = ScriptedModel(["I think it is right.", '{"correct": true}', '{"correct": true, "score": 1}'])
    with pytest.raises(InvalidReply) as caught:
        await structured(model, [Message.user("grade")], Verdict)
    assert model.calls == 2
    message = str(caught.value)
    assert "scripted:model did not give a valid Verdict reply, even after one repair attempt" in message
    assert "- score: Field required" in message and "To fix:" in message
    assert len(caught.value.completions) == 2  # so their usage can still be counted
    assert isinstance(caught.value, ModelError)  # callers that handle model failures catch it too


async def test_an_empty_reply_is_repaired_with_a_placeholder_turn():
    model = ScriptedModel(["", '{"correct": true, "score": 3}'])
    verdict, _ = await structured(model, [Message.user("grade")], Verdict)
    assert verdict.score == 3 and model.requests[1].messages[1].text == "(empty reply)"


async def test_a_truncated_reply_says_to_raise_max_tokens():
    cut = Completion(text='{"summary": "long', model="scripted:model", truncated=True)
    model = ScriptedModel([cut, cut])
    with pytest.raises(InvalidReply, match=r"raise this role's max_tokens"):
        await structured(model, [Message.user("plan")], Plan, settings=GenerationSettings(max_tokens=64))
    assert "cut off at its output-token limit (max_tokens)" in model.requests[1].messages[2].text


async def test_a_failed_call_is_not_retried_here():
    model = ScriptedModel([ModelError("provider down"), '{"correct": true, "score": 1}'])
    with pytest.raises(ModelError, match="provider down"):
        await structured(model, [Message.user("grade")], Verdict)
    assert model.calls == 1  # transport retries belong to the SDK


async def test_a_failed_repair_call_propagates():
    model = ScriptedModel(["nonsense"], errors={2: ModelError("timeout")})
    with pytest.raises(ModelError, match="timeout"):
        await structured(model, [Message.user("grade")], Verdict)
    assert model.calls == 2


async def test_nested_unions_validate():
    reply = (
        '```json\n{"summary": "s", "operations": [{"op": "delete", "id": "E2"}, {"op": "add", "text": "t"}], '
        '"confidence": null}\n```'
    )
    plan, _ = await structured(ScriptedModel([reply]), [Message.user("plan")], Plan)
    assert [type(op) for op in plan.operations] == [Drop, Add]


# -- ScriptedModel ------------------------------------------------------------------------------


def test_scripted_model_is_a_model():
    assert isinstance(ScriptedModel(), Model)


async def test_scripted_model_reports_usage_with_the_library_tokenizer():
    model = ScriptedModel(["The answer is 4."])
    completion = await model.complete([Message.user("What is 2+2?")], system="Be exact.")
    assert completion.usage == Usage(
        input_tokens=count_tokens("Be exact.\nWhat is 2+2?"), output_tokens=count_tokens("The answer is 4.")
    )
    assert completion.model == "scripted:model"


async def test_scripted_model_answers_by_function_sync_or_async():
    def echo(messages, system, output):
        return messages[-1].text.upper()

    async def later(messages, system, output):
        await asyncio.sleep(0)
        return Completion(text="done", usage=Usage(input_tokens=1, output_tokens=2), model="scripted:f")

    assert (await ScriptedModel(echo).complete([Message.user("hi")])).text == "HI"
    assert (await ScriptedModel(later).complete([Message.user("hi")])).usage.output_tokens == 2


async def test_scripted_model_raises_where_told_and_when_out_of_replies():
    model = ScriptedModel(["one", "two"], errors={1: ModelError("first call fails")})
    with pytest.raises(ModelError, match="first call fails"):
        await model.complete([Message.user("a")])
    assert (await model.complete([Message.user("b")])).text == "two"
    with pytest.raises(RuntimeError, match="ran out of replies: call 3, but the script has 2"):
        await model.complete([Message.user("c")])
    assert model.calls == 3 and [r.messages[0].text for r in model.requests] == ["a", "b", "c"]


async def test_scripted_model_without_a_script_gives_a_minimal_valid_reply():
    model = ScriptedModel(name="scripted:default")
    assert (await model.complete([Message.user("hi")])).text == "scripted reply"
    plan, _ = await structured(model, [Message.user("plan")], Plan)
    verdict, _ = await structured(model, [Message.user("grade")], Verdict)
    assert (plan.summary, plan.operations, plan.confidence, verdict.score) == ("x", [], 0, 0)
    assert model.calls == 3


def test_example_for_schema_follows_refs_unions_and_limits():
    class Item(BaseModel):
        kind: Literal["a", "b"]
        tags: list[str] = Field(min_length=2)

    class Outer(BaseModel):
        item: Item
        either: Add | Drop
        name: str = Field(min_length=3)
        count: int = Field(ge=5)

    value = example_for_schema(Outer.model_json_schema())
    assert Outer.model_validate(value).item.tags == ["x", "x"]
