"""ted-mcp's own stdio transport (`ted_server.stdio`), driven over real pipes by raw JSON-RPC lines."""

import importlib
import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import anyio
import pytest
from conftest import installed_command

from ted.store import Store
from ted.store.records import AddOp

pytestmark = pytest.mark.slow

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def line(message: dict) -> bytes:
    return (json.dumps(message) + "\n").encode()


def call(id_: int, tool: str, arguments: dict) -> bytes:
    return line({"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": {"name": tool, "arguments": arguments}})


def read_lines(proc: subprocess.Popen, count: int, timeout: float = 30) -> list[dict]:
    """`count` reply lines, parsed; fails instead of hanging if they do not come."""
    lines: list[bytes] = []

    def read() -> None:
        while len(lines) < count and (got := proc.stdout.readline()):
            lines.append(got)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        proc.kill()
        pytest.fail(f"{len(lines)} of {count} replies within {timeout} s")
    return [json.loads(got) for got in lines]


def start(command: list[str], stderr: Path) -> subprocess.Popen:
    with stderr.open("wb") as err:
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
    proc.stdin.write(line(INITIALIZE))
    proc.stdin.flush()
    assert read_lines(proc, 1)[0]["id"] == 0
    proc.stdin.write(line(INITIALIZED))
    return proc


def test_replies_larger_than_the_pipe_arrive_whole_while_the_client_is_not_reading(db_path, tmp_path):
    async def fill() -> None:
        async with Store.open(db_path) as store:
            await store.configure("big", token_budget=40_000, max_items=100)  # a big library, within its budget
            ops = [AddOp(text=f"Lesson {n}: " + "check each step " * 45) for n in range(100)]
            await store.apply("big", ops, "import", "test")

    anyio.run(fill)
    proc = start([installed_command("ted-mcp"), "--db", str(db_path)], tmp_path / "stderr.txt")
    try:
        # ~150 kB a reply, 20 in flight at once: the pipe (64 kB) fills and the writes must wait,
        # one whole line after another, until the client reads.
        for n in range(1, 21):
            proc.stdin.write(call(n, "get_experiences", {"library": "big"}))
        proc.stdin.flush()
        time.sleep(1)
        replies = read_lines(proc, 20)
        assert sorted(r["id"] for r in replies) == list(range(1, 21))
        assert {len(r["result"]["structuredContent"]["items"]) for r in replies} == {100}
    finally:
        proc.stdin.close()
        returncode = proc.wait(timeout=30)
    assert returncode == 0


def test_a_client_that_stops_reading_leaves_a_server_that_exits_cleanly(db_path, tmp_path):
    proc = start([installed_command("ted-mcp"), "--db", str(db_path)], tmp_path / "stderr.txt")
    proc.stdout.close()
    for n in range(1, 6):
        proc.stdin.write(call(n, "get_experiences", {"library": "gone"}))
    proc.stdin.flush()
    time.sleep(1)  # the replies meet a closed pipe
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0, (tmp_path / "stderr.txt").read_text()


def test_a_handler_printing_cannot_corrupt_the_wire_and_stdout_is_given_back(tmp_path):
    script = tmp_path / "noisy.py"
    script.write_text(
        textwrap.dedent("""
        import anyio
        from mcp.server.mcpserver import MCPServer
        from ted_server.stdio import run_stdio

        mcp = MCPServer("noisy")

        @mcp.tool()
        async def shout() -> str:
            print("stray text from a handler", flush=True)
            return "done"

        anyio.run(run_stdio, mcp)
        print("stdout is ours again", flush=True)
    """)
    )
    proc = start([sys.executable, str(script)], tmp_path / "stderr.txt")
    proc.stdin.write(call(1, "shout", {}))
    proc.stdin.flush()
    (reply,) = read_lines(proc, 1)
    assert reply["result"]["content"][0]["text"] == "done"
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0
    assert proc.stdout.read() == b"stdout is ours again\n"
    assert "stray text from a handler" in (tmp_path / "stderr.txt").read_text()


def test_stdin_from_a_file_is_served_by_the_sdk_transport(db_path, tmp_path):
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(line(INITIALIZE))
    with requests.open("rb") as stdin:
        done = subprocess.run(
            [installed_command("ted-mcp"), "--db", str(db_path)],
            stdin=stdin,
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[0])["result"]["serverInfo"]["name"] == "ted-mcp"


def test_the_sdk_internals_the_transport_relies_on_are_still_there():
    """`ted_server.stdio` serves the SDK's own low-level server on its own streams. MCPServer has no
    public way to do that (its run_stdio_async and the SDK's in-memory client reach the same private
    attribute), so every internal the transport touches is pinned here: an SDK upgrade that moves
    one fails this test rather than silently falling back to the slower transport."""
    import inspect

    import mcp_types
    from mcp.server.mcpserver import MCPServer
    from mcp.shared.message import SessionMessage

    server = MCPServer("contract")._lowlevel_server
    assert list(inspect.signature(server.run).parameters)[:3] == [
        "read_stream",
        "write_stream",
        "initialization_options",
    ]
    assert server.create_initialization_options().server_name == "contract"
    # What the SDK's own stdio transport calls to read a line and to write a message.
    sdk_stdio = inspect.getsource(importlib.import_module("mcp.server.stdio"))
    assert "jsonrpc_message_adapter.validate_json(line, by_name=False)" in sdk_stdio
    assert "model_dump_json(by_alias=True, exclude_unset=True)" in sdk_stdio
    message = mcp_types.jsonrpc_message_adapter.validate_json(line(INITIALIZE).decode(), by_name=False)
    written = SessionMessage(message).message.model_dump_json(by_alias=True, exclude_unset=True)
    assert json.loads(written) == INITIALIZE
