"""Where ted-mcp's time goes in one `get_experiences` call, layer by layer.

    /tmp/venv/bin/python bench/profile_server.py [--calls 1000] [--mode legacy] [--tree]

Uses the 15-lesson "bench" library of `get_experiences_latency.py`. Three parts:

1. **Layers, in process** (no stdio): the median cost of each layer on its own — the two SELECTs
   through sqlite3 and through `Store.read`, `Store.experience_prompt`, the SDK's result
   conversion (`FuncMetadata.convert_result`: the indented-JSON text block plus the structured
   dump), the client's JSON-Schema check of the structured output, and the in-memory
   `Client.call_tool` in both modes.
2. **Over stdio, timed inside both processes**: the server (this file run with `--serve`: ted-mcp's
   own entry point, its server plus a control tool) wraps the stages of a request in
   perf_counter timers: parse the request line, run the tool (store, its one trip to a reader thread
   included), convert the result, shape it for the wire (`ServerRunner._serialize`), dump the
   JSON-RPC response, write and flush stdout; the rest of the server's time is SDK dispatch.
   The client times the round trip, its parse of the reply line and its schema check.
3. **cProfile of the server over stdio**: CPU time of the main thread per call, grouped by area
   (ted, sqlite3, pydantic, MCP SDK, event loop, logging, ...), and the top functions.
   Worker threads (the store's, anyio's stdin/stdout readers) are not profiled: their cost
   shows as waiting. `--tree` adds a pyinstrument call tree of the server.

It prints figures and asserts nothing about time. Runs in ~30 s. PYTHONPATH is passed on to the
server, as in `get_experiences_latency.py`, so a scratch copy of ted/ can be profiled.
"""

import argparse
import cProfile
import functools
import json
import pstats
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

# ---- the server side (--serve) -------------------------------------------------------------

STAGES = ("parse", "tool", "convert", "serialize", "dump_json", "write", "flush")


class Timers:
    """Per-request wall-clock stage times; requests are sequential, so one record at a time.

    A record opens when a request line is parsed and closes when its JSON-RPC response is
    dumped; the write and flush that follow are added to the record just closed.
    """

    def __init__(self) -> None:
        self.on = False
        self.current: dict[str, float] = {}
        self.done: list[dict[str, float]] = []

    def add(self, stage: str, seconds: float) -> None:
        if not self.on:
            return
        if stage in ("write", "flush") and self.done:
            record = self.done[-1]
            record[stage] = record.get(stage, 0.0) + seconds
            record["total"] = record.get("total", 0.0) + seconds
        else:
            self.current[stage] = self.current.get(stage, 0.0) + seconds

    def close(self) -> None:
        if self.on and "_start" in self.current:
            self.current["total"] = time.perf_counter() - self.current.pop("_start")
            self.done.append(self.current)
        self.current = {}


def timed(timers: Timers, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            timers.add(stage, time.perf_counter() - start)

    return wrapper


def timed_async(timers: Timers, stage: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            timers.add(stage, time.perf_counter() - start)

    return wrapper


def instrument_server(timers: Timers) -> None:
    import anyio._core._fileio as fileio
    import mcp_types
    from mcp.server.mcpserver.utilities.func_metadata import FuncMetadata
    from mcp.server.runner import ServerRunner

    adapter = mcp_types.jsonrpc_message_adapter

    class ParseTimer:
        """Stands in for the JSON-RPC TypeAdapter the stdio transport parses each line with."""

        def validate_json(self, *args: Any, **kwargs: Any) -> Any:
            if timers.on:
                timers.current = {"_start": time.perf_counter()}
            return timed(timers, "parse", adapter.validate_json)(*args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(adapter, name)

    mcp_types.jsonrpc_message_adapter = ParseTimer()  # type: ignore[assignment]
    FuncMetadata.call_fn = timed_async(timers, "tool", FuncMetadata.call_fn)  # type: ignore[method-assign]
    FuncMetadata.convert_result = timed(timers, "convert", FuncMetadata.convert_result)  # type: ignore[method-assign]
    ServerRunner._serialize = timed(timers, "serialize", ServerRunner._serialize)  # type: ignore[method-assign]
    dump_json = timed(timers, "dump_json", mcp_types.JSONRPCResponse.model_dump_json)

    def dump_and_close(self: Any, *args: Any, **kwargs: Any) -> str:
        try:
            return dump_json(self, *args, **kwargs)
        finally:
            timers.close()

    mcp_types.JSONRPCResponse.model_dump_json = dump_and_close  # type: ignore[method-assign]
    # The SDK's stdio transport writes through anyio's thread-backed AsyncFile; ted-mcp's own
    # (ted_server.stdio, when it applies) with one os.write.
    fileio.AsyncFile.write = timed_async(timers, "write", fileio.AsyncFile.write)  # type: ignore[method-assign]
    fileio.AsyncFile.flush = timed_async(timers, "flush", fileio.AsyncFile.flush)  # type: ignore[method-assign]
    try:
        from ted_server.stdio import PipeWriter
    except ImportError:  # a scratch copy from before ted_server.stdio
        return
    PipeWriter.write = timed_async(timers, "write", PipeWriter.write)  # type: ignore[method-assign]
    PipeWriter.flush = timed_async(timers, "flush", PipeWriter.flush)  # type: ignore[method-assign]


AREAS = [  # (area, substrings of a cProfile entry's file or name), first match wins
    ("waiting (epoll: client, worker threads)", ["'poll' of 'select.epoll'"]),
    ("ted (store, library, server)", ["/ted/", "/ted_server/", "/server/app.py", "/scratch/"]),
    ("sqlite3", ["sqlite3"]),
    ("pydantic / pydantic-core", ["pydantic"]),
    ("opentelemetry", ["opentelemetry"]),
    ("logging", ["logging"]),
    ("MCP SDK", ["/mcp/", "/mcp_types/"]),
    ("event loop, anyio, threads", ["asyncio", "anyio", "selectors", "threading", "queue", "concurrent", "sniffio"]),
    ("json (stdlib)", ["json/"]),
]


def area(key: tuple[str, int, str]) -> str:
    text = f"{key[0]}:{key[2]}"
    for name, needles in AREAS:
        if any(n in text for n in needles):
            return name
    return "other (builtins, contextvars, ...)"


def profile_summary(profile: cProfile.Profile, calls: int) -> dict[str, Any]:
    stats = pstats.Stats(profile)
    raw: dict[tuple[str, int, str], Any] = stats.stats  # type: ignore[attr-defined]
    by_area: dict[str, float] = defaultdict(float)
    for key, (_, _, tottime, _, _) in raw.items():
        by_area[area(key)] += tottime
    top = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:25]
    return {
        "areas": {k: v / calls for k, v in by_area.items()},
        "top": [
            {
                "function": f"{Path(k[0]).name}:{k[1]}({k[2]})",
                "area": area(k),
                "tottime": v[2] / calls,
                "ncalls": v[1] / calls,
            }
            for k, v in top
        ],
    }


def add_control_tool(mcp: Any, timers: Timers) -> None:
    state: dict[str, Any] = {}

    @mcp.tool(name="_bench")
    async def bench_control(action: str, calls: int = 0) -> str:
        """Control the instrumentation: timers-start/stop, profile-start/stop, tree-start/stop."""
        if action == "timers-start":
            timers.done.clear()
            timers.on = True
        elif action == "timers-stop":
            timers.on = False
            return json.dumps(timers.done)
        elif action == "profile-start":
            state["profile"] = cProfile.Profile()
            state["profile"].enable()
        elif action == "profile-stop":
            state["profile"].disable()
            return json.dumps(profile_summary(state["profile"], calls))
        elif action == "tree-start":
            from pyinstrument import Profiler

            state["tree"] = Profiler(interval=0.0002, async_mode="disabled")
            state["tree"].start()
        elif action == "tree-stop":
            state["tree"].stop()
            return state["tree"].output_text(unicode=False, color=False, show_all=False)
        return "ok"


def serve(db: str) -> None:
    """Run ted-mcp's own entry point (its stdio transport included), instrumented."""
    import ted_server.__main__ as entry

    timers = Timers()
    instrument_server(timers)
    build_server = entry.build_server

    def build_with_control(*args: Any, **kwargs: Any) -> Any:
        mcp = build_server(*args, **kwargs)
        add_control_tool(mcp, timers)
        return mcp

    entry.build_server = build_with_control  # type: ignore[assignment]
    entry.main(["--db", db])


# ---- the driver --------------------------------------------------------------------------


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}"


async def median_time(fn: Callable[[], Awaitable[Any]], n: int) -> float:
    for _ in range(max(20, n // 10)):
        await fn()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


async def layers(db: Path, n: int) -> list[tuple[str, float, str]]:
    import sqlite3

    from mcp import Client

    from ted.store import Store
    from ted_server.app import build_server

    rows: list[tuple[str, float, str]] = []
    lib_sql = "SELECT * FROM libraries WHERE name = ?"
    exp_sql = "SELECT * FROM experiences WHERE library_id = ? AND state = 'active' ORDER BY ordinal"
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row

    async def sync_queries() -> None:
        library = con.execute(lib_sql, ("bench",)).fetchone()
        con.execute(exp_sql, (library["id"],)).fetchall()

    rows.append(("sqlite3, the 2 SELECTs, same thread", await median_time(sync_queries, n), "floor of the store"))
    con.close()

    async with Store.open(db) as store:

        def queries(conn: sqlite3.Connection) -> None:
            library = conn.execute(lib_sql, ("bench",)).fetchone()
            conn.execute(exp_sql, (library["id"],)).fetchall()

        rows.append(
            (
                "Store.read, the same 2 SELECTs in one trip",
                await median_time(lambda: store.read(queries), n),
                "one hop to a reader thread",
            )
        )
        rows.append(
            (
                "Store.experience_prompt",
                await median_time(lambda: store.experience_prompt("bench"), n),
                "the tool's own work: its reads and models",
            )
        )
        prompt = await store.experience_prompt("bench")

    mcp = build_server(db)
    tool = mcp._tool_manager.get_tool("get_experiences")
    assert tool is not None

    async def convert() -> None:
        tool.fn_metadata.convert_result(prompt)

    rows.append(
        ("FuncMetadata.convert_result (SDK)", await median_time(convert, n), "indent=2 JSON text + structured dump")
    )

    async with Client(mcp) as client:
        reply = await client.call_tool("get_experiences", {"library": "bench"})
        check = functools.partial(client.session.validate_tool_result, "get_experiences", reply)
        rows.append(
            ("client: output-schema check of the reply", await median_time(check, n), "jsonschema in the Python client")
        )
    for mode, note in (("auto", "direct dispatch"), ("legacy", "JSON-RPC objects over memory streams")):
        async with Client(mcp, mode=mode) as client:
            call = functools.partial(client.call_tool, "get_experiences", {"library": "bench"})
            rows.append((f"in-memory Client.call_tool, mode={mode}", await median_time(call, n), note))
    return rows


async def over_stdio(db: Path, calls: int, mode: str, tree: bool) -> dict[str, Any]:
    import os

    import mcp.client.stdio as client_stdio
    from mcp import Client, StdioServerParameters
    from mcp.client.session import ClientSession

    timers = Timers()
    client_stdio._parse_line = timed(timers, "client: parse reply line", client_stdio._parse_line)
    ClientSession.validate_tool_result = timed_async(  # type: ignore[method-assign]
        timers, "client: output-schema check", ClientSession.validate_tool_result
    )
    env = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else None
    params = StdioServerParameters(command=sys.executable, args=[__file__, "--serve", str(db)], env=env)
    args = {"library": "bench"}
    out: dict[str, Any] = {}
    async with Client(params, mode=mode) as client:

        async def control(action: str) -> str:
            reply = await client.call_tool("_bench", {"action": action, "calls": calls})
            return reply.structured_content["result"]

        for _ in range(100):
            await client.call_tool("get_experiences", args)
        await anyio.sleep(1.0)  # let the lifespan's background import finish

        await control("timers-start")
        round_trips = []
        for _ in range(calls):
            timers.on, timers.current = True, {}
            start = time.perf_counter()
            await client.call_tool("get_experiences", args)
            round_trips.append(time.perf_counter() - start)
            timers.on = False
            timers.done.append(timers.current)
        server = json.loads(await control("timers-stop"))
        out["round_trip"] = statistics.median(round_trips)
        out["server"] = {s: statistics.median(r.get(s, 0.0) for r in server) for s in (*STAGES, "total")}
        out["client"] = {s: statistics.median(r.get(s, 0.0) for r in timers.done) for s in timers.done[0]}

        await control("profile-start")
        for _ in range(calls):
            await client.call_tool("get_experiences", args)
        out["profile"] = json.loads(await control("profile-stop"))
        if tree:
            await control("tree-start")
            for _ in range(calls):
                await client.call_tool("get_experiences", args)
            out["tree"] = await control("tree-stop")
    return out


def report(layer_rows: list[tuple[str, float, str]], stdio: dict[str, Any], mode: str, calls: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 130))
    table = Table(title="1. Layers in process (median µs per call)")
    table.add_column("layer")
    table.add_column("µs", justify="right")
    table.add_column("what it adds")
    for name, seconds, note in layer_rows:
        table.add_row(name, us(seconds), note)
    console.print(table)

    server = stdio["server"]
    named = {
        "parse": "parse the request line (pydantic)",
        "tool": "tool function: ted + its store trip",
        "convert": "convert_result: JSON text + structured dump",
        "serialize": "ServerRunner._serialize: wire shape, per-version check",
        "dump_json": "JSONRPCResponse.model_dump_json",
        "write": "stdout write (SDK transport: an anyio worker thread; ted's: os.write)",
        "flush": "stdout flush (SDK transport: an anyio worker thread; ted's: nothing to do)",
    }
    table = Table(title=f"2. Over stdio, mode={mode}: median µs per call ({calls} calls)")
    table.add_column("where")
    table.add_column("µs", justify="right")
    table.add_row("[bold]client round trip", us(stdio["round_trip"]))
    for stage, seconds in stdio["client"].items():
        table.add_row(f"  {stage}", us(seconds))
    table.add_row("[bold]server: request line parsed → response flushed", us(server["total"]))
    for stage in STAGES:
        table.add_row(f"  {named[stage]}", us(server[stage]))
    rest = server["total"] - sum(server[s] for s in STAGES)
    table.add_row("  SDK dispatch (the rest: runner, middleware, context, streams)", us(rest))
    other = stdio["round_trip"] - server["total"] - sum(stdio["client"].values())
    table.add_row("[bold]client SDK + pipes + reading stdin (the rest)", us(other))
    console.print(table)

    profile = stdio["profile"]
    table = Table(title="3. cProfile of the server's main thread over stdio: CPU µs per call by area")
    table.add_column("area")
    table.add_column("µs", justify="right")
    areas = {name: 0.0 for name, _ in AREAS} | {"other (builtins, contextvars, ...)": 0.0} | profile["areas"]
    for name, seconds in sorted(areas.items(), key=lambda kv: -kv[1]):
        table.add_row(name, us(seconds))
    console.print(table)
    table = Table(title="   top functions by own time (µs per call; cProfile inflates Python-heavy code)")
    for column in ("function", "area", "µs", "calls"):
        table.add_column(column, justify="right" if column in ("µs", "calls") else "left")
    for row in profile["top"][:20]:
        table.add_row(row["function"][:90], row["area"], us(row["tottime"]), f"{row['ncalls']:.0f}")
    console.print(table)
    if "tree" in stdio:
        console.print(stdio["tree"], markup=False, highlight=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls per measurement (default 1000)")
    parser.add_argument("--mode", default="legacy", help="Client mode for the stdio part (default legacy)")
    parser.add_argument("--tree", action="store_true", help="add a pyinstrument call tree of the server")
    parser.add_argument("--serve", metavar="DB", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from get_experiences_latency import make_ted_db

    with tempfile.TemporaryDirectory(prefix="ted-profile-") as tmp:
        db = Path(tmp) / "ted.db"
        anyio.run(make_ted_db, db)
        layer_rows = anyio.run(layers, db, args.calls)
        stdio = anyio.run(over_stdio, db, args.calls, args.mode, args.tree)
    report(layer_rows, stdio, args.mode, args.calls)


if __name__ == "__main__":
    main()
