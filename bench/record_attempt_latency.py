"""Round-trip latency of ted-mcp's `record_attempt` over stdio, against the official memory
server's `add_observations` (its write that is most alike) and the bare SDK server's `ping`.

    .venv/bin/python bench/record_attempt_latency.py [--calls 300] [--warmup 30] [--modes auto,legacy]

ted-mcp records an attempt at a task of the 15-lesson "bench" library, citing two lessons and
graded against a ground truth (an exact match, so no math-verify); the memory server adds one
observation to an entity. Both write to disk on every call. Calls are interleaved as in
`get_experiences_latency.py`; it prints p50/p90 and the ratio of p50s (target ted/memory <= 1.2).
"""

import argparse
import shutil
import statistics
import sys
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
from get_experiences_latency import (
    BARE_SERVER,
    MEMORY_BIN,
    Target,
    fill_memory,
    make_ted_db,
    python_env,
    quantile,
    stderr_to,
)
from lessons import LESSONS
from mcp import Client, StdioServerParameters

ATTEMPT = {
    "library": "bench",
    "task": "A train covers 120 km in 1.5 hours. What is its average speed in km/h?",
    "trajectory": "Speed is distance over time [E1]: 120 / 1.5 = 80, checked by 80 × 1.5 = 120 [E4].\nAnswer: 80",
    "answer": "80",
    "ground_truth": "80",
}


def make_targets(workdir: Path, modes: list[str]) -> list[Target]:
    targets = []
    for mode in modes:
        db = workdir / f"ted-{mode}.db"
        shutil.copy(workdir / "ted.db", db)
        ted = StdioServerParameters(command=str(Path(sys.executable).parent / "ted-mcp"), args=["--db", str(db)])
        targets.append(Target("ted", "ted-mcp", mode, ted, "record_attempt", ATTEMPT))
        memory = StdioServerParameters(
            command=str(MEMORY_BIN), env={"MEMORY_FILE_PATH": str(workdir / f"memory-{mode}.jsonl")}
        )
        observation = {"observations": [{"entityName": LESSONS[0][0], "contents": ["An attempt at a speed problem."]}]}
        targets.append(Target("memory", "memory (node)", mode, memory, "add_observations", observation))
        bare = StdioServerParameters(command=sys.executable, args=[str(BARE_SERVER)], env=python_env())
        targets.append(Target("ping", "bare SDK: ping", mode, bare, "ping", {}))
    return targets


async def run(workdir: Path, targets: list[Target], calls: int, warmup: int) -> None:
    async with AsyncExitStack() as stack:
        for target in targets:
            with stderr_to(workdir / "servers.log"):
                target.client = await stack.enter_async_context(Client(target.params, mode=target.mode))
            if target.kind == "memory":
                await fill_memory(target.client)
        await anyio.sleep(1.5)
        for _ in range(warmup):
            for target in targets:
                await target.call()
        for i in range(calls):
            k = i % len(targets)
            for target in targets[k:] + targets[:k]:
                elapsed, _ = await target.call()
                target.samples.append(elapsed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--modes", default="auto,legacy")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ted-record-") as tmp:
        workdir = Path(tmp)
        anyio.run(make_ted_db, workdir / "ted.db")
        targets = make_targets(workdir, args.modes.split(","))
        anyio.run(run, workdir, targets, args.calls, args.warmup)
    print(f"tools/call round trip over stdio, ms ({args.calls} calls each after {args.warmup} warm-up rounds)")
    for mode in args.modes.split(","):
        here = {t.kind: t for t in targets if t.mode == mode}
        for target in here.values():
            ms = [s * 1e3 for s in target.samples]
            p50, p90 = quantile(ms, 0.5), quantile(ms, 0.9)
            print(f"  {mode:<7} {target.name:<16} {target.tool:<17} p50 {p50:6.2f}  p90 {p90:6.2f}")
        ted, memory = (statistics.median(here[k].samples) for k in ("ted", "memory"))
        print(f"  {mode:<7} ratio record_attempt / add_observations p50: {ted / memory:.2f} (target <= 1.2)")


if __name__ == "__main__":
    main()
