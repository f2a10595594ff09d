"""A new user's first call: from a fresh clone to a successful `get_experiences` from a
Claude-Desktop-style configuration, timed step by step.

    python bench/first_call.py [--repo PATH] [--runs 3] [--no-cache]

1. **clone**: `git clone` of the repository (default: this checkout's committed HEAD);
2. **install**: the README's server command without its last step, as typed in a shell with no
   virtual environment active: `python3 -m venv .venv && . .venv/bin/activate && pip install .`
   (pip as this machine has it configured; `--no-cache` turns pip's cache off, as on a machine
   that never installed these packages);
3. **configure**: `ted setup claude-desktop --no-check` from the new environment, which prints the
   entry (absolute `ted-mcp`, `env`) a user pastes into Claude Desktop's configuration;
4. **first call**: the MCP Python SDK's stdio `Client` launches that entry's command with its
   args and env, as Claude Desktop does, and calls `get_experiences` until it answers.

The same first call is timed for the official `@modelcontextprotocol/server-memory` (its
`read_graph`, from node_modules), launched the same way, as the peer: the ratio of step 4 says
what ted-mcp's start costs against a server people already use. Figures are printed; nothing is
asserted. The first two steps dominate, and they depend on the network and pip's cache.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parents[1]
MEMORY_BIN = ROOT / "node_modules" / ".bin" / "mcp-server-memory"


def shell_env() -> dict[str, str]:
    """This machine's shell without the virtual environment this script may run in."""
    here = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TED_", "VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != here)
    return env


def timed(command: str, cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"{command!r} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return time.perf_counter() - started, done.stdout


async def first_call(params: StdioServerParameters, tool: str, arguments: dict) -> float:
    started = time.perf_counter()
    async with Client(params) as client:
        result = await client.call_tool(tool, arguments)
        assert not result.is_error, result.content
    return time.perf_counter() - started


def one_run(repo: Path, workdir: Path, no_cache: bool) -> dict[str, float]:
    env = shell_env() | {"XDG_DATA_HOME": str(workdir / "data")} | ({"PIP_NO_CACHE_DIR": "1"} if no_cache else {})
    clone = workdir / "ted-mcp"
    figures = {"clone": timed(f"git clone --quiet {repo} {clone}", workdir, env)[0]}
    readme = (clone / "README.md").read_text()
    server_command = readme.split("```sh\n", 1)[1].split("\n```", 1)[0]
    install = server_command.removesuffix(" && ted-mcp")
    figures["install"] = timed(install, clone, env)[0]
    figures["configure"], printed = timed(". .venv/bin/activate && ted setup claude-desktop --no-check", clone, env)
    entry = json.JSONDecoder().raw_decode(printed[printed.index("{") :])[0]["mcpServers"]["ted"]
    # Claude Desktop passes the entry's env and little else (the SDK adds HOME, PATH, …).
    params = StdioServerParameters(command=entry["command"], args=entry["args"], env=entry["env"])
    figures["first call"] = anyio.run(first_call, params, "get_experiences", {"library": "default"})
    if MEMORY_BIN.exists():
        memory = StdioServerParameters(command=str(MEMORY_BIN), env={"MEMORY_FILE_PATH": str(workdir / "m.jsonl")})
        figures["peer first call"] = anyio.run(first_call, memory, "read_graph", {})
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=ROOT, help="the repository to clone (default: this one)")
    parser.add_argument("--runs", type=int, default=1, help="fresh clones to time (default 1)")
    parser.add_argument("--no-cache", action="store_true", help="install without pip's cache")
    options = parser.parse_args()
    runs = []
    for n in range(options.runs):
        with tempfile.TemporaryDirectory(prefix="ted-first-call-") as workdir:
            runs.append(one_run(options.repo, Path(workdir), options.no_cache))
            total = sum(v for k, v in runs[-1].items() if not k.startswith("peer"))
            print(
                f"run {n + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in runs[-1].items()) + f"; total {total:.1f} s"
            )
    medians = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    total = sum(v for k, v in medians.items() if not k.startswith("peer"))
    print("median: " + ", ".join(f"{k} {v:.2f} s" for k, v in medians.items()) + f"; clone to first call {total:.1f} s")
    if "peer first call" in medians:
        print(f"first call, ted-mcp / server-memory: {medians['first call'] / medians['peer first call']:.2f}")


if __name__ == "__main__":
    main()
