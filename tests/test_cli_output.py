"""What `ted` prints: tables that fit 80 columns with every figure whole, costs that say unknown
rather than $0 when a model has no price, progress that moves with every rollout on a terminal
and prints a line per batch into a log, and an evaluation report per library version, student
and time. The runs use the classroom on the local model server (real SDK, real HTTP)."""

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest
from conftest import installed_command

from ted import cli
from ted.ledger import Call, Ledger
from ted.llm.base import Completion, GenerationSettings, Usage
from ted.runs import jobs
from ted.runs.datasets import dataset_from_items
from ted.runs.jobs import DistillParams
from ted.store import Store
from ted.store.records import AddOp
from ted.testing import ModelServer, RecordedRequest, Reply
from ted.testing.classroom import Classroom, problems

pytestmark = pytest.mark.anyio

WIDTH = 80
LONG_LIBRARY = "a-library-name-that-uses-all-of-the-sixty-four-characters-allowed"[:64]


async def ted(db: Path, *args: str) -> int:
    return await cli.run(["--db", str(db), *args])


async def seed(db_path: Path) -> None:
    """Big figures, long names and long lessons: what makes a table overflow."""
    async with Store.open(db_path) as store:
        lessons = [f"Lesson {n}: " + "when a quantity changes units, convert it first " * 3 for n in range(12)]
        await store.apply(LONG_LIBRARY, [AddOp(text=t, usage_count=123_456) for t in lessons], "import", "seed")
        await store.apply("gsm8k", [AddOp(text="Check the units.")], "add", "seed")
        ledger = Ledger(store)
        for role, model, tokens in [
            ("teacher-solve", "anthropic:claude-sonnet-4-5-20250929", 12_345_678),
            ("critique", "anthropic:claude-sonnet-4-5-20250929", 2_345_678),
            ("student", "openai-compatible:qwen3-vl-8b-instruct-q4_k_m", 98_765_432),
        ]:
            completion = Completion(text="x", usage=Usage(input_tokens=tokens, output_tokens=tokens // 3), model=model)
            call = Call(
                role=role,
                model=model,
                scope={"library": "gsm8k"},
                settings=GenerationSettings(),
                started=time.perf_counter() - 1234.5,
            )
            await ledger.record(call, completion)
        data = await dataset_from_items(problems(300))
        params = DistillParams(
            library=LONG_LIBRARY, student="local:qwen3-vl-8b", teacher="local:qwen3-vl-8b", epochs=10
        )
        await jobs.create(store, params, data.problems, "inline")


@pytest.mark.parametrize(
    "command",
    [["costs"], ["show", LONG_LIBRARY], ["libraries"], ["history", LONG_LIBRARY], ["jobs"]],
    ids=["costs", "show", "libraries", "history", "jobs"],
)
async def test_tables_fit_80_columns_with_every_figure_whole(db_path, capsys, monkeypatch, command):
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    await seed(db_path)
    capsys.readouterr()
    assert await ted(db_path, *command) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines and max(map(len, lines)) <= WIDTH, "\n" + out
    figures = {
        "costs": ["12,345,678", "4,115,226", "98,765,432", "32,921,810", "1,234.5 s", "unknown"],
        "show": ["123456", "11.72"],
        "libraries": ["12/15", "gsm8k"],
        "history": ["seed", "12"],
        "jobs": ["0/3000", "1/10", "unknown"],
    }[command[0]]
    for figure in figures:
        assert re.search(rf"(?<![\d,.]){re.escape(figure)}(?![\d,.])", out), f"{figure} is cut in\n{out}"


async def test_costs_say_unknown_when_a_model_has_no_price(db_path, capsys):
    await seed(db_path)
    capsys.readouterr()
    assert await ted(db_path, "costs") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "$0.0000" not in out
    assert "3 calls · cost unknown (no price for openai-compatible:qwen3-vl-8b-instruct-q4_k_m)" in out
    assert await ted(db_path, "costs", "--json") == 0
    rows = {r["role"]: r["cost_usd"] for r in json.loads(capsys.readouterr().out)}
    assert rows["student"] is None and rows["critique"] > 0


def _dataset(folder: Path, n: int = 6) -> Path:
    path = folder / "arith.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in problems(n)))
    return path


@pytest.fixture
def classroom(monkeypatch):
    with ModelServer(Classroom().reply_to_request) as server:
        monkeypatch.setenv("TED_OPENAI_COMPATIBLE_BASE_URL", server.openai_base_url)
        yield server


async def test_without_a_terminal_distill_prints_a_line_per_batch(classroom, db_path, tmp_path, capsys):
    args = ["--dataset", str(_dataset(tmp_path)), "--library", "arith", "--student", "local:student"]
    args += ["--teacher", "local:teacher", "--epochs", "2", "--rollouts", "2", "--concurrency", "2"]
    assert await ted(db_path, "distill", *args, "--report", str(tmp_path / "r")) == 0
    out = capsys.readouterr().out
    batches = re.findall(
        r"^(\d+)/12 problems · epoch (\d)/2 · accuracy (\d+%) · \d+ lessons · cost unknown$", out, re.M
    )
    # Three batches of two problems per epoch, each a line as it is applied.
    assert [int(done) for done, _, _ in batches] == [2, 4, 6, 8, 10, 12], out
    assert "$0.0000" not in out and re.search(r"\d+ model calls, cost unknown\. Report:", " ".join(out.split()))


async def test_eval_reports_are_named_by_library_version_student_and_time(
    classroom, db_path, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert await ted(db_path, "add", "arith", "For subtraction, count up from the smaller number.") == 0
    common = ["eval", "--dataset", str(_dataset(tmp_path)), "--library", "arith"]
    for student in ("local:student", "local:other/student:7b"):
        assert await ted(db_path, *common, "--student", student) == 0
    folders = sorted(p.name for p in (tmp_path / "ted-reports").iterdir())
    assert len(folders) == 2, folders
    assert re.fullmatch(r"eval-arith-v1-local-other-student-7b-\d{8}-\d{6}", folders[0]), folders
    assert re.fullmatch(r"eval-arith-v1-local-student-\d{8}-\d{6}", folders[1]), folders
    for folder in folders:
        assert json.loads((tmp_path / "ted-reports" / folder / "report.json").read_text())["library_version"] == 1


def on_terminal(command: list[str], env: dict[str, str], cwd: Path, timeout: float = 90) -> str:
    """Run `command` with a 100×30 pseudo-terminal as stdin, stdout and stderr; what it showed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd)
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([master], [], [], 0.1)[0]:
            try:
                shown += os.read(master, 65536)
            except OSError:  # the process closed the terminal
                break
        elif proc.poll() is not None:
            break
    os.close(master)
    assert proc.wait(timeout=10) == 0, shown.decode(errors="replace")
    return shown.decode(errors="replace")


@pytest.mark.slow
def test_on_a_terminal_the_bar_moves_with_every_rollout(db_path, tmp_path):
    """Student calls answer after uneven delays, so rollouts of one batch finish one by one; the
    bar shows counts between batch boundaries (a batch is 3 problems × 3 rollouts = 9)."""
    classroom = Classroom()
    calls = iter(range(10**6))

    def script(request: RecordedRequest) -> str | Reply:
        text = classroom.reply_to_request(request)
        return Reply.slow(0.15 * (next(calls) % 4), text) if request.body["model"] == "student" else text

    with ModelServer(script) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TED_", "OPENAI_", "ANTHROPIC_"))}
        env |= {"TED_DB": str(db_path), "TED_OPENAI_COMPATIBLE_BASE_URL": server.openai_base_url}
        args = ["distill", "--dataset", str(_dataset(tmp_path)), "--library", "arith", "--student", "local:student"]
        args += ["--teacher", "local:teacher", "--epochs", "1", "--rollouts", "3", "--concurrency", "3"]
        shown = on_terminal([installed_command("ted"), *args], env, tmp_path)
    counts = {int(n) for n in re.findall(r"(\d+)/18", shown)}
    assert {0, 18} <= counts, shown
    assert counts - {0, 9, 18}, f"the bar only moved by batches: {sorted(counts)}"
    assert "cost unknown" in shown and "$0.0000" not in shown
