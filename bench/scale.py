"""Costs that should stay flat as a database grows, each as a ratio against a peer in the same run.

    .venv/bin/python bench/scale.py [--libraries 10000] [--attempts 1000,1000000] [--ledger 1000,600000]

- **list_libraries at 10,000 libraries** (3 lessons each), over stdio, against the official
  memory server's `read_graph` of 10,000 entities (3 observations each): the first page (100),
  and all of them by pages of 1,000; p50 of 3, and the replies' size.
- **list_libraries as attempts grow**: 10 libraries holding 1k, then 1M attempts; the store's
  `list_libraries` in-process (median of 5); the ratio of the two (flat is 1.0).
- **ledger reads as calls grow**: `ted costs` (the ledger's totals), `get_job` (a job's status)
  and one cap check of a running job (what the job's watcher does every 0.5 s) with 1k, then
  600k rows in `model_calls` for that job; medians of 5 and the ratio.

Rows are written with plain SQL into a database the store created (the schema is the store's),
so filling a million rows takes seconds, not hours. It prints figures; it asserts nothing.
"""

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
from get_experiences_latency import MEMORY_BIN, stderr_to
from mcp import Client, StdioServerParameters

from ted.ledger import Ledger
from ted.runs import distill, jobs
from ted.runs.datasets import Problem
from ted.runs.jobs import DistillParams
from ted.store import Store
from ted.store.database import timestamp

TED_MCP = Path(sys.executable).parent / "ted-mcp"
LESSON = "When a quantity is given as a fraction of a remainder, compute the remainder first, then the fraction."


async def median_seconds(call: Callable[[], Awaitable[object]], times: int = 5) -> float:
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def fill_libraries(db: Path, count: int) -> None:
    now = timestamp()
    settings = '{"token_budget": 4000, "max_items": 15, "encoding": "cl100k_base"}'
    with sqlite3.connect(db) as conn:
        first = conn.execute("SELECT coalesce(max(id), 0) FROM libraries").fetchone()[0] + 1
        conn.executemany(
            "INSERT INTO libraries (id, name, settings, version, next_experience, created_at, updated_at)"
            " VALUES (?, ?, ?, 1, 4, ?, ?)",
            [(first + i, f"lib-{i:05d}", settings, now, now) for i in range(count)],
        )
        snapshot = json.dumps([{"id": f"E{n}", "text": f"{LESSON} ({n})"} for n in (1, 2, 3)])
        conn.executemany(
            "INSERT INTO library_versions (library_id, version, kind, reason, operations, snapshot, created_at,"
            " items, tokens) VALUES (?, 1, 'import', 'bench', '[]', ?, ?, 3, 75)",
            [(first + i, snapshot, now) for i in range(count)],
        )
        conn.executemany(
            "INSERT INTO experiences (library_id, id, ordinal, text, tokens, created_version)"
            " VALUES (?, ?, ?, ?, 25, 1)",
            [(first + i, f"E{n}", n, f"{LESSON} ({n})") for i in range(count) for n in (1, 2, 3)],
        )


def fill_attempts(db: Path, total: int) -> None:
    """Top the 10 libraries lib-00000 … lib-00009 up to `total` attempts between them."""
    now = timestamp()
    with sqlite3.connect(db) as conn:
        have = conn.execute("SELECT count(*) FROM attempts").fetchone()[0]
        ids = [r[0] for r in conn.execute("SELECT id FROM libraries ORDER BY id LIMIT 10")]
        rows = (
            (ids[n % len(ids)], f"t-{n % 5000}", "What is 2 + 2?", "2 + 2 = 4 [E1]\nAnswer: 4", "4", "4", 1, now)
            for n in range(have, total)
        )
        conn.executemany(
            "INSERT INTO attempts (library_id, task_id, task, trajectory, answer, ground_truth, correct,"
            " library_version, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?)",
            rows,
        )
        # The count the store keeps as it records attempts.
        conn.execute(
            "UPDATE libraries SET attempts = (SELECT count(*) FROM attempts a WHERE a.library_id = libraries.id)"
        )


def fill_ledger(db: Path, job_id: str, total: int) -> None:
    now = timestamp()
    reply = "I apply the method [E1]: 12 + 3 = 15.\nAnswer: 15" * 4
    with sqlite3.connect(db) as conn:
        have = conn.execute("SELECT count(*) FROM model_calls WHERE job_id = ?", (job_id,)).fetchone()[0]
        conn.executemany(
            "INSERT INTO model_calls (role, model, input_tokens, output_tokens, cost_usd, latency_ms, ok, library,"
            " task_id, job_id, created_at, call_key, reply) VALUES (?, ?, 600, 120, 0.0004, 900, 1, 'lib-00000',"
            " 't-1', ?, ?, ?, ?)",
            (
                ("student" if n % 10 else "critique", "openai:gpt-4.1-mini", job_id, now, f"e0/p{n}/r0", reply)
                for n in range(have, total)
            ),
        )


async def list_libraries_against_memory(tmp: Path, count: int) -> None:
    db = tmp / "libraries.db"
    async with Store.open(db):
        pass
    fill_libraries(db, count)
    ted = StdioServerParameters(command=str(TED_MCP), args=["--db", str(db)])
    memory = StdioServerParameters(command=str(MEMORY_BIN), env={"MEMORY_FILE_PATH": str(tmp / "memory.jsonl")})
    with stderr_to(tmp / "servers.log"):
        async with Client(ted) as ted_client, Client(memory) as memory_client:
            entities = [
                {
                    "name": f"lib-{i:05d}",
                    "entityType": "library",
                    "observations": [f"{LESSON} ({n})" for n in (1, 2, 3)],
                }
                for i in range(count)
            ]
            for start in range(0, count, 1000):
                await memory_client.call_tool("create_entities", {"entities": entities[start : start + 1000]})

            async def every_page(limit: int) -> list:
                """All the libraries, page by page, as a client that wants them all would."""
                replies, after = [], ""
                while after is not None:
                    replies.append(await ted_client.call_tool("list_libraries", {"after": after, "limit": limit}))
                    after = replies[-1].structured_content["next_after"]
                return replies

            calls = {
                "memory read_graph": lambda: memory_client.call_tool("read_graph", {}),
                "ted list_libraries, first page": lambda: ted_client.call_tool("list_libraries", {}),
                "ted list_libraries, all by 1,000": lambda: every_page(1000),
            }
            figures = {}
            for name, call in calls.items():
                reply = await call()
                size = sum(len(r.model_dump_json(by_alias=True, exclude_none=True)) for r in _listed(reply))
                figures[name] = seconds = await median_seconds(call, times=3)
                print(f"{name:<34} {count:,} entries: p50 {seconds * 1e3:9.1f} ms, {size:,} bytes")
    for name in list(calls)[1:]:
        ratio = figures[name] / figures["memory read_graph"]
        print(f"ratio {name} / memory read_graph at {count:,}: {ratio:.2f} (target <= 1.0)")


def _listed(reply) -> list:
    return reply if isinstance(reply, list) else [reply]


async def list_libraries_as_attempts_grow(tmp: Path, sizes: list[int]) -> None:
    db = tmp / "attempts.db"
    async with Store.open(db):
        pass
    fill_libraries(db, 10)
    figures = []
    for size in sizes:
        fill_attempts(db, size)
        async with Store.open(db) as store:
            await store.list_libraries()
            seconds = await median_seconds(store.list_libraries)
        figures.append(seconds)
        print(f"list_libraries, 10 libraries, {size:>9,} attempts: {seconds * 1e3:8.2f} ms")
    print(f"ratio {sizes[-1]:,} / {sizes[0]:,} attempts: {figures[-1] / figures[0]:.2f} (target <= 1.2)")


async def ledger_reads_as_calls_grow(tmp: Path, sizes: list[int]) -> None:
    db = tmp / "ledger.db"
    async with Store.open(db) as store:
        params = DistillParams(
            library="lib-00000", student="openai:gpt-4.1-mini", teacher="openai:gpt-4.1", max_tokens=10**12
        )
        job = await jobs.create(store, params, [Problem(id="p0", question="What is 2 + 2?", answer="4")], "bench")
    figures: dict[str, list[float]] = {"ted costs": [], "get_job": [], "cap check": []}
    for size in sizes:
        fill_ledger(db, job.id, size)
        async with Store.open(db) as store:
            ledger = Ledger(store)
            for name, call in (
                ("ted costs", lambda: ledger.totals()),
                ("get_job", lambda: jobs.status(store, ledger, job.id)),
                ("cap check", lambda: distill._stop_reason(store, ledger, job)),
            ):
                await call()
                seconds = await median_seconds(call)
                figures[name].append(seconds)
                print(f"{name:<10} at {size:>9,} ledger rows: {seconds * 1e3:8.2f} ms")
    for name, values in figures.items():
        print(f"ratio {name} {sizes[-1]:,} / {sizes[0]:,} rows: {values[-1] / values[0]:.2f} (target <= 1.5)")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="ted-scale-") as tmp:
        await list_libraries_against_memory(Path(tmp), args.libraries)
        await list_libraries_as_attempts_grow(Path(tmp), [int(n) for n in args.attempts.split(",")])
        await ledger_reads_as_calls_grow(Path(tmp), [int(n) for n in args.ledger.split(",")])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--libraries", type=int, default=10_000)
    parser.add_argument("--attempts", default="1000,1000000")
    parser.add_argument("--ledger", default="1000,600000")
    anyio.run(main, parser.parse_args())
