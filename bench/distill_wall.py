"""Wall time of a whole distillation against its critical-path bound, and its teacher calls
against the naive protocol.

    /tmp/venv/bin/python bench/distill_wall.py [--problems 40 --rollouts 5 --epochs 3]
        [--latency 0.2] [--concurrency 8] [--max-concurrency 8] [--max-items 15]
        [--transport http|scripted] [--per-batch]

`ted.runs.distill.run_job` runs in this process against the local model server
(`ted.testing.ModelServer`, started in a subprocess so that its thread does not compete with
the loop for the GIL; the real OpenAI SDK over real HTTP on 127.0.0.1). It answers every call
after `--latency` seconds with the classroom's deterministic student and teacher
(`ted.testing.classroom`): the student adds right, and subtracts or multiplies right only once
the library holds that skill's lesson. `--max-concurrency` is the per-model cap on calls in
flight (`ModelSettings.max_concurrency`, default 8); the student and the teacher each have one.
`--transport scripted` swaps the SDK and HTTP for in-process models that sleep the latency, to
show the loop's own overhead; `--max-items 1` makes every batch end with a compression.

**The bound.** Batches run one after the other. Within a batch a problem's calls depend on
each other: its rollouts (parallel), then — if a rollout was wrong — the teacher's solution
(once per problem, cached), the summary of the attempts, the critique; the batch's
compression (if the batch left the library over budget) comes after all its critiques. From
the ledger's call keys each batch's calls are counted, and since every call takes one
latency, its bound is that many rounds of latency, the most of

    ceil(student calls / cap),  ceil(teacher calls / cap),
    1 + the most teacher calls of one problem + compressions,
    ceil(critiqued problems × rollouts / cap) + the fewest teacher calls of a critiqued problem
        + compressions    (the critiqued problem whose rollouts end last can end them no sooner)

— no schedule of the same calls can beat any of them. The job's bound is the sum over its
batches. The issue's simpler form, all calls × latency / concurrency (or the longest chain),
is printed beside it: it is not a lower bound (the student's and the teacher's calls overlap),
so the target is checked against the first. A third figure is the loop's own order with no
overhead at all: it asks for rollouts problem by problem, and only learns which problems need
the teacher once their rollouts are in, so a critiqued problem late in the batch starts its
teacher calls late; the bound is free to put it first.

What is left between that and the wall is time the loop's process spends on the CPU per call
(printed): the SDK building requests and parsing replies, and the loop's own bookkeeping (the
ledger row, the attempt, its grade, through SQLite), all on one event loop, so calls that
finish together are handled one after another. A busy machine makes it larger.

**The naive protocol** re-solves every problem with the teacher in every epoch and critiques
every group. Its figures come from a second run of the same job with `critique_all` (every
group summarised and critiqued; its teacher calls and tokens measured) at zero latency, with
its solutions counted once per epoch instead of once per problem.

It prints figures; it asserts nothing. About 40 s at the defaults.
"""

import argparse
import asyncio
import json
import math
import os
import re
import sqlite3
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from pathlib import Path

from ted.ledger import Ledger
from ted.llm import ModelSettings
from ted.llm.base import Model
from ted.llm.registry import get_model
from ted.runs import jobs
from ted.runs.datasets import Problem
from ted.runs.distill import run_job
from ted.runs.jobs import DistillParams, Job
from ted.store import Store
from ted.testing.classroom import Classroom, problems

TEACHER_ROLES = ("teacher-solve", "summarise", "critique", "compress")


# The server runs in its own process: in this one, its thread would take turns with the loop for
# the GIL, and the figures would count the server's work as the loop's.
SERVE = """
import json, sys
from ted.testing import ModelServer
from ted.testing.classroom import Classroom
with ModelServer(Classroom().reply_to_request, latency=float(sys.argv[1])) as server:
    print(server.openai_base_url, flush=True)
    sys.stdin.read()  # until the benchmark closes it; then the request log
    print(json.dumps([[r.body["model"], r.received_at] for r in server.requests]), flush=True)
"""


@asynccontextmanager
async def model_server(latency: float) -> AsyncIterator[tuple[str, list]]:
    """The base URL of a model server in a subprocess, and a list that gets its requests'
    (model, arrival time) once it stops."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVE, str(latency), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    requests: list = []
    try:
        yield (await process.stdout.readline()).decode().strip(), requests
    finally:
        process.stdin.close()
        requests += json.loads(await process.stdout.readline())
        await process.wait()


class Sleepy:
    """The classroom in-process, answering after `latency` with at most `cap` calls in flight: the
    loop's own overhead, without the SDK's and HTTP's."""

    def __init__(self, name: str, latency: float, cap: int, requests: list):
        self.inner, self.name, self.latency, self.requests = Classroom().model(name), name, latency, requests
        self.semaphore = asyncio.Semaphore(cap)

    async def complete(self, messages, *, system=None, output=None, settings=None):
        async with self.semaphore:
            self.requests.append([self.name.split(":")[1], time.perf_counter()])
            await asyncio.sleep(self.latency)
            return await self.inner.complete(messages, system=system, output=output, settings=settings)


@asynccontextmanager
async def models(args: argparse.Namespace, latency: float) -> AsyncIterator[tuple[Callable[[str], Model], list]]:
    """A resolver for `run_job`, and the list of (model, request time) it will have served."""
    if args.transport == "scripted":
        requests: list = []
        cache: dict[str, Sleepy] = {}
        yield (lambda name: cache.setdefault(name, Sleepy(name, latency, args.max_concurrency, requests))), requests
        return
    settings = ModelSettings(max_concurrency=args.max_concurrency)
    async with model_server(latency) as (url, requests):
        os.environ["TED_OPENAI_COMPATIBLE_BASE_URL"] = url
        yield (lambda name: get_model(name, settings)), requests


async def distil(args: argparse.Namespace, directory: Path, *, latency: float, critique_all: bool = False) -> dict:
    """One job from start to end; its ledger rows, the requests' times and the batches' end times."""
    items = [Problem.model_validate(p) for p in problems(args.problems)]
    ended: list[float] = []

    async def on_progress(job: Job) -> None:
        ended.append(time.perf_counter())

    async with models(args, latency) as (resolve, requests), Store.open(directory / "ted.db") as store:
        await store.configure("arith", max_items=args.max_items)
        params = DistillParams(
            library="arith",
            student="local:student",
            teacher="local:teacher",
            epochs=args.epochs,
            rollouts=args.rollouts,
            concurrency=args.concurrency,
            critique_all=critique_all,
        )
        job = await jobs.create(store, params, items, "classroom")
        size_before = await database_bytes(store)
        ledger = Ledger(store)
        started, cpu = time.perf_counter(), time.process_time()
        job = await run_job(store, ledger, resolve, job.id, on_progress=on_progress)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        calls = await store.read(
            lambda db: [
                dict(row)
                for row in db.execute(
                    "SELECT role, call_key, input_tokens, output_tokens, latency_ms FROM model_calls"
                    " WHERE job_id = ? AND ok ORDER BY id",
                    (job.id,),
                )
            ]
        )
        (attempts,) = await store.read(lambda db: db.execute("SELECT count(*) FROM attempts").fetchone())
        bytes_per_attempt = (await database_bytes(store) - size_before) / attempts
    assert job.state == "done", f"the job ended {job.state}: {job.error}"
    return {
        "job": job,
        "wall": wall,
        "cpu": cpu,
        "started": started,
        "ended": ended,
        "calls": calls,
        "items": items,
        "requests": requests,
        "bytes_per_attempt": bytes_per_attempt,
    }


async def database_bytes(store: Store) -> int:
    """The pages in use, once the write-ahead log is folded into the file."""
    with closing(sqlite3.connect(store.path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (pages,), (free,), (size,) = [
            db.execute(f"PRAGMA {p}").fetchone() for p in ("page_count", "freelist_count", "page_size")
        ]
    return (pages - free) * size


def batch_of(call: dict, positions: dict[str, int], size: int, first_summary: dict[str, str]) -> tuple[int, int]:
    """(epoch, batch) of a call, from its ledger key."""
    key = call["call_key"].split("#")[0]  # a repair belongs to its step
    if m := re.fullmatch(r"e(\d+)/b(\d+)/compress/v\d+", key):
        return int(m[1]), int(m[2])
    if re.fullmatch(r"compress/v\d+", key):  # a compression outside any batch (at the start or the end)
        return -1, -1
    if m := re.fullmatch(r"(.+)/solve(?:-again)?", key):  # made in the batch that first summarised the problem
        key = first_summary[m[1]]
    m = re.fullmatch(r"e(\d+)/([^/]+)/(?:r\d+|summarise|critique)", key)
    if m is None:
        raise SystemExit(f"a call key this benchmark does not know: {call['call_key']!r}")
    return int(m[1]), positions[m[2]] // size


def bound(run: dict, args: argparse.Namespace, latency: float) -> tuple[list[dict], float, float]:
    """Per batch: calls and bounds; and the job's bound and the issue's simpler form of it."""
    positions = {p.id: i for i, p in enumerate(run["items"])}
    first_summary: dict[str, str] = {}
    for call in run["calls"]:
        if m := re.fullmatch(r"e\d+/([^/]+)/summarise", call["call_key"]):
            first_summary.setdefault(m[1], call["call_key"])
    batches: dict[tuple[int, int], dict] = defaultdict(
        lambda: {"student": 0, "teacher": 0, "compress": 0, "chains": Counter()}
    )
    for call in run["calls"]:
        where = batches[batch_of(call, positions, args.concurrency, first_summary)]
        if call["role"] == "student":
            where["student"] += 1
        elif call["role"] == "compress":
            where["teacher"] += 1
            where["compress"] += 1
        else:
            where["teacher"] += 1
            parts = call["call_key"].split("/")  # "<problem>/solve", "e<epoch>/<problem>/<step>"
            problem = parts[0] if call["role"] == "teacher-solve" else parts[-2]  # "<problem>/solve(-again)"
            where["chains"][problem] += 1
    alone = batches.pop((-1, -1), {"teacher": 0})["teacher"]  # one after another, off any batch
    rows, total, issue = [], alone * latency, alone * latency
    n_batches = math.ceil(args.problems / args.concurrency)
    for epoch in range(args.epochs):
        for index in range(n_batches):
            b = batches[(epoch, index)]
            chain = 1 + max(b["chains"].values(), default=0) + b["compress"]
            cap, critiqued = args.max_concurrency, len(b["chains"])
            # Every call takes one latency, so c slots need ceil(calls / c) rounds; and the critiqued
            # problem whose rollouts finish last can finish them no sooner than all critiqued
            # problems' rollouts fit in, then its own teacher calls follow, then the compression.
            rounds = max(
                math.ceil(b["student"] / cap),
                math.ceil(b["teacher"] / cap),
                chain,
                math.ceil(critiqued * args.rollouts / cap) + min(b["chains"].values(), default=0) + b["compress"],
            )
            floor = rounds * latency
            simple = max((b["student"] + b["teacher"]) * latency / args.concurrency, chain * latency)
            ids = [p.id for p in run["items"][index * args.concurrency : (index + 1) * args.concurrency]]
            ordered = loop_order(ids, b["chains"], args.rollouts, b["compress"], cap) * latency
            rows.append(
                {
                    "epoch": epoch + 1,
                    "batch": index + 1,
                    "student": b["student"],
                    "teacher": b["teacher"],
                    "chain": chain,
                    "bound": floor,
                    "issue": simple,
                    "order": ordered,
                }
            )
            total += floor
            issue += simple
    ends = run["ended"]
    for row, start, end in zip(rows, [run["started"], *ends], ends, strict=False):
        row["wall"] = end - start
    return rows, total, issue


def loop_order(problem_ids: list[str], chains: Counter, rollouts: int, compressions: int, cap: int) -> int:
    """Rounds the batch takes in the loop's own order, with no overhead at all.

    The loop asks for its rollouts problem by problem, so they queue for the student's slots in
    that order; a critiqued problem's teacher calls follow its last rollout, and the compression
    follows them all. Which problems will need the teacher is only known once their rollouts are
    in, which the bound above does not have to respect. (The teacher's slots never bind while a
    batch has no more problems than the cap.)
    """
    ends = [((i + 1) * rollouts - 1) // cap + 1 + chains.get(problem, 0) for i, problem in enumerate(problem_ids)]
    return max(ends, default=0) + compressions


def in_flight(run: dict, latency: float) -> dict[str, int]:
    """The most requests each model had in flight at once, from the server's arrival times."""
    peaks = {}
    for model in ("student", "teacher"):
        times = sorted(at for name, at in run["requests"] if name == model)
        peak, j = 0, 0
        for i, t in enumerate(times):  # requests still answering when request i arrived
            while times[j] + latency <= t:
                j += 1
            peak = max(peak, i - j + 1)
        peaks[model] = peak
    return peaks


def per_role(calls: list[dict]) -> dict[str, dict[str, int]]:
    roles: dict[str, dict[str, int]] = defaultdict(lambda: {"calls": 0, "in": 0, "out": 0})
    for c in calls:
        roles[c["role"]]["calls"] += 1
        roles[c["role"]]["in"] += c["input_tokens"]
        roles[c["role"]]["out"] += c["output_tokens"]
    return roles


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    print("  " + "  ".join(str(h).rjust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  " + "  ".join(str(x).rjust(w) for x, w in zip(row, widths, strict=True)))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=40)
    parser.add_argument("--rollouts", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the server takes to answer each call")
    parser.add_argument("--concurrency", type=int, default=8, help="problems per batch")
    parser.add_argument(
        "--max-concurrency",
        type=int,
        default=ModelSettings().max_concurrency,
        help="calls in flight per model (the SDK adapters' semaphore)",
    )
    parser.add_argument("--max-items", type=int, default=15, help="the library's item cap (1 forces compressions)")
    parser.add_argument(
        "--transport",
        choices=["http", "scripted"],
        default="http",
        help="http: the OpenAI SDK to the local model server; scripted: in-process models that "
        "sleep the latency (the loop's own overhead alone)",
    )
    parser.add_argument("--per-batch", action="store_true", help="print every batch, not only the slowest")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "a").mkdir()
        (Path(tmp) / "b").mkdir()
        # Imports (the SDK, the graders' sympy) and first connections are paid before the clock
        # starts, by a run through every kind of call: one problem of each skill, one epoch.
        await distil(argparse.Namespace(**{**vars(args), "problems": 3, "epochs": 1}), Path(tmp) / "b", latency=0)
        (Path(tmp) / "b" / "ted.db").unlink()
        run = await distil(args, Path(tmp) / "a", latency=args.latency)
        naive_run = await distil(args, Path(tmp) / "b", latency=0, critique_all=True)

    rows, floor, issue = bound(run, args, args.latency)
    wall = run["wall"]
    n, e, r = args.problems, args.epochs, args.rollouts
    print(
        f"{n} problems × {r} rollouts × {e} epochs, {math.ceil(n / args.concurrency) * e} batches of "
        f"{args.concurrency}; {args.latency * 1000:.0f} ms a call; at most {args.max_concurrency} calls in flight "
        f"per model"
    )
    print(
        f"transport: {args.transport}; this process's CPU per call: {run['cpu'] / len(run['calls']) * 1000:.1f} ms; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (other work on the machine slows the loop)"
    )
    peaks = in_flight(run, args.latency)
    most_student = min(args.concurrency, n) * r
    print(
        f"calls in flight at most: student {peaks['student']} (a batch has {most_student} rollouts to make), "
        f"teacher {peaks['teacher']}"
    )

    shown = rows if args.per_batch else sorted(rows, key=lambda x: x["wall"] / x["bound"], reverse=True)[:5]
    print_table(
        "Batches" + ("" if args.per_batch else " (the five furthest from their bound)"),
        ["epoch", "batch", "student", "teacher", "chain", "bound s", "loop's order s", "wall s", "wall/bound"],
        [
            [
                x["epoch"],
                x["batch"],
                x["student"],
                x["teacher"],
                x["chain"],
                f"{x['bound']:.2f}",
                f"{x['order']:.2f}",
                f"{x['wall']:.2f}",
                f"{x['wall'] / x['bound']:.3f}",
            ]
            for x in shown
        ],
    )
    calls = sum(x["student"] + x["teacher"] for x in rows)
    ordered = sum(x["order"] for x in rows)
    print_table(
        "Wall time",
        ["", "seconds", "wall ÷ it", "target"],
        [
            ["wall", f"{wall:.2f}", "", ""],
            ["critical-path bound", f"{floor:.2f}", f"{wall / floor:.3f}", "≤ 1.15"],
            ["the loop's own order with no overhead", f"{ordered:.2f}", f"{wall / ordered:.3f}", ""],
            ["issue's form: calls × latency ÷ concurrency, with chains", f"{issue:.2f}", f"{wall / issue:.3f}", ""],
            ["all calls one after another", f"{calls * args.latency:.2f}", f"{wall / (calls * args.latency):.3f}", ""],
        ],
    )
    print(f"database bytes per attempt (all the job wrote, ledger included): {run['bytes_per_attempt']:,.0f}")

    ours, naive = per_role(run["calls"]), per_role(naive_run["calls"])
    solve = naive["teacher-solve"]
    naive["teacher-solve"] = {k: v * e for k, v in solve.items()}  # every epoch solves every problem again
    pe = n * e
    table = []
    for role in ("student", *TEACHER_ROLES):
        o, v = ours.get(role, {"calls": 0, "in": 0, "out": 0}), naive.get(role, {"calls": 0, "in": 0, "out": 0})
        table.append(
            [
                role,
                f"{o['calls'] / pe:.3f}",
                f"{v['calls'] / pe:.3f}",
                f"{(o['in'] + o['out']) / pe:,.0f}",
                f"{(v['in'] + v['out']) / pe:,.0f}",
            ]
        )
    teacher = [sum(d.get(role, {}).get(k, 0) for role in TEACHER_ROLES) for d in (ours, naive) for k in ("calls",)]
    teacher_tokens = [
        sum(d.get(role, {}).get("in", 0) + d.get(role, {}).get("out", 0) for role in TEACHER_ROLES)
        for d in (ours, naive)
    ]
    table.append(
        [
            "teacher, all roles",
            f"{teacher[0] / pe:.3f}",
            f"{teacher[1] / pe:.3f}",
            f"{teacher_tokens[0] / pe:,.0f}",
            f"{teacher_tokens[1] / pe:,.0f}",
        ]
    )
    print_table("Per problem and epoch", ["role", "calls", "naive calls", "tokens", "naive tokens"], table)
    print(
        f"\nteacher calls: {teacher[0]} against the naive {teacher[1]} = {teacher[0] / teacher[1]:.1%} "
        f"(target ≤ 50 %); teacher tokens {teacher_tokens[0]:,} against {teacher_tokens[1]:,} = "
        f"{teacher_tokens[0] / teacher_tokens[1]:.1%}"
    )
    print(
        f"the job's accuracy per epoch: {', '.join(f'{s.accuracy:.0%}' for s in run['job'].epochs)}; "
        f"critiques per epoch: {', '.join(str(s.critiques) for s in run['job'].epochs)}"
    )
    print(
        f"analytic naive teacher calls: {3 * pe} (solve + summarise + critique per problem and epoch) "
        f"+ {ours.get('compress', {'calls': 0})['calls']} compressions"
    )


if __name__ == "__main__":
    asyncio.run(main())
