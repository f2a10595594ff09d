"""`ted setup CLIENT`: the entry a desktop client needs, with the absolute path of this ted-mcp and
the chosen models in its env, and a check that calls each model through the real SDK against the
local model server. The printed entry is then launched as the client would, with the SDK's stdio
client, and a critique goes through its teacher."""

import json
import os
import shlex
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from ted import cli
from ted.testing import ModelServer, Reply
from ted.testing.classroom import Classroom

pytestmark = pytest.mark.anyio

MODEL_ENV = ("TED_", "ANTHROPIC_", "OPENAI_", "OPENROUTER_")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in [k for k in os.environ if k.startswith(MODEL_ENV)]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TED_DB", str(tmp_path / "from-env.db"))


async def setup(capsys, *args: str) -> tuple[int, str, str]:
    code = await cli.run(["setup", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def entry(out: str, key: str = "mcpServers") -> dict:
    start = out.index("{")
    config, _ = json.JSONDecoder().raw_decode(out[start:])
    return config[key]["ted"]


async def test_the_entry_names_this_ted_mcp_and_the_models_and_the_check_calls_them(capsys, monkeypatch, tmp_path):
    with ModelServer(["ready"] * 4) as server:
        monkeypatch.setenv("TED_OPENAI_COMPATIBLE_BASE_URL", server.openai_base_url)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.anthropic_base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-my-shell")
        code, out, err = await setup(
            capsys, "claude-desktop", "--teacher", "anthropic:claude-sonnet-4-6", "--student", "local:qwen3:8b"
        )
        assert code == 0, err
        ted = entry(out)
        command = Path(ted["command"])
        assert command.is_absolute() and command.name == "ted-mcp" and os.access(command, os.X_OK)
        assert ted["env"] == {
            "TED_DB": str(tmp_path / "from-env.db"),
            "TED_TEACHER": "anthropic:claude-sonnet-4-6",
            "TED_STUDENT": "local:qwen3:8b",
            "ANTHROPIC_API_KEY": "paste your ANTHROPIC_API_KEY here",  # never printed unless asked
            "ANTHROPIC_BASE_URL": server.anthropic_base_url,
            "TED_OPENAI_COMPATIBLE_BASE_URL": server.openai_base_url,
        }
        assert "claude_desktop_config.json" in out
        assert "✓ teacher anthropic:claude-sonnet-4-6 answered" in out and "✓ student local:qwen3:8b answered" in out
        assert [(r.api, r.body["model"]) for r in server.requests] == [
            ("anthropic", "claude-sonnet-4-6"),
            ("openai", "qwen3:8b"),
        ]
        assert server.requests[0].api_key == "sk-ant-from-my-shell"

        code, out, _ = await setup(capsys, "vscode", "--teacher", "anthropic:claude-sonnet-4-6", "--include-keys")
        vscode = entry(out, "servers")
        assert vscode["type"] == "stdio" and vscode["env"]["ANTHROPIC_API_KEY"] == "sk-ant-from-my-shell"


async def test_what_does_not_answer_is_named_and_fails_the_command(capsys, monkeypatch):
    with ModelServer([Reply.error(401)] * 8) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
        code, out, err = await setup(
            capsys, "cursor", "--teacher", "openai:gpt-4.1", "--student", "anthropic:claude-haiku-4-5"
        )
    assert code == 1
    assert "✗ teacher openai:gpt-4.1:" in out and "401" in out
    assert (
        "✗ student anthropic:claude-haiku-4-5: No API key for anthropic:claude-haiku-4-5: set the ANTHROPIC_API_KEY"
        in " ".join(out.split())
    )
    assert err.startswith("ted: 2 of 2 models did not answer")
    assert entry(out)["env"]["TED_TEACHER"] == "openai:gpt-4.1"  # the entry is printed all the same


async def test_without_a_teacher_it_says_what_will_not_work(capsys):
    code, out, _ = await setup(capsys, "claude-desktop")
    assert code == 0
    assert set(entry(out)["env"]) == {"TED_DB"}
    assert "No teacher given" in " ".join(out.split())
    code, _, err = await setup(capsys, "claude-desktop", "--teacher", "gpt-4.1")
    assert code == 1 and "is not `provider:model`" in err


async def test_claude_code_gets_a_command_it_can_run(capsys, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-x")
    code, out, _ = await setup(
        capsys, "claude-code", "--teacher", "anthropic:claude-sonnet-4-6", "--include-keys", "--no-check"
    )
    assert code == 0
    [line] = [line for line in out.splitlines() if line.startswith("claude mcp add")]
    words = shlex.split(line)
    assert words[: words.index("--env")] == ["claude", "mcp", "add", "--transport", "stdio", "--scope", "user", "ted"]
    assert "TED_TEACHER=anthropic:claude-sonnet-4-6" in words and "ANTHROPIC_API_KEY=sk-ant-x" in words
    assert Path(words[-1]).name == "ted-mcp" and words[-2] == "--"


@pytest.mark.slow
async def test_the_printed_entry_launches_a_server_whose_teacher_critiques(capsys, monkeypatch, tmp_path):
    """The whole point: a client that launches the entry as printed (its command, args and env,
    nothing from this shell) gets a server whose request_critique reaches the teacher."""
    with ModelServer(Classroom().reply_to_request) as server:
        monkeypatch.setenv("TED_OPENAI_COMPATIBLE_BASE_URL", server.openai_base_url)
        code, out, err = await setup(capsys, "claude-desktop", "--teacher", "local:teacher", "--no-check")
        assert code == 0, err
        ted = entry(out)
        params = StdioServerParameters(command=ted["command"], args=ted["args"], env=ted["env"])
        async with Client(params) as client:
            attempt = await client.call_tool(
                "record_attempt",
                {
                    "library": "arith",
                    "task": "What is 40 - 6?",
                    "trajectory": "40 - 6 = 36",
                    "answer": 36,
                    "ground_truth": 34,
                },
            )
            critique = await client.call_tool(
                "request_critique", {"library": "arith", "task_id": attempt.structured_content["task_id"]}
            )
        assert not critique.is_error, critique.content[0].text
        assert [op["op"] for op in critique.structured_content["operations"]] == ["add"]
