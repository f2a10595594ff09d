"""The files in examples/ work as shipped: the Python client runs, and every client config
launches a `ted-mcp` that serves the tools."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import installed_command
from mcp import Client, StdioServerParameters

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CONFIGS = {"claude_desktop_config.json": "mcpServers", "cursor_mcp.json": "mcpServers", "vscode_mcp.json": "servers"}


def run_quickstart(db_path: Path, *extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TED_DB"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart_client.py"), "--db", str(db_path), *extra],
        check=False, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_quickstart_client_grades_and_counts(db_path):
    first = run_quickstart(db_path)
    assert "added E1" in first
    assert re.search(r"^attempt 1 on task t-\w+: correct \(graded by math\)$", first, re.MULTILINE), first
    assert re.search(r"^usage counts: E1=1$", first, re.MULTILINE), first
    assert db_path.exists()

    # The count lives in the database: a second run reuses the lesson and counts it again.
    second = run_quickstart(db_path)
    assert "added" not in second
    assert re.search(r"^attempt 2 on task t-\w+: correct", second, re.MULTILINE), second
    assert re.search(r"^usage counts: E1=2$", second, re.MULTILINE), second


@pytest.mark.slow
def test_quickstart_client_takes_a_library_name(db_path):
    out = run_quickstart(db_path, "--library", "trains")
    assert out.startswith("library 'trains', version 0:")
    assert re.search(r"^usage counts: E1=1$", out, re.MULTILINE), out


def server_entries(name: str) -> dict[str, dict]:
    config = json.loads((EXAMPLES / name).read_text())
    entries = config[CONFIGS[name]]
    assert entries, f"{name} defines no server"
    return entries


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_launches_ted_mcp(name):
    for entry in server_entries(name).values():
        assert entry["command"] == "ted-mcp"
        assert all(isinstance(a, str) for a in entry.get("args", []))
        if name == "vscode_mcp.json":
            assert entry["type"] == "stdio"
        else:
            assert "type" not in entry or entry["type"] == "stdio"


def test_every_json_example_is_checked():
    assert {p.name for p in EXAMPLES.glob("*.json")} == set(CONFIGS)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
async def test_config_serves_the_tools(name, db_path):
    """Launch each entry the way its client would (command, args, env), on a temporary database."""
    for entry in server_entries(name).values():
        env = {**entry.get("env", {}), "TED_DB": str(db_path)}
        params = StdioServerParameters(command=installed_command(entry["command"]), args=entry.get("args", []), env=env)
        async with Client(params) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
        assert {"get_experiences", "record_attempt", "add_experience"} <= tools
    assert db_path.exists()


def claude_commands() -> list[list[str]]:
    text = (EXAMPLES / "claude_code.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.DOTALL)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [shlex.split(line) for line in lines if line.strip().startswith("claude mcp add")]


def test_claude_code_commands():
    commands = claude_commands()
    stdio = [c for c in commands if "stdio" in c]
    http = [c for c in commands if "http" in c]
    assert stdio and http, commands
    for command in stdio:
        assert command[command.index("--") + 1 :] == ["ted-mcp"]
        assert "ted" in command[: command.index("--")]
        # -e/--env is variadic: placed before the name it would swallow it.
        if "--env" in command:
            assert command.index("ted") < command.index("--env")
    for command in http:
        assert command[command.index("http") + 1 : command.index("http") + 6] == [
            "--scope", "user", "ted", "http://127.0.0.1:8765/mcp", "--header",
        ]  # fmt: skip
        assert command[-2:] == ["--header", "Authorization: Bearer $TED_HTTP_TOKEN"]
