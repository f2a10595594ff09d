"""What a client loads before its first call: every tool with a title, a dedented description and a
described argument, the whole list under 30 kB, replies valid against their compact schemas, the
libraries among the resources, and instructions that fit the server's teacher. Through the SDK's
in-memory client in both protocol eras."""

import json

import jsonschema
import pytest
from conftest import dump_database
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client

from ted_server import build_server

pytestmark = pytest.mark.anyio

MAX_TOOLS_LIST_BYTES = 30_000


async def tool_list(client) -> list[dict]:
    return [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in (await client.list_tools()).tools]


def resolve(schema: dict, root: dict) -> dict:
    ref = schema.get("$ref")
    return resolve(root["$defs"][ref.rsplit("/", 1)[1]], root) if ref else schema


async def test_every_tool_has_a_title_a_dedented_description_and_described_arguments(client):
    for tool in await tool_list(client):
        assert tool.get("title"), tool["name"]
        lines = tool["description"].splitlines()
        assert lines and not any(line.startswith((" ", "\t")) for line in lines), tool["description"]
        for name, prop in tool["inputSchema"]["properties"].items():
            assert resolve(prop, tool["inputSchema"]).get("description"), f"{tool['name']}({name}) has no description"


async def test_the_prompt_describes_its_arguments(client):
    [prompt] = (await client.list_prompts()).prompts
    assert prompt.title and prompt.description
    assert {a.name for a in prompt.arguments} == {"task", "library"}
    assert all(a.description for a in prompt.arguments)


async def test_get_experiences_says_what_task_does(client):
    tools = {t["name"]: t for t in await tool_list(client)}
    task = tools["get_experiences"]["inputSchema"]["properties"]["task"]["description"]
    assert "chooses them per task" in task and "task_id" in task


async def test_tools_list_is_under_30_kb_on_the_wire(client):
    # As a server sends it: the JSON-RPC result, compact.
    size = len(json.dumps({"tools": await tool_list(client)}, separators=(",", ":")))
    assert size < MAX_TOOLS_LIST_BYTES, size


async def test_job_tools_share_one_summary_and_only_get_job_has_the_whole_record(client):
    tools = {t["name"]: t for t in await tool_list(client)}
    summary = tools["cancel_job"]["outputSchema"]
    assert tools["list_jobs"]["outputSchema"]["properties"]["jobs"]["items"] == {"$ref": "#/$defs/JobSummary"}
    assert tools["list_jobs"]["outputSchema"]["$defs"]["JobSummary"] == {
        k: summary[k] for k in ("properties", "required", "type") if k in summary
    }
    assert "params" not in summary["properties"] and "params" in tools["get_job"]["outputSchema"]["properties"]


async def test_replies_validate_against_the_compact_schemas(client):
    tools = {t["name"]: t for t in await tool_list(client)}
    calls = [
        ("add_experience", {"library": "s", "text": "Check the units."}),
        ("edit_experience", {"library": "s", "id": "E1", "text": "Check the units twice."}),
        ("record_attempt", {"library": "s", "task": "1+1?", "trajectory": "[E1] 2", "answer": 2, "ground_truth": 2}),
        ("get_experiences", {"library": "s"}),
        ("list_libraries", {}),
        ("rollback_library", {"library": "s", "version": 1}),
        ("remove_experience", {"library": "s", "id": "E1"}),
        ("list_jobs", {}),
        ("delete_library", {"library": "s", "confirm": "s"}),
    ]
    for name, arguments in calls:
        result = await client.call_tool(name, arguments)
        assert not result.is_error, (name, result.content[0].text)
        jsonschema.validate(result.structured_content, tools[name]["outputSchema"])


@pytest.mark.parametrize(
    ("answer", "ground_truth", "stored", "correct"),
    [(42, 42, "42", True), (0.5, "1/2", "0.5", True), (7, 8, "7", False), ("12", 12.0, "12", True)],
)
async def test_numeric_answers_and_ground_truths_are_taken_as_text(
    client, db_path, answer, ground_truth, stored, correct
):
    result = await client.call_tool(
        "record_attempt", {"task": "A sum.", "trajectory": "work", "answer": answer, "ground_truth": ground_truth}
    )
    assert not result.is_error, result.content[0].text
    assert result.structured_content["correct"] is correct
    rows = dump_database(db_path)["attempts"]
    assert [(r[6], r[7]) for r in rows] == [(stored, str(ground_truth))]  # answer, ground_truth columns


@pytest.mark.parametrize("bad", [True, [1], {"v": 1}, "x" * 10_001])
async def test_an_answer_that_is_not_text_or_a_number_is_refused(client, db_path, bad):
    before = dump_database(db_path)
    result = await client.call_tool("record_attempt", {"task": "t", "trajectory": "w", "answer": bad})
    assert result.is_error and "answer" in result.content[0].text
    assert dump_database(db_path) == before


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answer=st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=50)))
async def test_any_answer_the_schema_allows_is_recorded_as_its_text(server, answer):
    schema = None
    async with Client(server) as client:
        tools = {t["name"]: t for t in await tool_list(client)}
        schema = tools["record_attempt"]["inputSchema"]["properties"]["answer"]
        jsonschema.validate(answer, schema)  # what the schema says a client may send…
        result = await client.call_tool("record_attempt", {"task": "t", "trajectory": "w", "answer": answer})
    assert not result.is_error, result.content[0].text  # …is accepted


async def test_resources_list_names_every_library(client):
    assert (await client.list_resources()).resources == []
    for library in ("gsm8k", "bbh"):
        await client.call_tool("add_experience", {"library": library, "text": f"A lesson for {library}."})
    listed = {str(r.uri): r for r in (await client.list_resources()).resources}
    assert set(listed) == {"ted://libraries/bbh/prompt", "ted://libraries/gsm8k/prompt"}
    assert listed["ted://libraries/gsm8k/prompt"].name == "gsm8k"
    assert "1 lessons" in listed["ted://libraries/gsm8k/prompt"].description
    text = (await client.read_resource("ted://libraries/gsm8k/prompt")).contents[0].text
    assert "[E1] A lesson for gsm8k." in text


@pytest.mark.parametrize("teacher", [None, "anthropic:claude-sonnet-4-5"])
async def test_instructions_say_what_to_do_without_a_teacher(db_path, monkeypatch, teacher):
    if teacher:
        monkeypatch.setenv("TED_TEACHER", teacher)
    else:
        monkeypatch.delenv("TED_TEACHER", raising=False)
    async with Client(build_server(db_path)) as client:
        instructions = client.instructions
    assert "get_experiences" in instructions and "record_attempt" in instructions
    if teacher:
        assert "ask for a critique (request_critique)" in instructions and "no teacher" not in instructions
    else:
        assert "no teacher model" in instructions and "do not retry it: keep recording attempts" in instructions
