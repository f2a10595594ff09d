"""How quickly ted-mcp starts, how much memory it holds idle, and how long its first job takes
to start, each against the bare one-tool server on the same MCP SDK measured in the same run.

    .venv/bin/python bench/start_and_memory.py [--runs 7]

- **cold start**: spawn → initialize → the first `tools/list` reply, over stdio with the SDK's
  `Client`; ted-mcp on a fresh database file each run, the bare server (`bench/bare_server.py`).
- **idle RSS**: the server process's resident memory (VmRSS) once it has answered `tools/list`
  and sat idle for 2 s (ted-mcp's background imports done).
- **first distill_batch**: ted-mcp just started, one `distill_batch` call over 4 inline
  problems against the local model server (`local:` models over the OpenAI SDK): the call's
  round trip. Everything the first job needs that the server did not load at start shows here.

Runs are interleaved (ted, bare, ted, bare …) so load on the machine hits both alike. Prints
min / median / max and the ratio of medians; asserts nothing.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
from get_experiences_latency import stderr_to
from mcp import Client, StdioServerParameters

from ted.testing import ModelServer
from ted.testing.classroom import Classroom, problems

BENCH = Path(__file__).resolve().parent
TED_MCP = Path(sys.executable).parent / "ted-mcp"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def server_pid(command: str) -> int:
    """The newest process whose command line holds `command` (the one just spawned)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                started = (entry / "stat").read_text().split()[21]
            except OSError:
                continue
            if command in cmdline and "start_and_memory" not in cmdline:
                found.append((int(started), int(entry.name)))
    return max(found)[1]


async def start(params: StdioServerParameters, marker: str) -> tuple[float, int]:
    """Seconds from spawn to the first tools/list reply, and the idle RSS in KiB after it."""
    began = time.perf_counter()
    async with Client(params) as client:
        await client.list_tools()
        elapsed = time.perf_counter() - began
        await anyio.sleep(2)
        return elapsed, rss_kib(server_pid(marker))


async def first_distill_batch(db: Path, base_url: str) -> float:
    env = {**os.environ, "TED_OPENAI_COMPATIBLE_BASE_URL": base_url}
    params = StdioServerParameters(command=str(TED_MCP), args=["--db", str(db)], env=env)
    async with Client(params) as client:
        await client.list_tools()
        began = time.perf_counter()
        result = await client.call_tool(
            "distill_batch",
            {"dataset": problems(4), "library": "bench", "student": "local:student", "teacher": "local:teacher"},
        )
        elapsed = time.perf_counter() - began
        assert not result.is_error, result.content
        job = result.structured_content["job"]["id"]
        await client.call_tool("cancel_job", {"job_id": job})
        return elapsed


def line(name: str, values: list[float], unit: str, scale: float = 1.0) -> str:
    v = [x * scale for x in values]
    return f"{name:<34} min {min(v):8.1f}  median {statistics.median(v):8.1f}  max {max(v):8.1f} {unit}"


async def main(runs: int) -> None:
    samples: dict[str, list[float]] = {k: [] for k in ("ted start", "bare start", "ted rss", "bare rss", "distill")}
    with (
        tempfile.TemporaryDirectory(prefix="ted-start-") as tmp,
        ModelServer(Classroom().reply_to_request) as models,
        stderr_to(Path(tmp) / "servers.log"),
    ):
        for run in range(runs):
            db = Path(tmp) / f"ted-{run}.db"
            ted = StdioServerParameters(command=str(TED_MCP), args=["--db", str(db)])
            bare = StdioServerParameters(command=sys.executable, args=[str(BENCH / "bare_server.py")])
            seconds, kib = await start(ted, str(db))
            samples["ted start"].append(seconds)
            samples["ted rss"].append(kib)
            seconds, kib = await start(bare, "bare_server.py")
            samples["bare start"].append(seconds)
            samples["bare rss"].append(kib)
            samples["distill"].append(await first_distill_batch(Path(tmp) / f"job-{run}.db", models.openai_base_url))
    print(f"{runs} runs each, interleaved")
    print(line("cold start ted-mcp (spawn→tools/list)", samples["ted start"], "ms", 1e3))
    print(line("cold start bare SDK server", samples["bare start"], "ms", 1e3))
    print(line("idle RSS ted-mcp", samples["ted rss"], "MiB", 1 / 1024))
    print(line("idle RSS bare SDK server", samples["bare rss"], "MiB", 1 / 1024))
    print(line("first distill_batch after start", samples["distill"], "ms", 1e3))
    med = {k: statistics.median(v) for k, v in samples.items()}
    print(f"ratio cold start ted / bare: {med['ted start'] / med['bare start']:.2f} (target <= 1.15)")
    print(f"ratio idle RSS ted / bare:   {med['ted rss'] / med['bare rss']:.2f} (target <= 1.3)")
    print(f"first distill_batch median:  {med['distill'] * 1e3:.0f} ms (target < 500)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    anyio.run(main, parser.parse_args().runs)
