"""The files in examples/ work as shipped: the Python clients run, every client config
launches a `ted-mcp` that serves the tools, and the GSM8K recipe's commands are real."""

import importlib.util
import json
import os
import re
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import http_server, installed_command
from mcp import Client, StdioServerParameters

from ted import cli as ted_cli
from ted.llm.registry import split_name
from ted.testing import ModelServer
from ted.testing.classroom import Classroom
from ted.testing.classroom import problems as classroom_problems

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CONFIGS = {"claude_desktop_config.json": "mcpServers", "cursor_mcp.json": "mcpServers", "vscode_mcp.json": "servers"}


def run_quickstart(db_path: Path, *extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TED_DB"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart_client.py"), "--db", str(db_path), *extra],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
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
        # Clients pass no shell environment: the teacher, the student and the key are in the entry.
        env = entry["env"]
        assert {"TED_TEACHER", "TED_STUDENT", "ANTHROPIC_API_KEY"} <= set(env), env
        for role in ("TED_TEACHER", "TED_STUDENT"):
            split_name(env[role])


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
            "--scope",
            "user",
            "ted",
            "http://127.0.0.1:8765/mcp",
            "--header",
        ]
        assert command[-2:] == ["--header", "Authorization: Bearer $TED_HTTP_TOKEN"]


# ---- agent_loop.py, distill_client.py and the GSM8K recipe ----------------------------------
# The examples run as real subprocesses against the installed `ted-mcp` and a local model
# server whose classroom script plays student and teacher: students get subtraction and
# multiplication wrong until the library holds a lesson for them, so learning is visible.

MODEL_ENV = ("TED_", "ANTHROPIC_", "OPENAI_", "OPENROUTER_")
AGENT_MODEL = "agent"  # the model name agent_loop.py sends; the classroom answers it as the student


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def model_server():
    # The classroom tells a student by its request asking for no reply schema: the agent's
    # requests (its own system prompt) are answered as the distillation's student's are.
    with ModelServer(Classroom().reply_to_request) as server:
        yield server


@pytest.fixture
def problems_file(tmp_path: Path) -> Path:
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in classroom_problems(6)))
    return path


def example_env(server: ModelServer, db: Path, **extra: str) -> dict[str, str]:
    """The test's environment without any real key or model setting, pointed at the local server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(MODEL_ENV)}
    return env | {
        "TED_DB": str(db),
        "TED_TEACHER": "local:teacher",
        "TED_STUDENT": "local:student",
        "TED_OPENAI_COMPATIBLE_BASE_URL": server.openai_base_url,
        "TED_DATA_DIRS": str(db.parent),  # where the tests write their datasets
        **extra,
    }


def run_example(name: str, args: list[str], env: dict[str, str], timeout: float = 60) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=timeout, env=env
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def query(db: Path, sql: str, *params) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.mark.slow
def test_agent_loop_learns_through_the_tools(model_server, problems_file, tmp_path):
    """Both providers' SDKs, at once (each run takes seconds of imports): get → solve → record → critique."""
    runs = {}
    for provider in ("openai", "anthropic"):
        db = tmp_path / f"{provider}.db"
        sdk_env = {
            "OPENAI_BASE_URL": model_server.openai_base_url,
            "OPENAI_API_KEY": "sk-test",
            "ANTHROPIC_BASE_URL": model_server.anthropic_base_url,
            "ANTHROPIC_API_KEY": "sk-ant-test",
        }
        env = example_env(model_server, db, **sdk_env)
        args = [
            "--provider",
            provider,
            "--model",
            AGENT_MODEL,
            "--dataset",
            str(problems_file),
            "--limit",
            "6",
            "--library",
            "arith",
        ]
        runs[provider] = (
            db,
            subprocess.Popen(
                [sys.executable, str(EXAMPLES / "agent_loop.py"), *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            ),
        )
    system_prompt = load_example("agent_loop").SYSTEM_PROMPT

    for provider, (db, proc) in runs.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, out + err
        lines = out.splitlines()
        # p0 adds (always right); p1 subtracts and p2 multiplies wrongly, and each critique adds
        # the missing lesson, which the next subtraction (p4) and multiplication (p5) cite.
        assert lines[0] == "[1/6] p0 correct: answer 15 (cited none)", out
        assert lines[1] == "[2/6] p1 wrong: answer 12, expected 11 (cited none) → critique: added E1, library v1", out
        assert lines[2].startswith("[3/6] p2 wrong:") and lines[2].endswith("critique: added E2, library v2"), out
        assert lines[4] == "[5/6] p4 correct: answer 34 (cited E1)", out
        assert lines[5] == "[6/6] p5 correct: answer 517 (cited E2)", out
        assert lines[6] == f"4/6 correct with {provider}:{AGENT_MODEL}; library arith v2: 2 lessons, 139/4000 tokens"

        assert query(db, "SELECT count(*), sum(correct), min(model) FROM attempts") == [(6, 4, f"{provider}:agent")]
        assert query(db, "SELECT id, usage_count FROM experiences WHERE state = 'active' ORDER BY id") == [
            ("E1", 1),
            ("E2", 1),
        ]
        assert query(db, "SELECT count(*) FROM critiques") == [(2,)]
        assert query(db, "SELECT version FROM libraries WHERE name = 'arith'") == [(2,)]

        # The SDK of that provider made the calls, with the lessons before the agent's own instructions.
        asked = [r for r in model_server.requests if r.api == provider and (r.body or {}).get("model") == AGENT_MODEL]
        assert len(asked) == 6
        body = next(r.body for r in asked if "What is 40 - 6?" in r.prompt)
        system = body["system"] if provider == "anthropic" else body["messages"][0]["content"]
        assert system.startswith("## Lessons from earlier attempts") and system.endswith(system_prompt)
        assert "[E1] For subtraction" in system


@pytest.mark.slow
def test_distill_client_follows_a_job_to_the_end(model_server, problems_file, db_path):
    out = run_example(
        "distill_client.py",
        [
            "--dataset",
            str(problems_file),
            "--library",
            "arith",
            "--epochs",
            "2",
            "--rollouts",
            "2",
            "--concurrency",
            "2",
        ],
        example_env(model_server, db_path),
    )
    assert "estimate: 6 problems × 2 epochs × 2 rollouts: at most 24 student and" in out
    job_id = re.search(r"^job (job-\w+) started on library arith, student local:student", out, re.MULTILINE).group(1)
    # Three batches of two problems per epoch. Notifications come at batch ends, but a job that
    # finishes batches faster than the client reads merges them (or ends before the wait), so
    # only their shape is certain: whole batches, in order.
    progress = re.findall(r"^  progress (\d+)/12 problem-epochs: epoch \d/2, library v\d, (\w+)$", out, re.MULTILINE)
    done = [int(d) for d, _ in progress]
    assert done == sorted(done) and set(done) <= {0, 2, 4, 6, 8, 10, 12}, out
    assert f"job {job_id} done: 12/12 problem-epochs" in out
    assert "  epoch 1: rollout accuracy 67% (8/12), 2 critiques, 0 compressions" in out
    assert "  epoch 2: rollout accuracy 100% (12/12), 0 critiques, 0 compressions" in out
    assert "library arith v2: 2 lessons, 139/4000 tokens" in out
    assert re.search(
        r"^cost: 30 model calls, [\d,]+ tokens in / [\d,]+ out, cost unknown \(no price for "
        r"local:student, local:teacher\)$",
        out,
        re.MULTILINE,
    ), out

    assert query(db_path, "SELECT id, state, problems_done FROM jobs") == [(job_id, "done", 12)]
    assert query(db_path, "SELECT version FROM libraries WHERE name = 'arith'") == [(2,)]
    assert query(db_path, "SELECT count(*) FROM experiences WHERE state = 'active'") == [(2,)]
    assert query(db_path, "SELECT count(*) FROM attempts WHERE job_id = ?", job_id) == [(24,)]
    assert query(db_path, "SELECT count(*) FROM model_calls WHERE job_id = ? AND role = 'student'", job_id) == [(24,)]


@pytest.mark.slow
def test_distill_client_cancels_over_http(model_server, problems_file, db_path):
    env = example_env(model_server, db_path)
    with http_server(db_path, env=env) as url:
        # 50 epochs: far more than the job can do before the cancel gets through.
        out = run_example(
            "distill_client.py",
            [
                "--url",
                url,
                "--dataset",
                str(problems_file),
                "--inline",
                "--library",
                "arith",
                "--epochs",
                "50",
                "--rollouts",
                "2",
                "--concurrency",
                "1",
                "--cancel-after",
                "1",
            ],
            env,
        )
        job_id = re.search(r"^job (job-\w+) started", out, re.MULTILINE).group(1)
        assert "cancel requested after 1 s: job cancelled" in out, out
        done = int(
            re.search(
                rf"^job {job_id} cancelled: (\d+)/300 problem-epochs; error: Cancelled on request", out, re.MULTILINE
            ).group(1)
        )
        assert 3 <= done < 300  # p1 and p2, the first wrong ones, were critiqued before the cancel
        assert re.search(r"^  progress \d+/300 problem-epochs: ", out, re.MULTILINE), out

    assert query(db_path, "SELECT state, problems_done, dataset FROM jobs") == [("cancelled", done, "inline")]
    # Every batch applied before the cancel is kept: the two lessons the first epoch taught.
    assert query(db_path, "SELECT count(*) FROM experiences WHERE state = 'active'") == [(2,)]


RECIPE = EXAMPLES / "gsm8k_recipe.md"
STRATEGIES = ("none", "truncate", "random", "teacher")


def recipe_commands() -> list[list[str]]:
    """Every `ted …` line of the recipe's sh blocks, with the loop's $strategy and $JOB filled in."""
    blocks = re.findall(r"```sh\n(.*?)```", RECIPE.read_text(), re.DOTALL)
    lines = [line.strip() for line in "\n".join(blocks).replace("\\\n", " ").splitlines()]
    commands = []
    for line in (line for line in lines if line.startswith("ted ")):
        for strategy in STRATEGIES if "$strategy" in line else ("",):
            filled = line.replace("$strategy", strategy).replace('"$JOB"', "job-000000000000")
            commands.append(shlex.split(filled)[1:])
    return commands


def ted(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = ted_cli.main(argv)
    except SystemExit as e:  # argparse: a bad flag or value
        code = e.code
    captured = capsys.readouterr()
    return code, " ".join(captured.out.split()), captured.err


def test_recipe_flags_are_the_commands_flags(capsys):
    text = RECIPE.read_text()
    helps = ""
    for command in ("distill", "eval", "config", "costs", "export", "show", "history"):
        code, out, _ = ted([command, "--help"], capsys)
        assert code == 0
        helps += out
    taken = set(re.findall(r"--[a-z-]+", helps))
    assert {"--estimate", "--resume", "--compression", "--samples", "--max-cost"} <= taken
    for flag in set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", text)):
        assert flag in taken, f"the recipe mentions {flag}, which no ted command takes"


def test_recipe_commands_run_without_models(capsys, monkeypatch, tmp_path):
    """Each command of the recipe, as written, runs up to the point where it needs a model's key."""
    for name in [k for k in os.environ if k.startswith(MODEL_ENV)]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TED_DB", str(tmp_path / "ted.db"))
    monkeypatch.chdir(EXAMPLES.parent)  # the recipe runs from the repository root
    commands = recipe_commands()
    assert {c[0] for c in commands} >= {"config", "distill", "eval", "costs"}
    assert {c[c.index("--compression") + 1] for c in commands if "--compression" in c} == set(STRATEGIES)
    recipe = " ".join(RECIPE.read_text().split())
    for argv in commands:
        code, out, err = ted(argv, capsys)
        assert code in (0, 1), f"ted {shlex.join(argv)}: {err}"
        if code == 1:  # a model without its key or endpoint, or the placeholder job: never a usage error
            assert re.match(r"ted: (No API key for|No base URL for|There is no job)", err), (argv, err)
        if "--estimate" in argv:
            # The figures the recipe quotes are the ones the command prints.
            assert code == 0 and out and out in recipe, out
    assert query(tmp_path / "ted.db", "SELECT count(*) FROM jobs") == [(0,)]


def test_readme_commands_parse(monkeypatch):
    """The `python examples/….py` lines of examples/README.md are accepted by the scripts' own parsers."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    blocks = re.findall(r"```sh\n(.*?)```", (EXAMPLES / "README.md").read_text(), re.DOTALL)
    lines = [shlex.split(line, comments=True) for line in "\n".join(blocks).splitlines()]
    runs = [words[1:] for words in lines if words[:1] == ["python"] and words[1] != "examples/quickstart_client.py"]
    assert {words[0] for words in runs} == {"examples/agent_loop.py", "examples/distill_client.py"}
    for script, *argv in runs:
        try:
            load_example(Path(script).stem).parse(argv)
        except SystemExit as e:  # argparse refused the line
            pytest.fail(f"python {script} {shlex.join(argv)}: exit {e.code}")


def run_failing(name: str, args: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    # The server's own log lines share the script's stderr; the script says one line, no traceback.
    own = [line for line in proc.stderr.splitlines() if not line.startswith("ted-mcp: ")]
    assert len(own) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return own[0]


@pytest.mark.slow
def test_a_tool_error_is_one_line_and_a_nonzero_exit(db_path, tmp_path, problems_file):
    env = {k: v for k, v in os.environ.items() if not k.startswith(MODEL_ENV)} | {
        "TED_DB": str(db_path),
        "TED_DATA_DIRS": str(tmp_path),
    }
    err = run_failing("quickstart_client.py", ["--db", str(db_path), "--library", "Not A Name"], env)
    assert err.startswith("quickstart_client.py: get_experiences failed: ") and "library" in err, err
    missing = tmp_path / "nowhere.jsonl"
    err = run_failing("distill_client.py", ["--dataset", str(missing), "--library", "arith", "--db", str(db_path)], env)
    assert err.startswith("distill_client.py: distill_batch failed: ") and "not a readable file" in err, err
    # No model configured at all: starting a job (not estimating one) names what to set.
    err = run_failing(
        "distill_client.py", ["--dataset", str(problems_file), "--library", "arith", "--db", str(db_path)], env
    )
    assert "No student model is configured for library 'arith': set TED_STUDENT" in err, err


@pytest.mark.slow
def test_an_estimate_needs_no_model(problems_file, db_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(MODEL_ENV)} | {
        "TED_DB": str(db_path),
        "TED_DATA_DIRS": str(problems_file.parent),
    }
    out = run_example("distill_client.py", ["--dataset", str(problems_file), "--library", "arith", "--estimate"], env)
    assert out.startswith("estimate: 6 problems × 3 epochs × 5 rollouts: at most 90 student and"), out
    assert query(db_path, "SELECT count(*) FROM jobs") == [(0,)]
