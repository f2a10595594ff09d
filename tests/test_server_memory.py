"""The MCP surface through the SDK's in-memory Client, in both protocol eras."""

import importlib.metadata
import json

import pytest
from conftest import dump_database
from mcp import MCPError

pytestmark = pytest.mark.anyio

TOOLS = {
    "get_experiences",
    "record_attempt",
    "add_experience",
    "list_libraries",
    "rollback_library",
    "promote_version",
    "measure_evidence",
    "request_critique",
    "compress_library",
    "distill_batch",
    "get_job",
    "cancel_job",
    "list_jobs",
    "edit_experience",
    "remove_experience",
    "delete_library",
}


async def call(client, name, args=None):
    result = await client.call_tool(name, args or {})
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def test_tools_have_schemas_annotations_and_instructions(client):
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.output_schema is not None, tool.name
        assert tool.annotations is not None and tool.annotations.read_only_hint is not None, tool.name
        assert tool.description and len(tool.description) > 40, tool.name
    assert tools["get_experiences"].annotations.read_only_hint
    assert tools["rollback_library"].annotations.destructive_hint
    assert tools["promote_version"].annotations.destructive_hint
    assert tools["measure_evidence"].annotations.open_world_hint
    assert tools["get_experiences"].input_schema["properties"]["library"]["pattern"] == "^[a-z0-9_-]{1,64}$"
    assert "get_experiences" in client.instructions and "record_attempt" in client.instructions
    if client.server_info is not None:  # optional in the 2026 protocol era
        assert (client.server_info.name, client.server_info.version) == (
            "ted-mcp",
            importlib.metadata.version("ted-mcp"),
        )


async def test_the_loop_read_solve_record_counts_usage(client):
    empty = await call(client, "get_experiences", {"library": "math"})
    assert empty["prompt"] == "" and empty["version"] == 0 and empty["items"] == []

    await call(client, "add_experience", {"library": "math", "text": "Write down the units of every quantity."})
    added = await call(client, "add_experience", {"library": "math", "text": "Re-read what the question asks."})
    assert added["version"] == 2 and added["operations"][0]["id"] == "E2"

    read = await call(client, "get_experiences", {"library": "math", "task": "What is 6 * 7?"})
    assert "[E1] Write down the units" in read["prompt"] and "[E3]" in read["prompt"]  # the citation example
    assert read["task_id"].startswith("t-")
    assert read["tokens"] > 0 and read["token_budget"] == 4000 and read["max_items"] == 15
    assert not read["over_budget"]

    attempt = await call(
        client,
        "record_attempt",
        {
            "library": "math",
            "task": "What is 6 * 7?",
            "trajectory": "Units: none [E1]. Six sevens are 42 [E2]. Answer: 42",
            "ground_truth": "42",
            "used_experience_ids": ["E1", "E5"],
        },
    )
    assert attempt["correct"] is True and attempt["graded_by"] == "exact"
    assert attempt["task_id"] == read["task_id"]
    assert attempt["counted_ids"] == ["E1", "E2"] and attempt["unknown_ids"] == ["E5"]
    assert attempt["usage_counts"] == {"E1": 1, "E2": 1}

    wrong = await call(
        client,
        "record_attempt",
        {
            "library": "math",
            "task": "Compute 2^10.",
            "trajectory": "[E2] 2^10 = 1000",
            "answer": "1000",
            "ground_truth": "1024",
            "task_id": "pow",
        },
    )
    assert (wrong["correct"], wrong["graded_by"], wrong["task_id"]) == (False, "math", "pow")

    items = {i["id"]: i for i in (await call(client, "get_experiences", {"library": "math"}))["items"]}
    assert (items["E2"]["usage_count"], items["E2"]["helpful_count"], items["E2"]["harmful_count"]) == (2, 1, 1)

    listed = (await call(client, "list_libraries"))["libraries"]
    assert [(lib["name"], lib["items"], lib["attempts"], lib["version"]) for lib in listed] == [("math", 2, 2, 2)]


async def test_outcome_without_ground_truth(client):
    result = await call(client, "record_attempt", {"task": "Fix the flaky test.", "trajectory": "...", "correct": True})
    assert (result["correct"], result["graded_by"]) == (True, "caller")
    result = await call(client, "record_attempt", {"task": "Fix the flaky test.", "trajectory": "..."})
    assert result["correct"] is None and result["graded_by"] is None


async def test_rollback_through_the_tool(client):
    for text in ("One.", "Two.", "Three."):
        await call(client, "add_experience", {"text": text})
    back = await call(client, "rollback_library", {"library": "default", "version": 1})
    assert back["version"] == 4 and back["items"] == 1
    assert [i["text"] for i in (await call(client, "get_experiences"))["items"]] == ["One."]


async def test_resources_and_prompt(client):
    await call(client, "add_experience", {"library": "bbh", "text": "Track each object's position in a table."})
    prompt = await client.read_resource("ted://libraries/bbh/prompt")
    assert "[E1] Track each object" in prompt.contents[0].text
    history = json.loads((await client.read_resource("ted://libraries/bbh/history")).contents[0].text)
    assert [v["kind"] for v in history] == ["create", "add"]

    rendered = await client.get_prompt("solve_with_experiences", {"task": "Who holds the ball?", "library": "bbh"})
    text = rendered.messages[0].content.text
    assert text.index("[E1] Track each object") < text.index("Who holds the ball?")

    with pytest.raises(MCPError, match="invalid: use 1-64 characters"):
        await client.read_resource("ted://libraries/Not%20Valid/prompt")
    with pytest.raises(MCPError, match="invalid: use 1-64 characters"):
        await client.get_prompt("solve_with_experiences", {"task": "x", "library": "UPPER"})


BAD_CALLS = [
    ("get_experiences", {"library": "Has Spaces"}, "library"),
    ("get_experiences", {"library": "x" * 65}, "library"),
    ("get_experiences", {"library": 7}, "library"),
    ("record_attempt", {"task": "", "trajectory": "t"}, "task"),
    ("record_attempt", {"task": "   ", "trajectory": "t"}, "task"),
    ("record_attempt", {"task": "t", "trajectory": "x" * 10_000_001}, "at most 1000000 characters"),
    ("record_attempt", {"task": "t" * 100_001, "trajectory": "t"}, "at most 100000 characters"),
    ("record_attempt", {"task": "t", "trajectory": "t", "correct": "maybe"}, "correct"),
    ("record_attempt", {"task": "t", "trajectory": "t", "used_experience_ids": ["3"]}, "used_experience_ids"),
    ("record_attempt", {"task": "t", "trajectory": "t", "used_experience_ids": "E1"}, "used_experience_ids"),
    ("record_attempt", {"task": "t", "trajectory": "t", "task_id": "has space"}, "task_id"),
    ("record_attempt", {"trajectory": "t"}, "task"),
    ("add_experience", {"text": ""}, "text"),
    ("add_experience", {"text": "x" * 801}, "at most 800 characters"),
    ("add_experience", {"text": "fine", "library": "../etc"}, "library"),
    ("rollback_library", {"library": "seeded", "version": 99}, "no version 99"),
    ("rollback_library", {"library": "seeded", "version": -1}, "greater than or equal to 0"),
    ("rollback_library", {"library": "seeded", "version": "one"}, "version"),
    ("rollback_library", {"library": "missing", "version": 0}, "no library named 'missing'"),
    ("rollback_library", {"library": "seeded", "version": 1}, "nothing to roll back"),
    # Strict where a wrong guess destroys or misleads, and no argument name is dropped unheard.
    ("rollback_library", {"library": "seeded", "version": "0"}, "version"),
    ("rollback_library", {"library": "seeded", "version": True}, "version"),
    ("rollback_library", {"library": "seeded", "version": 2**63}, "less than or equal to 2147483647"),
    ("record_attempt", {"task": "t", "trajectory": "t", "correct": "yes"}, "correct"),
    ("record_attempt", {"task": "t", "trajectory": "t", "correct": 1}, "correct"),
    ("add_experience", {"libary": "seeded", "text": "Check units."}, "libary"),
    ("compress_library", {"library": "seeded", "dry_run": "true"}, "dry_run"),
    ("get_job", {"job_id": "job-x", "wait": "no"}, "wait"),
]


@pytest.mark.parametrize(("tool", "args", "message"), BAD_CALLS, ids=[f"{t}-{m[:20]}" for t, _, m in BAD_CALLS])
async def test_bad_input_is_refused_and_changes_nothing(client, db_path, tool, args, message):
    await call(client, "add_experience", {"library": "seeded", "text": "A seeded lesson."})
    await call(client, "record_attempt", {"library": "seeded", "task": "t", "trajectory": "[E1]"})
    before = dump_database(db_path)
    result = await client.call_tool(tool, args)
    assert result.is_error
    assert message in result.content[0].text
    assert dump_database(db_path) == before
