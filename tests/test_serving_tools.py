"""The served version, promotions and evidence through a real MCP client (the SDK's in-memory
Client, in both protocol eras), with the classroom's student and teacher as the server's models
and a real SQLite file: get_experiences returns the served version; a distillation with a
validation set promotes what helps and refuses what hurts, and both are in the history resource;
promote_version and measure_evidence do what they say and refuse what they must."""

import json

import pytest
from conftest import dump_database
from mcp import Client

from ted.store import Store
from ted.testing.classroom import HARMFUL, LESSONS, Classroom, problems
from ted_server import build_server

pytestmark = pytest.mark.anyio

LIB = "arith"
MODELS = {"student": "scripted:student", "teacher": "scripted:teacher"}


@pytest.fixture(params=["auto", "legacy"])
def mode(request) -> str:
    return request.param


def connect(db_path, mode: str, classroom: Classroom | None = None) -> Client:
    return Client(build_server(db_path, models=(classroom or Classroom()).models()), mode=mode, raise_exceptions=False)


async def call(client: Client, name: str, args: dict) -> dict:
    result = await client.call_tool(name, args)
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def error(client: Client, name: str, args: dict) -> str:
    result = await client.call_tool(name, args)
    assert result.is_error, result.structured_content
    return result.content[0].text


async def distil(client: Client, **args) -> dict:
    started = await call(client, "distill_batch", {"library": LIB, **MODELS, **args})
    assert started["estimate"]["validation_calls"] > 0
    job = await call(client, "get_job", {"job_id": started["job"]["id"], "wait": True, "timeout": 30})
    assert job["state"] == "done", job["error"]
    return job


async def configure_student(db_path) -> None:
    async with Store.open(db_path) as store:
        await store.configure(LIB, student="scripted:student")


async def history(client: Client) -> list[dict]:
    [content] = (await client.read_resource(f"ted://libraries/{LIB}/history")).contents
    return json.loads(content.text)


async def test_promotion_and_refusal_through_a_client(db_path, mode):
    validation = problems(6, first=30)
    async with connect(db_path, mode) as client:
        job = await distil(client, dataset=problems(6), validation={"dataset": validation}, epochs=1, rollouts=2)
        [made] = job["epochs"][0]["validations"]
        assert (made["decision"], made["figures"]["working_accuracy"]) == ("promoted", 1.0)
        served = await call(client, "get_experiences", {"library": LIB})
        assert (served["version"], served["served_version"]) == (1, 1)
        assert {i["text"] for i in served["items"]} == {LESSONS["subtraction"], LESSONS["multiplication"]}

    harmful = Classroom(teaches={"multiplication": HARMFUL["multiplication"]})
    async with connect(db_path, mode, harmful) as client:
        job = await distil(
            client,
            dataset=problems(3, first=40),
            validation={"dataset": validation},
            epochs=1,
            rollouts=1,
            critique_all=True,
        )
        [made] = job["epochs"][0]["validations"]
        assert made["decision"] == "refused" and made["figures"]["difference"] < 0

        # get_experiences returns the served version, not the refused working one.
        served = await call(client, "get_experiences", {"library": LIB})
        assert (served["version"], served["served_version"], served["working_version"]) == (1, 1, 2)
        assert HARMFUL["multiplication"] not in served["prompt"]
        working = await call(client, "get_experiences", {"library": LIB, "version": "working"})
        assert HARMFUL["multiplication"] in working["prompt"]

        versions = await history(client)
        decisions = [(v["version"], p["decision"], p["by"]) for v in versions for p in v["promotions"]]
        assert [(v, d) for v, d, _ in decisions] == [(0, "promoted"), (1, "promoted"), (2, "refused")]
        refusal = versions[2]["promotions"][0]
        assert refusal["by"] == job["id"] and refusal["figures"]["served_version"] == 1
        assert refusal["figures"]["interval"]["high"] <= 0


async def test_promote_version_by_hand(db_path, mode):
    async with connect(db_path, mode) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert tools["promote_version"].annotations.destructive_hint
        await call(client, "add_experience", {"library": LIB, "text": LESSONS["subtraction"]})
        done = await call(client, "promote_version", {"library": LIB, "version": 1, "reason": "looks right"})
        assert (done["served_version"], done["served_before"], done["working_version"]) == (1, None, 1)
        [promotion] = (await history(client))[1]["promotions"]
        assert (promotion["by"], promotion["reason"]) == ("promote_version", "looks right")
        await call(client, "add_experience", {"library": LIB, "text": LESSONS["multiplication"]})
        assert (await call(client, "get_experiences", {"library": LIB}))["version"] == 1
        assert (await call(client, "get_experiences", {"library": LIB, "version": 2}))["version"] == 2
        [listed] = (await call(client, "list_libraries", {}))["libraries"]
        assert (listed["serves"], listed["served_version"], listed["version"]) == ("promoted", 1, 2)

        before = dump_database(db_path)
        assert "its newest is 2" in await error(client, "promote_version", {"library": LIB, "version": 5})
        assert "has no version 9" in await error(client, "get_experiences", {"library": LIB, "version": 9})
        assert "version" in await error(client, "promote_version", {"library": LIB, "version": "served"})
        assert dump_database(db_path) == before
        assert (await call(client, "promote_version", {"library": LIB, "version": "working"}))["served_version"] == 2


async def test_measure_evidence_estimates_then_measures_within_budget(db_path, mode):
    async with connect(db_path, mode) as client:
        for text in (LESSONS["subtraction"], HARMFUL["multiplication"]):
            await call(client, "add_experience", {"library": LIB, "text": text})
        ask = {"library": LIB, "dataset": problems(6), "max_calls": 10}
        estimate = await call(client, "measure_evidence", {**ask, "estimate_only": True})
        assert (estimate["calls"], estimate["accuracy"], estimate["lessons"]) == (18, None, [])
        before = dump_database(db_path)
        assert "over the budget of 10" in await error(client, "measure_evidence", ask)
        assert dump_database(db_path) == before

        assert "No student model is configured for library 'arith'" in await error(
            client, "measure_evidence", {**ask, "max_calls": 18}
        )
        await configure_student(db_path)
        measured = await call(client, "measure_evidence", {**ask, "max_calls": 18})
        assert [(m["id"], m["flagged"]) for m in measured["lessons"]] == [("E1", False), ("E2", True)]
        assert measured["accuracy"] == pytest.approx(1 / 3) and measured["lessons"][1]["high"] <= 0
        items = {i["id"]: i["evidence"] for i in (await call(client, "get_experiences", {"library": LIB}))["items"]}
        assert items["E1"]["difference"] > 0 > items["E2"]["difference"] and items["E2"]["flagged"]
