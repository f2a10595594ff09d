"""Every reply schema sent to a provider is one the parser accepts in full: instances generated
from the schema as sent (hypothesis-jsonschema, which knows nothing of our types) — to OpenAI
as is, to Anthropic through its SDK's own `transform_schema` — all parse, and what the
teacher's steps then do with them never fails on a reply the schema allowed.

Per-request schemas are generated too (labels, wrong attempts, lesson ids drawn by hypothesis).
The strict form is checked against what the providers' SDKs make of the same types."""

import json

import anthropic
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from pydantic import BaseModel

from ted.llm import output_schema, strict_schema
from ted.llm.structured import parse_reply
from ted.store.records import Experience, LibrarySettings, LibraryState
from ted.teacher.compression import Simulation, fit_to_budget, validate_plan
from ted.teacher.critique import validate_critique
from ted.teacher.replies import (
    CompressionPlan,
    CritiqueReply,
    Solution,
    compression_reply,
    critique_reply_type,
    summary_reply,
)

LABELS = st.lists(st.integers(1, 500).map(lambda n: f"A{n}"), min_size=1, max_size=6, unique=True)
IDS = st.lists(st.integers(1, 60).map(lambda n: f"E{n}"), max_size=8, unique=True)
EXAMPLES = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


def sent(reply_type: type[BaseModel]) -> dict[str, dict]:
    """The schema as each provider receives it."""
    schema = output_schema(reply_type).json_schema
    return {"openai": schema, "anthropic": anthropic.transform_schema(schema)}


def instances(reply_type: type[BaseModel]):
    """JSON values drawn from the schema as either provider receives it."""
    return st.sampled_from(list(sent(reply_type).values())).flatmap(from_schema)


def state_with(ids: list[str]) -> LibraryState:
    return LibraryState(
        name="p",
        settings=LibrarySettings(max_items=3),
        version=1,
        next_experience=61,
        teacher_model=None,
        student_model=None,
        experiences=[Experience(id=i, text=f"Check step {i} twice.", tokens=5, created_version=1) for i in ids],
    )


@EXAMPLES
@given(st.data())
def test_every_instance_of_the_solution_schema_parses(data):
    value = data.draw(instances(Solution))
    solution = parse_reply(json.dumps(value), Solution)
    assert solution.render().endswith(f"Answer: {solution.answer.strip()}")


@EXAMPLES
@given(LABELS.map(lambda labels: [*labels, "R"]), st.data())
def test_every_instance_of_a_summary_schema_parses_with_a_chain_per_label(labels, data):
    reply_type = summary_reply(labels)
    reply = parse_reply(json.dumps(data.draw(instances(reply_type))), reply_type)
    chains = dict(reply.chains)
    assert list(chains) == labels and all(chain.render() for chain in chains.values())


@EXAMPLES
@given(LABELS, IDS, st.data())
def test_every_instance_of_a_critique_schema_parses_and_validates_without_error(wrong, ids, data):
    reply_type = critique_reply_type(wrong, ids)
    parsed = parse_reply(json.dumps(data.draw(instances(reply_type))), reply_type)
    reply = CritiqueReply.model_validate(parsed.model_dump())  # as it is stored and applied
    assert sorted(reply.diagnoses) == sorted(wrong)
    active = {id_: f"Check step {id_} twice." for id_ in ids}
    operations, rejected = validate_critique(reply, active, {}, claimed={ids[0]: "c1"} if ids else {})
    assert len(operations) + len(rejected) == len(reply.operations)  # each applied or dropped, with a reason
    assert all(r.reason for r in rejected)


@EXAMPLES
@given(IDS.filter(bool), st.data())
def test_every_instance_of_a_compression_schema_parses_and_fits_the_budget(ids, data):
    reply_type = compression_reply(ids)
    plan = parse_reply(json.dumps(data.draw(instances(reply_type))), reply_type)
    state = state_with(ids)
    operations, dropped = validate_plan(plan, state)
    final, _ = fit_to_budget(state, operations)
    simulation = Simulation(state)
    for op in final:
        simulation.apply(op)
    assert not simulation.over_budget and all(d.reason for d in dropped)


REPLY_TYPES = {
    "Solution": Solution,
    "Summary": summary_reply(["A1", "A2", "R"]),
    "CritiqueReply": critique_reply_type(["A1"], ["E1", "E2"]),
    "CritiqueReply without lessons": critique_reply_type([], []),
    "CompressionPlan": compression_reply(["E1", "E2"]),
}


@pytest.mark.parametrize("name", list(REPLY_TYPES))
def test_the_sent_schema_is_what_openais_own_helper_makes_with_oneof_as_anyof(name):
    """OpenAI's helper (`pydantic_function_tool`) makes the same strict schema, except that it
    leaves pydantic's `oneOf` (which strict mode refuses) in place."""
    reply_type = REPLY_TYPES[name]
    theirs = json.loads(
        json.dumps(openai.pydantic_function_tool(reply_type)["function"]["parameters"]).replace('"oneOf"', '"anyOf"')
    )
    _drop_discriminators(theirs)
    assert strict_schema(reply_type) == theirs


@pytest.mark.parametrize("name", list(REPLY_TYPES))
def test_anthropics_own_helper_loses_no_constraint(name):
    """`anthropic.transform_schema` moves what Anthropic cannot enforce into descriptions; on our
    schemas it only drops the `type` beside an `enum` or `const` (which the value already fixes)."""
    ours = strict_schema(REPLY_TYPES[name])
    assert anthropic.transform_schema(ours) == _without_redundant_types(ours)


def _drop_discriminators(node) -> None:
    if isinstance(node, dict):
        node.pop("discriminator", None)
        for value in node.values():
            _drop_discriminators(value)
    elif isinstance(node, list):
        for value in node:
            _drop_discriminators(value)


def _without_redundant_types(node):
    if isinstance(node, list):
        return [_without_redundant_types(value) for value in node]
    if not isinstance(node, dict):
        return node
    node = {key: _without_redundant_types(value) for key, value in node.items()}
    if "enum" in node or "const" in node:
        node.pop("type", None)
    return node


def test_a_reply_type_that_is_stored_but_not_sent_is_refused_as_a_schema():
    """CritiqueReply's free-keyed `diagnoses` is how a critique is stored; what is sent names its keys."""
    with pytest.raises(TypeError, match="free keys"):
        strict_schema(CritiqueReply)
    assert strict_schema(CompressionPlan)  # the static plan is strict as it is
