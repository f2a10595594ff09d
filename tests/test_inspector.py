"""The MCP Inspector's CLI, the reference TypeScript client, against the installed `ted-mcp` over stdio.

The Inspector comes from package.json (`npm ci` at the repository root). Its postinstall script
only installs client dependencies in a source checkout and does nothing inside node_modules, so
the CLI works whether or not npm ran it.
"""

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import anyio
import pytest
from conftest import http_server, installed_command

from ted import agent
from ted.store import Store

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
INSPECTOR = "@modelcontextprotocol/inspector"
TIMEOUT_S = 120
CORE_TOOLS = {"get_experiences", "record_attempt", "add_experience", "list_libraries", "rollback_library"}
LESSON = "Write the units of every quantity before combining them."


def inspector_cli(tmp_path: Path, db_path: Path | None, *options: str, expect_exit: int = 0) -> dict:
    """Run `npx --no-install @modelcontextprotocol/inspector --cli OPTIONS -- ted-mcp --db DB`; its JSON.

    With `db_path=None` no server is launched: OPTIONS name one with `--server-url`.
    """
    npx = shutil.which("npx")
    if npx is None:
        pytest.fail("npx is not on PATH: install Node.js (>= 20) with npm, then run `npm ci` at the repository root")
    if not (REPO / "node_modules" / INSPECTOR / "package.json").is_file():
        pytest.fail(f"{INSPECTOR} is not installed: run `npm ci` at the repository root ({REPO})")
    command = [npx, "--no-install", INSPECTOR, "--cli", *options, "--format", "json"]
    if db_path is not None:
        command += ["--", installed_command("ted-mcp"), "--db", str(db_path)]
    state = tmp_path / "inspector"
    env = {
        **os.environ,
        # Never reach a registry: with the package missing npx would otherwise go looking for it.
        "NPM_CONFIG_OFFLINE": "true",
        "NPM_CONFIG_UPDATE_NOTIFIER": "false",
        # A headless machine has no keyring; keep every file the Inspector writes in this test's directory.
        "MCP_INSPECTOR_SECRET_STORE": "memory",
        "MCP_STORAGE_DIR": str(state),
        "MCP_CATALOG_PATH": str(state / "mcp.json"),
        "MCP_CLIENT_CONFIG_PATH": str(state / "client.json"),
        "MCP_INSPECTOR_OAUTH_STATE_PATH": str(state / "oauth.json"),
        "NO_COLOR": "1",
    }
    # Its own process group, so a timeout ends npx, node and the ted-mcp they launched together.
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"the Inspector CLI took more than {TIMEOUT_S} s: {' '.join(command)}\n{stderr}")
    assert proc.returncode == expect_exit, f"exit {proc.returncode} from {' '.join(command)}\n{stderr}\n{stdout}"
    # A result goes to stdout; an error envelope ({"error": {"code": ...}}) to stderr.
    return json.loads(stdout)["result"] if expect_exit in (0, 5) else json.loads(stderr.splitlines()[-1])["error"]


def seed(db_path: Path, library: str, text: str) -> None:
    async def add() -> None:
        async with Store.open(db_path) as store:
            await agent.add_experience(store, library, text)

    anyio.run(add)


def test_inspector_lists_the_tools(tmp_path, db_path):
    # --strict makes the Inspector exit 6 if a tool schema has a portability error.
    tools = {t["name"]: t for t in inspector_cli(tmp_path, db_path, "--method", "tools/list", "--strict")["tools"]}
    assert CORE_TOOLS <= tools.keys()
    assert tools["get_experiences"]["annotations"]["readOnlyHint"] is True
    assert tools["rollback_library"]["annotations"]["destructiveHint"] is True
    assert set(tools["rollback_library"]["inputSchema"]["required"]) == {"library", "version"}


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_inspector_reads_the_experience_prompt(tmp_path, db_path, era):
    seed(db_path, "units", LESSON)
    result = inspector_cli(
        tmp_path,
        db_path,
        "--protocol-era",
        era,
        "--method",
        "tools/call",
        "--tool-name",
        "get_experiences",
        "--tool-arg",
        "library=units",
    )
    assert result["isError"] is False
    prompt = result["structuredContent"]
    assert (prompt["library"], prompt["version"]) == ("units", 1)
    assert [(i["id"], i["text"], i["usage_count"]) for i in prompt["items"]] == [("E1", LESSON, 0)]
    assert f"[E1] {LESSON}" in prompt["prompt"]
    # The text block is what a model reads in a client that ignores structured content: the prompt
    # itself, and where the library stands.
    text = result["content"][0]["text"]
    state = f"(library units v1: 1 lesson, {prompt['tokens']} of 4,000 tokens)"
    assert text == f"{prompt['prompt']}\n\n{state}"


def test_inspector_sees_a_refused_argument_as_a_tool_error(tmp_path, db_path):
    # The Inspector exits 5 when a tool answers isError: true.
    result = inspector_cli(
        tmp_path,
        db_path,
        "--method",
        "tools/call",
        "--tool-name",
        "get_experiences",
        "--tool-arg",
        "library=No Caps",
        expect_exit=5,
    )
    assert result["isError"] is True
    assert "^[a-z0-9_-]{1,64}$" in result["content"][0]["text"]


def test_inspector_over_http_with_the_bearer_header(tmp_path, db_path):
    """The header form examples/claude_code.md gives Claude Code, sent by another client."""
    seed(db_path, "units", LESSON)
    with http_server(db_path, env={**os.environ, "TED_HTTP_TOKEN": "s3cret-token"}) as url:
        result = inspector_cli(
            tmp_path,
            None,
            "--server-url",
            url,
            "--header",
            "Authorization: Bearer s3cret-token",
            "--method",
            "tools/call",
            "--tool-name",
            "get_experiences",
            "--tool-arg",
            "library=units",
        )
        assert f"[E1] {LESSON}" in result["structuredContent"]["prompt"]
        # Without the header: refused, and --stored-auth-only keeps the Inspector from starting an OAuth login.
        error = inspector_cli(
            tmp_path, None, "--server-url", url, "--stored-auth-only", "--method", "tools/list", expect_exit=3
        )
        assert error["code"] == "auth_required"
        assert "missing or wrong bearer token" in error["message"]
