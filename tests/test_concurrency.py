"""Several server processes on one database file never lose a usage count."""

import sqlite3

import anyio
import pytest
from conftest import installed_command
from mcp import Client, StdioServerParameters

pytestmark = pytest.mark.anyio

PROCESSES = 4
ATTEMPTS = 50


async def test_four_processes_recording_fifty_attempts_each_count_exactly_200(db_path):
    params = StdioServerParameters(command=installed_command("ted-mcp"), args=["--db", str(db_path)])
    async with Client(params) as setup:
        added = await setup.call_tool("add_experience", {"library": "shared", "text": "Estimate before computing."})
        assert not added.is_error

    failures: list[str] = []

    async def worker(n: int) -> None:
        async with Client(params) as client:
            for i in range(ATTEMPTS):
                result = await client.call_tool(
                    "record_attempt",
                    {
                        "library": "shared",
                        "task": f"worker {n} task {i}",
                        "trajectory": "Estimate first [E1].",
                        "answer": "1",
                        "ground_truth": "1" if i % 2 else "2",
                    },
                )
                if result.is_error or result.structured_content["counted_ids"] != ["E1"]:
                    failures.append(str(result.content))

    async with anyio.create_task_group() as tg:
        for n in range(PROCESSES):
            tg.start_soon(worker, n)

    assert failures == []
    with sqlite3.connect(db_path) as db:
        usage, helpful, harmful = db.execute(
            "SELECT usage_count, helpful_count, harmful_count FROM experiences WHERE id = 'E1'"
        ).fetchone()
        attempts = db.execute("SELECT count(*) FROM attempts").fetchone()[0]
    assert (usage, attempts) == (PROCESSES * ATTEMPTS, PROCESSES * ATTEMPTS)
    assert (helpful, harmful) == (PROCESSES * ATTEMPTS // 2, PROCESSES * ATTEMPTS // 2)
