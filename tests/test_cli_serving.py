"""`ted promote`, `ted evidence`, `ted config --serve/--selection/--priority`, `ted distill
--validation` and what `ted show` and `ted history` print about them, in-process (`ted.cli.run`),
the student and teacher being the classroom on the local model server (real OpenAI SDK, real
HTTP on 127.0.0.1)."""

import json
from pathlib import Path

import pytest
from conftest import dump_database

from ted import cli
from ted.testing import ModelServer
from ted.testing.classroom import HARMFUL, LESSONS, Classroom, problems

pytestmark = pytest.mark.anyio

LIB = "arith"


@pytest.fixture
def classroom(monkeypatch):
    with ModelServer(Classroom().reply_to_request) as server:
        monkeypatch.setenv("TED_OPENAI_COMPATIBLE_BASE_URL", server.openai_base_url)
        monkeypatch.setenv("TED_DB", "/nonexistent/never-used.db")
        yield server


def jsonl(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


async def ted(db: Path, *args: str) -> int:
    return await cli.run(["--db", str(db), *args])


async def test_promote_by_hand_and_what_show_history_and_libraries_say(db_path, capsys):
    for text in (LESSONS["subtraction"], LESSONS["multiplication"]):
        assert await ted(db_path, "add", LIB, text) == 0
    assert await ted(db_path, "promote", LIB, "1", "--reason", "checked") == 0
    assert "arith now serves version 1 (working version 2)" in " ".join(capsys.readouterr().out.split())
    assert await ted(db_path, "show", LIB) == 0
    assert "arith · version 2 · serves version 1" in capsys.readouterr().out
    assert await ted(db_path, "history", LIB, "--json") == 0
    versions = json.loads(capsys.readouterr().out)
    assert [(p["decision"], p["reason"]) for p in versions[1]["promotions"]] == [("promoted", "checked")]
    assert versions[1]["promotions"][0]["by"].startswith("ted promote (")
    assert await ted(db_path, "history", LIB) == 0
    assert "promotions and refusals" in capsys.readouterr().out

    before = dump_database(db_path)
    assert await ted(db_path, "promote", LIB, "7") == 1
    assert "its newest is 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        await ted(db_path, "promote", LIB, "served")
    assert dump_database(db_path) == before

    assert await ted(db_path, "config", LIB, "--serve", "working") == 0
    assert "serves its working version" in " ".join(capsys.readouterr().out.split())
    assert await ted(db_path, "libraries", "--json") == 0
    [listed] = json.loads(capsys.readouterr().out)["libraries"]
    assert (listed["serves"], listed["served_version"]) == ("working", 2)


async def test_config_chooses_lessons_per_task_and_ranks_by_evidence(db_path, capsys):
    assert (
        await ted(db_path, "config", LIB, "--selection", "relevant", "--archive-items", "40", "--priority", "evidence")
        == 0
    )
    out = " ".join(capsys.readouterr().out.split())
    assert "each task the lessons that fit it from an archive of 40 lessons" in out and "ranked by evidence" in out
    assert await ted(db_path, "config", LIB, "--archive-items", "3") == 1
    assert "must hold at least one prompt's budget" in capsys.readouterr().err


async def test_evidence_from_the_command_line(classroom, db_path, tmp_path, capsys):
    for text in (LESSONS["subtraction"], HARMFUL["multiplication"]):
        assert await ted(db_path, "add", LIB, text) == 0
    data = jsonl(tmp_path / "held.jsonl", problems(9))
    common = ["evidence", LIB, "--dataset", str(data), "--student", "local:student"]
    capsys.readouterr()
    assert await ted(db_path, *common, "--estimate") == 0
    assert "2 lessons of arith v2 on 9 problems × 1 samples: 27 student answers" in capsys.readouterr().out
    assert classroom.requests == []
    assert await ted(db_path, *common) == 1
    assert "run again with --max-calls 27" in capsys.readouterr().err
    assert await ted(db_path, *common, "--max-calls", "20") == 1
    assert "over the budget of 20" in capsys.readouterr().err and classroom.requests == []

    assert await ted(db_path, *common, "--max-calls", "27", "--report", str(tmp_path / "ev")) == 0
    printed = capsys.readouterr().out
    assert "-33.3!" in printed and len(classroom.requests) == 27
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert [(m["id"], m["flagged"]) for m in report["lessons"]] == [("E1", False), ("E2", True)]
    assert "| E2 |" in (tmp_path / "ev" / "report.md").read_text()
    assert await ted(db_path, "show", LIB) == 0
    shown = capsys.readouterr().out
    assert "evidence" in shown and "+33.3" in shown and "-33.3!" in shown
    assert await ted(db_path, "show", LIB, "--json") == 0
    stored = {e["id"]: e["evidence"] for e in json.loads(capsys.readouterr().out)}
    assert stored["E2"]["flagged"] and stored["E2"]["high"] <= 0 and stored["E1"]["low"] >= 0


async def test_distill_with_a_validation_set_prints_and_reports_promotions(classroom, db_path, tmp_path, capsys):
    train = jsonl(tmp_path / "train.jsonl", problems(9))
    held = jsonl(tmp_path / "held.jsonl", problems(6, first=30))
    args = ["distill", "--dataset", str(train), "--library", LIB, "--student", "local:student"]
    args += ["--teacher", "local:teacher", "--epochs", "2", "--rollouts", "2", "--validation", str(held)]
    assert await ted(db_path, *args, "--estimate") == 0
    assert "18 validation answers" in " ".join(capsys.readouterr().out.split())  # (2 rounds + 1) × 6 problems
    assert await ted(db_path, *args, "--keep", "best", "--report", str(tmp_path / "r")) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "version 1 promoted: working 100.0% vs served v0 33.3%" in out and "arith serves version 1." in out
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [v["decision"] for e in report["epochs"] for v in e["validations"]] == ["promoted", "unchanged"]
    assert "## Promotions" in (tmp_path / "r" / "report.md").read_text()

    assert await ted(db_path, *args[:-2], "--keep", "best") == 1
    assert "--keep apply only with a validation set" in capsys.readouterr().err
