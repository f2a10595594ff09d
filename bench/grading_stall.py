"""`get_experiences` latency while other clients' slow gradings run on the same server.

    python bench/grading_stall.py [--calls 200] [--graders 4] [--transport http|stdio]

One installed `ted-mcp` (streamable HTTP on 127.0.0.1 by default, so the clients are separate
connections as separate agents would be), a library of 15 lessons of 40-80 words. A reader
calls `get_experiences` every 20 ms; `--graders` other clients keep calling `record_attempt`
with a ground truth math-verify needs seconds for (`(x+1)^{500}` against `(x+1)^{600}`). The
reader's latency is measured twice in the same run: alone (the peer), and under that load. It
prints p50, p90, p99 and max of both, their ratio, how many gradings finished, and whether the
loaded p90 meets the target of 200 ms. It asserts nothing about time. ~1 min.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from lessons import LESSONS
from mcp import Client, StdioServerParameters

from ted.store import Store
from ted.store.records import AddOp

TARGET_P90_MS = 200
SLOW = {"answer": "(x+1)^{600}", "ground_truth": "(x+1)^{500}"}


def command(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


async def seed(db: Path) -> None:
    async with Store.open(db) as store:
        await store.apply("bench", [AddOp(text=text) for _, text in LESSONS], "import", "bench lessons")


@asynccontextmanager
async def http_server(db: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [command("ted-mcp"), "--transport", "http", "--port", str(port), "--db", str(db)]
    proc = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("ted-mcp did not start listening within 30 s") from None
                await anyio.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(10)


def client_for(target: str | StdioServerParameters) -> Client:
    return Client(target, mode="legacy")


async def read_latencies(client: Client, calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        result = await client.call_tool("get_experiences", {"library": "bench"})
        samples.append((time.perf_counter() - started) * 1000)
        assert not result.is_error and len(result.structured_content["items"]) == len(LESSONS)
        await anyio.sleep(0.02)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": statistics.median(ordered), "p90": pick(0.9), "p99": pick(0.99), "max": ordered[-1]}


async def run(options: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "ted.db"
        await seed(db)
        if options.transport == "http":
            server = http_server(db)
            target = await server.__aenter__()
        else:
            server, target = None, StdioServerParameters(command=command("ted-mcp"), args=["--db", str(db)])
        try:
            await measure(target, options)
        finally:
            if server is not None:
                await server.__aexit__(None, None, None)


async def measure(target, options: argparse.Namespace) -> None:
    graded = 0
    async with client_for(target) as reader:
        await read_latencies(reader, 20)  # warm up
        alone = await read_latencies(reader, options.calls)
        loaded: list[float] = []

        async def grader(n: int, stop: anyio.Event) -> None:
            nonlocal graded
            # stdio has one server per client: graders share the reader's; over HTTP each connects.
            async with client_for(target) if options.transport == "http" else _same(reader) as client:
                while not stop.is_set():
                    args = {"library": "bench", "task": f"Expand, variant {n}.", "trajectory": "t", **SLOW}
                    result = await client.call_tool("record_attempt", args)
                    assert not result.is_error, result.content
                    graded += 1

        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            for n in range(options.graders):
                tg.start_soon(grader, n, stop)
            await anyio.sleep(1.0)  # the gradings are under way
            loaded = await read_latencies(reader, options.calls)
            stop.set()
    quiet, busy = summary(alone), summary(loaded)
    print(f"get_experiences over {options.transport}, {options.calls} calls each, {options.graders} grading clients")
    print(f"{'':>10} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}  (ms)")
    for name, figures in (("alone", quiet), ("grading", busy)):
        print(f"{name:>10} " + " ".join(f"{figures[k]:8.1f}" for k in ("p50", "p90", "p99", "max")))
    print(f"ratio grading/alone: p50 {busy['p50'] / quiet['p50']:.2f}, p90 {busy['p90'] / quiet['p90']:.2f}")
    print(f"slow gradings finished meanwhile: {graded}")
    verdict = "meets" if busy["p90"] < TARGET_P90_MS else "misses"
    print(f"p90 under grading load {busy['p90']:.1f} ms {verdict} the target of {TARGET_P90_MS} ms")


@asynccontextmanager
async def _same(client: Client):
    yield client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--graders", type=int, default=4)
    parser.add_argument("--transport", choices=["http", "stdio"], default="http")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    anyio.run(run, parser.parse_args())


if __name__ == "__main__":
    main()
