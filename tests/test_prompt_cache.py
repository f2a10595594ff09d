"""`get_experiences` is served from a cache: every write, from this process or another, shows at once."""

import sqlite3

import anyio
import pytest
from conftest import installed_command
from jsonschema import Draft202012Validator
from mcp import Client, StdioServerParameters

from ted import agent
from ted.store import Store
from ted.store.records import AddOp, DeleteOp

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(db_path):
    async with Store.open(db_path) as s:
        yield s


async def test_a_write_in_the_same_process_is_seen_at_once(store):
    assert (await store.experience_prompt("lib")).version == 0
    await store.apply("lib", [AddOp(text="Check the units.")], "add", "test")
    first = await store.experience_prompt("lib")
    assert (first.version, [i.text for i in first.items]) == (1, ["Check the units."])

    await agent.add_experience(store, "lib", "Estimate first.", source="test")
    await store.apply("lib", [DeleteOp(id="E1")], "manual", "test")
    await agent.record_attempt(store, library="lib", task="t", trajectory="[E2]", correct=True)
    prompt = await store.experience_prompt("lib")
    assert prompt.version == 3
    assert [(i.id, i.usage_count, i.helpful_count) for i in prompt.items] == [("E2", 1, 1)]
    assert prompt.prompt.endswith("[E2] Estimate first.\n(End of lessons.)")


async def test_a_write_through_another_connection_is_seen(db_path, store):
    await store.apply("lib", [AddOp(text="Check the units.")], "add", "test")
    assert len((await store.experience_prompt("lib")).items) == 1
    async with Store.open(db_path) as other:
        await other.apply("lib", [AddOp(text="Estimate first.")], "add", "test")
    assert len((await store.experience_prompt("lib")).items) == 2

    # Even a bare sqlite3 write that skips the store altogether.
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE experiences SET usage_count = 7 WHERE id = 'E1'")
    assert (await store.experience_prompt("lib")).items[0].usage_count == 7


async def test_each_caller_gets_its_own_copy(store):
    await store.apply("lib", [AddOp(text="Check the units.")], "add", "test")
    with_task = await agent.get_experiences(store, "lib", task="What is 2 + 2?")
    with_task.items.clear()
    again = await store.experience_prompt("lib")
    assert again.task_id is None and len(again.items) == 1


async def test_unknown_libraries_read_as_empty_and_do_not_pile_up(store):
    for n in range(200):
        prompt = await store.experience_prompt(f"nothing-{n}")
        assert (prompt.version, prompt.prompt, prompt.items) == (0, "", [])
    await store.apply("nothing-3", [AddOp(text="Check the units.")], "add", "test")
    assert (await store.experience_prompt("nothing-3")).version == 1


async def test_a_store_on_memory_has_no_probe_and_still_reads_right(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    async with Store.open(":memory:") as store:
        await store.apply("lib", [AddOp(text="Check the units.")], "add", "test")
        assert len((await store.experience_prompt("lib")).items) == 1
        await store.apply("lib", [AddOp(text="Estimate first.")], "add", "test")
        assert len((await store.experience_prompt("lib")).items) == 2
    assert list(tmp_path.iterdir()) == []  # no file named ":memory:" left behind


@pytest.mark.slow
async def test_another_server_process_writing_is_seen_by_the_first(db_path):
    params = StdioServerParameters(command=installed_command("ted-mcp"), args=["--db", str(db_path)])
    async with Client(params) as reader, Client(params) as writer:
        added = await writer.call_tool("add_experience", {"library": "shared", "text": "Check the units."})
        assert not added.is_error, added.content
        before = (await reader.call_tool("get_experiences", {"library": "shared"})).structured_content
        assert [i["usage_count"] for i in before["items"]] == [0]

        await writer.call_tool("add_experience", {"library": "shared", "text": "Estimate first."})
        recorded = await writer.call_tool(
            "record_attempt", {"library": "shared", "task": "t", "trajectory": "[E1]", "correct": True}
        )
        assert not recorded.is_error, recorded.content
        with anyio.fail_after(5):  # no waiting is needed; the bound only keeps a bug from hanging
            after = (await reader.call_tool("get_experiences", {"library": "shared"})).structured_content
        assert after["version"] == before["version"] + 1
        assert [(i["id"], i["usage_count"]) for i in after["items"]] == [("E1", 1), ("E2", 0)]


async def test_the_output_schema_is_self_contained_and_checks_real_replies(client):
    await client.call_tool("add_experience", {"library": "lib", "text": "Check the units."})
    schema = next(t for t in (await client.list_tools()).tools if t.name == "get_experiences").output_schema
    assert "$defs" not in schema and "$ref" not in str(schema)

    reply = await client.call_tool("get_experiences", {"library": "lib", "task": "2 + 2?"})
    assert not reply.is_error, reply.content
    validator = Draft202012Validator(schema)
    validator.validate(reply.structured_content)
    # The item schema is really checked, not just present.
    broken = {**reply.structured_content, "items": [{"id": "E1", "text": "Check the units.", "usage_count": "1"}]}
    assert not validator.is_valid(broken)
