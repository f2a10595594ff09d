"""Round-trip latency of ted-mcp's `get_experiences` over stdio, against two references.

    /tmp/venv/bin/python bench/get_experiences_latency.py [--calls 300] [--warmup 30] [--modes auto,legacy]
        [--variant NAME=DIR ...]

Servers run side by side, each launched over stdio by the MCP Python SDK's `Client`, once per
client mode (`auto` negotiates the 2026 protocol with a Python server and falls back to the
handshake with the node one; `legacy` forces the handshake everywhere):

- **ted-mcp** — the installed `ted-mcp` command (next to this Python) on a temp SQLite file
  holding a library "bench" of 15 lessons of 40-80 words; call `get_experiences(library="bench")`.
- **memory** — the official `@modelcontextprotocol/server-memory` (node_modules/.bin), with
  MEMORY_FILE_PATH in a temp dir and 15 entities carrying the same lesson texts as observations;
  call `search_nodes(query="lesson")`, which returns all 15 (a payload of similar size).
- **bare SDK** — `bench/bare_server.py`: `ping` returns "pong", the SDK's floor for any call;
  `lessons` returns the same 15 lessons in get_experiences' reply shape from memory, the floor
  for this reply on the SDK's own stdio transport. ted-mcp serves stdio with its own transport
  (`ted_server.stdio`: no worker threads), so it can come in under that floor.

Calls are interleaved (one call to every server in every mode per round, in rotating order), so
drift in CPU speed or background load hits all of them alike; on a small VM the absolute figures
move by ±30% from run to run while the ratios hold. After `--warmup` rounds (and `--settle`
seconds for ted-mcp's background imports), `--calls` rounds are timed with perf_counter around
`call_tool`: p50, p90, p99, mean, the reply's size, the part of the round trip the Python client
spends checking the reply against the tool's output schema (jsonschema), and the ratios of p50
(ted/memory, target <= 1.0). It prints figures and asserts nothing about time. ~25 s.

To measure a changed copy of the code next to the installed one, pass `--variant NAME=DIR`, DIR
holding `ted` and `ted_server` (e.g. symlinks to a scratch copy's ted/ and server/): that ted-mcp
runs with PYTHONPATH=DIR, which wins over the editable install. A PYTHONPATH set for this script
is passed on to the Python servers too.
"""

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from lessons import LESSONS
from mcp import Client, StdioServerParameters
from mcp.client.session import ClientSession
from rich.console import Console
from rich.table import Table

from ted.store import Store
from ted.store.records import AddOp

ROOT = Path(__file__).resolve().parent.parent
MEMORY_BIN = ROOT / "node_modules" / ".bin" / "mcp-server-memory"
BARE_SERVER = Path(__file__).resolve().parent / "bare_server.py"


@dataclass
class Target:
    kind: str  # "ted", "memory", "ping" or "floor" (the bare server's two tools)
    name: str
    mode: str
    params: StdioServerParameters
    tool: str
    arguments: dict[str, Any]
    client: Client | None = None
    protocol: str = ""
    startup_ms: float = 0.0
    reply_bytes: int = 0
    samples: list[float] = field(default_factory=list)
    checks: list[float] = field(default_factory=list)

    async def call(self) -> tuple[float, float]:
        """One round trip: its time, and the part the client spent on the output-schema check."""
        assert self.client is not None
        _check_time[0] = 0.0
        start = time.perf_counter()
        result = await self.client.call_tool(self.tool, self.arguments)
        elapsed = time.perf_counter() - start
        if result.is_error:
            raise RuntimeError(f"{self.name}: {self.tool} failed: {result.content}")
        return elapsed, _check_time[0]


# The Python client checks every structured reply against the tool's output schema (jsonschema);
# time it, to tell what a reply's shape costs the client from what the server costs.
_check_time = [0.0]
_validate_tool_result = ClientSession.validate_tool_result


async def _timed_validate_tool_result(self: ClientSession, name: str, result: Any) -> None:
    start = time.perf_counter()
    try:
        await _validate_tool_result(self, name, result)
    finally:
        _check_time[0] += time.perf_counter() - start


ClientSession.validate_tool_result = _timed_validate_tool_result  # type: ignore[method-assign]


async def make_ted_db(path: Path) -> None:
    async with Store.open(path) as store:
        await store.apply(
            "bench", [AddOp(text=text, provenance={"source": "bench"}) for _, text in LESSONS], "import", "bench data"
        )


def python_env(pythonpath: str | None = None) -> dict[str, str] | None:
    pythonpath = pythonpath or os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": pythonpath} if pythonpath else None


def make_targets(workdir: Path, modes: list[str], variants: dict[str, str]) -> list[Target]:
    ted_mcp = Path(sys.executable).parent / "ted-mcp"
    teds = {"ted-mcp": None, **{f"ted-mcp ({name})": path for name, path in variants.items()}}
    targets = []
    for mode in modes:
        for name, pythonpath in teds.items():
            db = workdir / f"ted-{len(targets)}.db"  # one file each: a variant may migrate its own
            shutil.copy(workdir / "ted.db", db)
            params = StdioServerParameters(command=str(ted_mcp), args=["--db", str(db)], env=python_env(pythonpath))
            targets.append(Target("ted", name, mode, params, "get_experiences", {"library": "bench"}))
        memory_file = str(workdir / f"memory-{mode}.jsonl")
        params = StdioServerParameters(command=str(MEMORY_BIN), env={"MEMORY_FILE_PATH": memory_file})
        targets.append(Target("memory", "memory (node)", mode, params, "search_nodes", {"query": "lesson"}))
        params = StdioServerParameters(command=sys.executable, args=[str(BARE_SERVER)], env=python_env())
        targets.append(Target("ping", "bare SDK: ping", mode, params, "ping", {}))
        targets.append(Target("floor", "bare SDK: lessons", mode, params, "lessons", {}))
    return targets


@contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """Point fd 2 at a file while servers are spawned, so their banners don't litter the table."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "a") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


async def fill_memory(client: Client) -> None:
    created = await client.call_tool(
        "create_entities",
        {
            "entities": [
                # Observations: the lesson's sentences, so the reply carries the same text as ted's.
                {"name": name, "entityType": "lesson", "observations": [s.strip() + "." for s in text.split(". ")]}
                for name, text in LESSONS
            ]
        },
    )
    if created.is_error:
        raise RuntimeError(f"memory: create_entities failed: {created.content}")


async def check_reply(target: Target) -> None:
    """Both stores answer with all 15 lessons; note the reply's size on the wire."""
    assert target.client is not None
    reply = await target.client.call_tool(target.tool, target.arguments)
    target.reply_bytes = len(reply.model_dump_json(by_alias=True, exclude_none=True))
    key = {"ted": "items", "floor": "items", "memory": "entities"}.get(target.kind)
    if key and len(reply.structured_content[key]) != len(LESSONS):
        raise RuntimeError(f"{target.name} returned {len(reply.structured_content[key])} {key}, not {len(LESSONS)}")


async def run(workdir: Path, targets: list[Target], calls: int, warmup: int, settle: float) -> None:
    async with AsyncExitStack() as stack:
        for target in targets:
            start = time.perf_counter()
            with stderr_to(workdir / "servers.log"):
                target.client = await stack.enter_async_context(Client(target.params, mode=target.mode))
            target.startup_ms = (time.perf_counter() - start) * 1e3
            target.protocol = target.client.protocol_version
            if target.kind == "memory":
                await fill_memory(target.client)
        await anyio.sleep(settle)
        for _ in range(warmup):
            for target in targets:
                await target.call()
        for target in targets:
            await check_reply(target)
        for i in range(calls):
            k = i % len(targets)
            for target in targets[k:] + targets[:k]:
                elapsed, check = await target.call()
                target.samples.append(elapsed)
                target.checks.append(check)


def quantile(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[round(q * 100) - 1]


def p50(target: Target) -> float:
    return statistics.median(target.samples) * 1e3


def node_version() -> str:
    node = shutil.which("node")
    if node is None:
        return "not found"
    return subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()


def environment() -> dict[str, str]:
    memory_pkg = json.loads((ROOT / "node_modules/@modelcontextprotocol/server-memory/package.json").read_text())
    node_sdk = json.loads((ROOT / "node_modules/@modelcontextprotocol/sdk/package.json").read_text())
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "mcp (Python SDK)": importlib.metadata.version("mcp"),
        "pydantic": importlib.metadata.version("pydantic"),
        "ted-mcp": importlib.metadata.version("ted-mcp"),
        "node": node_version(),
        "server-memory": f"{memory_pkg['version']} (TS SDK {node_sdk['version']})",
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}, {os.cpu_count()} CPUs",
    }


def report(console: Console, targets: list[Target], calls: int, warmup: int) -> None:
    env = Table(title="Environment", show_header=False)
    for key, value in environment().items():
        env.add_row(key, value)
    console.print(env)

    table = Table(title=f"tools/call round trip over stdio, ms ({calls} calls each after {warmup} warm-up rounds)")
    columns = [
        "client mode",
        "server",
        "tool",
        "protocol",
        "p50",
        "p90",
        "p99",
        "mean",
        "client check p50",
        "reply bytes",
        "start-up",
    ]
    for column in columns:
        table.add_column(column, justify="left" if column in columns[:4] else "right")
    modes = list(dict.fromkeys(t.mode for t in targets))
    for mode in modes:
        for target in (t for t in targets if t.mode == mode):
            ms = [s * 1e3 for s in target.samples]
            table.add_row(
                mode,
                target.name,
                target.tool,
                target.protocol,
                f"{quantile(ms, 0.5):.2f}",
                f"{quantile(ms, 0.9):.2f}",
                f"{quantile(ms, 0.99):.2f}",
                f"{statistics.fmean(ms):.2f}",
                f"{statistics.median(target.checks) * 1e3:.2f}",
                f"{target.reply_bytes:,}",
                f"{target.startup_ms:.0f}",
            )
        table.add_section()
    console.print(table)

    ratios = Table(title="Ratios of p50 (ted / memory: target <= 1.0)")
    columns = ["client mode", "server", "ted / memory", "floor / memory", "ted - floor", "ping / memory"]
    for column in columns:
        ratios.add_column(column, justify="left" if column in columns[:2] else "right")
    for mode in modes:
        here = {t.kind: t for t in targets if t.mode == mode and t.kind != "ted"}
        memory, floor, ping = p50(here["memory"]), p50(here["floor"]), p50(here["ping"])
        for ted in (t for t in targets if t.mode == mode and t.kind == "ted"):
            colour = "green" if p50(ted) <= memory else "red"
            ratios.add_row(
                mode,
                ted.name,
                f"[{colour}]{p50(ted) / memory:.2f}",
                f"{floor / memory:.2f}",
                f"{p50(ted) - floor:+.2f} ms",
                f"{ping / memory:.2f}",
            )
    console.print(ratios)
    console.print(
        "floor: the bare SDK server returning the same 15-lesson reply from memory (`lessons`), the least a "
        "Python server on the SDK's own stdio transport pays for this reply; ted - floor: what ted-mcp adds to it "
        "(below zero: its own transport saves more than its store costs). "
        "client check: the Python client's jsonschema check of the reply, inside the round trip."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="timed calls per server and mode (default 300)")
    parser.add_argument("--warmup", type=int, default=30, help="untimed rounds first (default 30)")
    parser.add_argument("--modes", default="auto,legacy", help="Client modes, comma-separated (default auto,legacy)")
    parser.add_argument("--settle", type=float, default=1.5, help="seconds to wait after start-up (default 1.5)")
    parser.add_argument(
        "--variant", action="append", default=[], metavar="NAME=DIR", help="also run ted-mcp with PYTHONPATH=DIR"
    )
    args = parser.parse_args(argv)
    if not MEMORY_BIN.exists():
        parser.exit(2, f"{MEMORY_BIN} is missing: run `npm ci` in {ROOT}.\n")
    variants = dict(v.split("=", 1) for v in args.variant)

    console = Console(width=max(Console().width, 150))
    with tempfile.TemporaryDirectory(prefix="ted-bench-") as tmp:
        workdir = Path(tmp)
        anyio.run(make_ted_db, workdir / "ted.db")
        targets = make_targets(workdir, args.modes.split(","), variants)
        try:
            with console.status(f"{len(targets)} servers, {args.calls} calls each"):
                anyio.run(run, workdir, targets, args.calls, args.warmup, args.settle)
        except Exception:
            log = workdir / "servers.log"
            if log.exists():
                sys.stderr.write("--- servers' stderr ---\n" + log.read_text()[-4000:])
            raise
    report(console, targets, args.calls, args.warmup)


if __name__ == "__main__":
    main()
