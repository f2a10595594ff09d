"""The README's first screen: the two commands a newcomer types, run as typed on a copy of the
repository, with the machine's own Python made to refuse installs outside a virtual environment
(`PIP_REQUIRE_VIRTUALENV`, what a system Python that is "externally managed" does), and CI
running the same test command."""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = "python3 -m venv .venv && . .venv/bin/activate && "
# What a copy of the repository leaves out: what a clone does not have, or this run made.
NOT_COPIED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "node_modules",
    "__pycache__",
    "*.egg-info",
    "build",
    "dist",
    ".pytest_cache",
    ".hypothesis",
    "ted-reports",
    "results",
)


def first_screen_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.*?)\n```", text[: text.index("\n## ")], re.DOTALL)


def test_the_first_screen_holds_the_two_commands_each_in_a_virtual_environment():
    server, tests = first_screen_commands()
    assert server.startswith(VENV) and server.endswith("pip install . && ted-mcp"), server
    assert tests.startswith(VENV) and tests.endswith("npm ci --no-audit --no-fund && pytest"), tests
    assert "pip install '.[test]'" in tests


def test_ci_runs_the_readme_test_command_verbatim():
    _, tests = first_screen_commands()
    lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip()]
    assert lines[-1] == tests


def newcomer_env(home: Path) -> dict[str, str]:
    """This machine's environment as a newcomer's shell has it: no virtual environment active, no
    ted-mcp settings, pip refusing to install outside a virtual environment, and the user data
    directory (where the database goes by default) inside the test's folder."""
    here = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TED_", "VIRTUAL_ENV", "PYTEST_", "PYTHON"))}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != here)
    return env | {
        "PIP_REQUIRE_VIRTUALENV": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "XDG_DATA_HOME": str(home / "data"),
        "npm_config_prefer_offline": "true",  # the packages npm ci wants are in its cache already
        "npm_config_update_notifier": "false",
    }


def json_reply(proc: subprocess.Popen, request_id: int, timeout: float) -> dict:
    """The JSON-RPC reply with `request_id`; the lines before it are pip's and venv's output."""
    found: list[dict] = []

    def read() -> None:
        for line in proc.stdout:
            if line.startswith("{") and (message := json.loads(line)).get("id") == request_id:
                found.append(message)
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    assert found, f"no reply {request_id} within {timeout} s:\n{proc.stderr.read() if proc.poll() is not None else ''}"
    return found[0]


def send(proc: subprocess.Popen, message: dict) -> None:
    proc.stdin.write(json.dumps(message) + "\n")
    proc.stdin.flush()


@pytest.mark.slow
def test_the_readme_commands_work_on_a_fresh_copy(tmp_path):
    server_command, test_command = first_screen_commands()
    copy = tmp_path / "ted-mcp"
    shutil.copytree(ROOT, copy, ignore=NOT_COPIED)
    env = newcomer_env(tmp_path)
    refused = subprocess.run(
        ["python3", "-m", "pip", "install", "--dry-run", "."], cwd=copy, env=env, capture_output=True, text=True
    )
    assert refused.returncode != 0 and "virtualenv" in refused.stderr.lower()  # as on a managed system Python

    # 1. Install and run the server, then be its client: it serves on its default database.
    proc = subprocess.Popen(
        ["bash", "-c", server_command],
        cwd=copy,
        env=env,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        send(
            proc,
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "newcomer", "version": "1"},
                },
            },
        )
        assert json_reply(proc, 1, timeout=900)["result"]["serverInfo"]["name"] == "ted-mcp"
        send(proc, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        send(
            proc,
            {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "get_experiences", "arguments": {"library": "first"}},
            },
        )
        reply = json_reply(proc, 2, timeout=60)["result"]
        assert reply["isError"] is False and reply["structuredContent"]["version"] == 0
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    assert (copy / ".venv" / "bin" / "ted-mcp").exists()
    assert list((tmp_path / "data").rglob("ted.db")), "the server did not use the default database"

    # 2. Install and run the tests: the same venv, the test extras, npm's packages, pytest (on one
    # file of the suite: the whole of it is what runs this test).
    env["PYTEST_ADDOPTS"] = "-p no:cacheprovider -q tests/test_store.py"
    done = subprocess.run(["bash", "-c", test_command], cwd=copy, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"^\d+ passed", done.stdout.splitlines()[-1]), done.stdout[-500:]
    assert (copy / "node_modules" / "@modelcontextprotocol" / "inspector").is_dir()
