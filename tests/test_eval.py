"""`ted eval` and `ted distill` in-process (`ted.cli.run`), the student and teacher being the
classroom served by the local model server (real OpenAI SDK, real HTTP on 127.0.0.1). The
classroom's student adds correctly, and subtracts or multiplies correctly only with that skill's
lesson in its prompt, so every accuracy in a report can be worked out by hand from the problems."""

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import dump_database
from scripted_teacher import without_ledger

from ted import cli
from ted.testing import ModelServer
from ted.testing.classroom import LESSONS, Classroom, problems

pytestmark = pytest.mark.anyio

N = 9  # problems(9): p0, p3, p6 add; p1, p4, p7 subtract; p2, p5, p8 multiply


@pytest.fixture
def classroom(monkeypatch):
    """The classroom on the local model server, as `local:…` models (cached per base URL, so
    each test gets models of its own; the CLI closes their connections as it ends)."""
    with ModelServer(Classroom().reply_to_request) as server:
        monkeypatch.setenv("TED_OPENAI_COMPATIBLE_BASE_URL", server.openai_base_url)
        monkeypatch.setenv("TED_DB", "/nonexistent/never-used.db")  # --db must be what is used
        yield server


@pytest.fixture
def dataset(tmp_path) -> Path:
    path = tmp_path / "arith.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in problems(N)))
    return path


async def ted(db: Path, *args: str) -> int:
    return await cli.run(["--db", str(db), *args])


@pytest.mark.parametrize(
    ("skills", "k", "with_", "improved"),
    [(["subtraction", "multiplication"], 2, 9, 6), (["subtraction"], 1, 6, 3), ([], 1, 3, 0)],
    ids=["both lessons", "one lesson", "no lessons"],
)
async def test_eval_reports_what_the_classroom_implies(
    classroom, dataset, db_path, tmp_path, capsys, skills, k, with_, improved
):
    assert await ted(db_path, "config", "arith", "--max-items", "15") == 0  # the library exists, maybe empty
    for skill in skills:
        assert await ted(db_path, "add", "arith", LESSONS[skill]) == 0
    before = without_ledger(dump_database(db_path))[0]
    capsys.readouterr()

    out_dir = tmp_path / "eval"
    rc = await ted(
        db_path,
        "eval",
        "--dataset",
        str(dataset),
        "--library",
        "arith",
        "--student",
        "local:student",
        "--samples",
        str(k),
        "--report",
        str(out_dir),
    )
    printed = capsys.readouterr()
    assert rc == 0, printed.err

    report = json.loads((out_dir / "report.json").read_text())
    # Without lessons only the 3 additions are right; each lesson adds its 3 problems.
    assert (report["n_problems"], report["samples_per_problem"]) == (N, k)
    assert report["with_library"] == {"accuracy": pytest.approx(with_ / N), "correct": k * with_, "samples": k * N}
    assert report["without_library"] == {"accuracy": pytest.approx(3 / N), "correct": k * 3, "samples": k * N}
    assert report["difference"] == pytest.approx((with_ - 3) / N)
    assert (report["improved"], report["worsened"], report["unchanged"]) == (improved, 0, N - improved)
    interval = report["interval"]
    assert interval["low"] <= report["difference"] <= interval["high"] and interval["confidence"] == 0.95
    assert 0 <= interval["low"] and interval["high"] <= 1  # no problem got worse, none can gain more than 1
    if improved == 6:
        assert interval["low"] > 0  # 6 of 9 problems helped: a resample without one is a 1-in-20,000 event
    if improved == 0:
        assert interval["low"] == interval["high"] == 0
    grades = {p["problem_id"]: (p["with_library"], p["without_library"]) for p in report["problems"]}
    assert grades["p0"] == ([True] * k, [True] * k) and grades["p1"][1] == [False] * k
    assert (report["library_items"], report["cost"]["calls"]) == (len(skills), N * 2 * k)
    assert len(classroom.requests) == N * 2 * k  # one request per sample and arm: nothing retried

    assert f"With the library (v{len(skills)}): {with_ / N:.1%}; without: 33.3%" in printed.out
    markdown = (out_dir / "report.md").read_text()
    assert f"| Accuracy with library | {100 * with_ / N:.1f} % ({k * with_}/{k * N} samples) |" in markdown
    assert f"| Accuracy without library | 33.3 % ({k * 3}/{k * N} samples) |" in markdown
    assert "](report.png)" in markdown
    assert (out_dir / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Measuring a library does not move it: no attempts, no usage counted, no new version. The
    # report is kept, under the id its calls have in the ledger, so it can be shown again.
    after = without_ledger(dump_database(db_path))[0]
    (kept,) = after.pop("evaluations")
    assert before.pop("evaluations") == [] and after == before
    assert (kept[0], kept[1], json.loads(kept[3])) == (report["id"], "arith", report)


async def test_eval_refuses_what_it_cannot_measure(classroom, dataset, db_path, tmp_path, capsys):
    common = ["eval", "--dataset", str(dataset), "--student", "local:student", "--report", str(tmp_path / "eval")]
    assert await ted(db_path, *common, "--library", "typo") == 1
    assert "no library named 'typo'" in capsys.readouterr().err  # a typo is not an empty library
    assert dump_database(db_path)["libraries"] == []

    assert await ted(db_path, "add", "arith", LESSONS["subtraction"]) == 0
    for flag in ("--samples", "--concurrency"):
        assert await ted(db_path, *common, "--library", "arith", flag, "0") == 1
        assert f"{flag[2:]} must be at least 1 (it was 0)" in capsys.readouterr().err
    assert classroom.requests == [] and not (tmp_path / "eval").exists()


async def test_distill_then_eval_end_to_end(classroom, dataset, db_path, tmp_path, capsys):
    common = ["--dataset", str(dataset), "--library", "arith", "--student", "local:student"]
    distill = [*common, "--teacher", "local:teacher", "--epochs", "2", "--rollouts", "2", "--concurrency", "3"]

    # --estimate: the figures, and nothing called or written.
    assert await ted(db_path, "distill", *distill, "--estimate") == 0
    estimate = capsys.readouterr().out
    assert f"{N} problems × 2 epochs × 2 rollouts: at most {N * 2 * 2} student and" in estimate
    written = {table: rows for table, rows in dump_database(db_path).items() if rows and table != "migrations"}
    assert classroom.requests == [] and written == {}  # not even the library

    rc = await ted(db_path, "distill", *distill, "--report", str(tmp_path / "distill"))
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    report = json.loads((tmp_path / "distill" / "report.json").read_text())
    assert (report["state"], report["epochs_planned"], report["concurrency"]) == ("finished", 2, 3)
    # Epoch 1: p1 and p2 (first batch) wrong before their lessons existed, everything else right.
    assert [(e["epoch"], e["problems"], e["rollouts"], e["correct"], e["critiques"]) for e in report["epochs"]] == [
        (1, N, 2 * N, 2 * N - 4, 2),
        (2, N, 2 * N, 2 * N, 0),
    ]
    assert [e["library"]["items"] for e in report["epochs"]] == [2, 2] and report["initial"]["items"] == 0
    assert report["cost"]["calls"] == len(classroom.requests)  # every call in the ledger, none repeated
    assert (tmp_path / "distill" / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert "epoch 1: rollout accuracy 77.8%" in printed.out and "epoch 2: rollout accuracy 100.0%" in printed.out
    job_id = report["job_id"]
    assert f"Job {job_id} done." in printed.out

    assert await ted(db_path, "distill", "--resume", job_id) == 1
    assert f"Job {job_id} is done" in capsys.readouterr().err

    rc = await ted(db_path, "eval", *common, "--report", str(tmp_path / "eval"))
    assert rc == 0, capsys.readouterr().err
    evaluation = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert (evaluation["with_library"]["accuracy"], evaluation["without_library"]["accuracy"]) == (
        1.0,
        pytest.approx(1 / 3),
    )


async def test_generation_settings_from_the_command_line_the_library_and_the_environment(
    classroom, dataset, db_path, tmp_path, capsys, monkeypatch
):
    assert await ted(db_path, "config", "arith", "--student-top-p", "0.8", "--teacher-max-tokens", "32000") == 0
    assert 'sampling: student {"top_p":0.8}, teacher {"max_tokens":32000}' in capsys.readouterr().out
    assert await ted(db_path, "config", "arith", "--student-temperature", "5") == 1
    assert "Invalid --student-temperature: Input should be less than or equal to 2." in capsys.readouterr().err
    monkeypatch.setenv("TED_STUDENT_SEED", "7")

    common = ["--dataset", str(dataset), "--library", "arith", "--student", "local:student"]
    distill = [*common, "--teacher", "local:teacher", "--epochs", "1", "--rollouts", "1"]
    assert await ted(db_path, "distill", *distill, "--student-temperature", "0.2", "--report", str(tmp_path)) == 0
    assert await ted(db_path, "eval", *common, "--student-max-tokens", "900", "--report", str(tmp_path / "e")) == 0
    student = [r.body for r in classroom.requests if "response_format" not in r.body]
    teacher = [r.body for r in classroom.requests if "response_format" in r.body]
    distilled, evaluated = student[:N], student[N:]
    assert all((b["temperature"], b["top_p"], b["seed"], b["max_tokens"]) == (0.2, 0.8, 7, 16_384) for b in distilled)
    assert all((b.get("temperature"), b["top_p"], b["seed"], b["max_tokens"]) == (None, 0.8, 7, 900) for b in evaluated)
    assert teacher and all(b["max_tokens"] == 32_000 and "temperature" not in b for b in teacher)
    with sqlite3.connect(db_path) as db:
        recorded = {json.loads(s)["max_tokens"] for (s,) in db.execute("SELECT settings FROM model_calls")}
    assert recorded == {16_384, 900, 32_000}
