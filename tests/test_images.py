"""Tasks with images, end to end: reading an image reference (`ted.images`), a task's identity
covering its images' bytes, `record_attempt` taking images through real MCP clients, the teacher
seeing them when it solves, summarises and critiques, and `ted distill` / `ted eval` over the
shipped figures (`examples/data/figures.jsonl`) against the local model server, whose model
"sees" a figure by its bytes. A text-only model is refused before any call."""

import base64
import json
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from conftest import dump_database, tiny_png
from mcp import Client
from scripted_teacher import Teacher, add, critique

from ted import cli
from ted.errors import InvalidInput
from ted.images import MAX_IMAGE_BYTES, read_image
from ted.runs.datasets import load_dataset
from ted.tasks import Task, task_id_for
from ted.testing import ModelServer, RecordedRequest
from ted.testing.classroom import chain, required, step_of
from ted_server import build_server

pytestmark = pytest.mark.anyio

FIGURES = Path(__file__).resolve().parent.parent / "examples" / "data" / "figures.jsonl"
RED, BLUE = tiny_png((220, 20, 20)), tiny_png((20, 20, 220))
LESSON = "When a task comes with a figure, read each value from the figure before you compute."


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


# -- reading an image reference -----------------------------------------------------------------


def test_a_data_url_a_file_and_a_url_are_read_into_what_a_provider_takes(tmp_path):
    (tmp_path / "red.png").write_bytes(RED)
    from_file, from_data = read_image(str(tmp_path / "red.png")), read_image(data_url(RED))
    assert from_file == from_data and (from_file.media_type, from_file.url) == ("image/png", None)
    assert base64.b64decode(from_file.data) == RED
    assert read_image(f"file://{tmp_path / 'red.png'}") == from_file
    assert read_image("https://example.invalid/a.png").url == "https://example.invalid/a.png"  # never fetched
    jpeg = read_image(data_url(b"\xff\xd8\xff\xe0" + bytes(20)))
    assert jpeg.media_type == "image/jpeg"  # told by the bytes, not by the name or the header


@pytest.mark.parametrize(
    ("ref", "says"),
    [
        ("figures/a.png", "is relative: give an absolute path"),
        ("/nonexistent/a.png", "does not exist"),
        ("data:image/png,notbase64", "must be base64"),
        ("data:image/png;base64,@@@@", "not valid base64"),
        ("data:image/png;base64," + base64.b64encode(b"GIF? no, text").decode(), "not a PNG, JPEG, GIF or WebP"),
        ("ftp://example.invalid/a.png", "a URL scheme other than data: or http"),
        ("https:///a.png", "has no host"),
    ],
)
def test_a_bad_image_reference_says_what_to_fix(ref, says):
    with pytest.raises(InvalidInput, match=says):
        read_image(ref)


def test_a_huge_image_is_refused_without_reading_it_whole(tmp_path):
    huge = tmp_path / "huge.png"
    with huge.open("wb") as f:
        f.write(RED)
        f.truncate(50 * MAX_IMAGE_BYTES)  # sparse: 250 MB on paper
    with pytest.raises(InvalidInput, match="over the limit of 5,242,880"):
        read_image(str(huge))
    with pytest.raises(InvalidInput, match="more than 5 MB"):
        read_image("data:image/png;base64," + "A" * (MAX_IMAGE_BYTES * 2))


def test_a_tasks_identity_is_its_text_and_its_images_bytes(tmp_path):
    (tmp_path / "red.png").write_bytes(RED)
    text = "What colour is the square?"
    red, blue = Task.read(text, [str(tmp_path / "red.png")]), Task.read(text, [data_url(BLUE)])
    assert red.id != blue.id
    assert red.id == Task.read(text, [data_url(RED)]).id  # the same bytes, however they are named
    assert Task(text=text).id == task_id_for(text) == task_id_for(f"  {text} ")  # text-only ids as before


async def test_the_shipped_figures_load_with_ids_and_images():
    dataset = await load_dataset(FIGURES)
    assert [p.id for p in dataset.problems] == ["dots-3", "dots-5", "dots-8", "bars-a", "bars-b", "triangle"]
    assert all(len(p.images) == 1 and Path(p.images[0]).is_file() for p in dataset.problems)
    dots = [Task.read(p.question, p.images) for p in dataset.problems[:3]]
    assert len({t.text for t in dots}) == 1 and len({t.id for t in dots}) == 3


async def test_a_record_without_an_id_gets_its_tasks_id_and_a_bad_image_is_refused_by_line(tmp_path):
    (tmp_path / "red.png").write_bytes(RED)
    (tmp_path / "notes.png").write_text("not an image")
    good = {"question": "What colour?", "answer": "red", "image": "red.png"}
    (tmp_path / "good.jsonl").write_text(json.dumps(good) + "\n")
    [problem] = (await load_dataset(tmp_path / "good.jsonl")).problems
    assert problem.id == Task.read("What colour?", [str(tmp_path / "red.png")]).id != task_id_for("What colour?")
    (tmp_path / "bad.jsonl").write_text(json.dumps(good) + "\n" + json.dumps({**good, "image": "notes.png"}) + "\n")
    with pytest.raises(InvalidInput, match=r"line 2: `image`\[0\]: The image is not a PNG, JPEG, GIF or WebP image"):
        await load_dataset(tmp_path / "bad.jsonl")


# -- record_attempt and request_critique through MCP ---------------------------------------------


def connect(db_path, teacher: Teacher) -> Client:
    return Client(build_server(db_path, models=lambda name: teacher.model), raise_exceptions=False)


async def call(client: Client, name: str, args: dict) -> dict:
    result = await client.call_tool(name, args)
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def test_the_teacher_sees_the_images_recorded_with_the_attempts(db_path, tmp_path, monkeypatch):
    monkeypatch.setenv("TED_TEACHER", "scripted:teacher")
    monkeypatch.setenv("TED_DATA_DIRS", str(tmp_path))  # where a client may name image files
    (tmp_path / "blue.png").write_bytes(BLUE)
    seen = [{"reasoning": f"The square is {c}.", "answer": c} for c in ("red", "blue")]
    teacher = Teacher(critiques=[critique(add(LESSON)), critique()], solutions=seen)
    question = "What colour is the square?"
    async with connect(db_path, teacher) as client:
        attempt = {"task": question, "trajectory": "Answer: blue", "ground_truth": "red", "images": [data_url(RED)]}
        red = await call(client, "record_attempt", attempt)
        blue = await call(
            client,
            "record_attempt",
            {
                "task": question,
                "trajectory": "Answer: red",
                "ground_truth": "blue",
                "images": [str(tmp_path / "blue.png")],
            },
        )
        # One text, two figures: two tasks, each critiqued against its own solution.
        assert red["task_id"] != blue["task_id"] and red["task_id"] == Task.read(question, [data_url(RED)]).id
        asked = await call(client, "get_experiences", {"task": question, "images": [data_url(RED)]})
        assert asked["task_id"] == red["task_id"]
        for recorded in (red, blue):
            await call(client, "request_critique", {"task_id": recorded["task_id"]})
    assert teacher.steps == ["solve", "summarise", "critique"] * 2
    shown = [[base64.b64decode(i.data) for m in r.messages for i in m.images] for r in teacher.model.requests]
    assert shown == [[RED]] * 3 + [[BLUE]] * 3  # the solve, the summary and the critique each carry the figure
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT count(DISTINCT task_key) FROM teacher_solutions").fetchone() == (2,)
        stored = db.execute("SELECT images FROM attempts ORDER BY id").fetchall()
    assert [json.loads(s) for (s,) in stored] == [[data_url(RED)], [str(tmp_path / "blue.png")]]


@pytest.mark.parametrize(
    ("images", "says"),
    [
        (["data:image/png;base64,@@@@"], "not valid base64"),
        (["relative.png"], "is relative"),
        ([data_url(RED)] * 33, "33"),
    ],
)
async def test_bad_images_are_refused_and_nothing_is_stored(db_path, images, says):
    async with connect(db_path, Teacher()) as client:
        result = await client.call_tool(
            "record_attempt", {"task": "What colour?", "trajectory": "red", "images": images}
        )
    assert result.is_error and says in result.content[0].text
    assert dump_database(db_path).get("attempts", []) == []


async def test_a_text_only_teacher_is_refused_an_image_task_before_any_call(db_path, monkeypatch):
    monkeypatch.setenv("TED_TEACHER", "scripted:teacher")
    monkeypatch.setenv("TED_TEXT_ONLY_MODELS", "scripted:teacher")
    teacher = Teacher()
    async with connect(db_path, teacher) as client:
        attempt = {
            "task": "What colour?",
            "trajectory": "Answer: blue",
            "ground_truth": "red",
            "images": [data_url(RED)],
        }
        recorded = await call(client, "record_attempt", attempt)
        result = await client.call_tool("request_critique", {"task_id": recorded["task_id"]})
    assert result.is_error and "scripted:teacher reads text only" in result.content[0].text
    assert teacher.steps == []


# -- ted distill and ted eval over the shipped figures -------------------------------------------


class Sighted:
    """The local model server's script: a student and a teacher that see each figure by its bytes.
    The student reads figures right only once the library holds LESSON; the teacher always does."""

    def __init__(self, problems):
        self.answers = {base64.b64encode(Path(p.images[0]).read_bytes()).decode(): p.answer for p in problems}
        self.requests: list[RecordedRequest] = []

    def __call__(self, request: RecordedRequest) -> str:
        self.requests.append(request)
        step, schema = step_of(request.output), (request.output.json_schema if request.output else {})
        seen = [self.answers[part["image_url"]["url"].split(",", 1)[1]] for part in request.images]
        if step == "student":
            return f"I read the figure: {seen[0]}.\nAnswer: {seen[0]}" if LESSON in request.prompt else "Answer: 0"
        if step == "solve":
            return json.dumps({"reasoning": f"The figure shows {seen[0]}.", "answer": seen[0]})
        if step == "summarise":
            return json.dumps({"chains": {label: chain(label) for label in required(schema, "chains")}})
        if step == "critique":
            diagnoses = {
                label: {"first_divergent_step": "Step 1", "error_class": "misread_task"}
                for label in required(schema, "diagnoses")
            }
            operations = [] if LESSON in request.prompt else [add(LESSON, "the figure was not read")]
            return json.dumps(
                {"analysis": "The figure was not read.", "diagnoses": diagnoses, "operations": operations}
            )
        return json.dumps({"operations": []})


async def ted(db: Path, *args: str) -> int:
    return await cli.run(["--db", str(db), *args])


@pytest.fixture
async def sighted(monkeypatch):
    script = Sighted((await load_dataset(FIGURES)).problems)
    async with ModelServer(script) as server:
        monkeypatch.setenv("TED_OPENAI_COMPATIBLE_BASE_URL", server.openai_base_url)
        yield script


async def test_a_distillation_and_an_evaluation_over_figures(sighted, db_path, tmp_path):
    models = ("--student", "local:student", "--teacher", "local:teacher")
    run = ("--dataset", str(FIGURES), "--library", "figures", *models, "--epochs", "2", "--rollouts", "2")
    assert await ted(db_path, "distill", *run, "--report", str(tmp_path / "distill")) == 0
    teacher = [r for r in sighted.requests if r.body["model"] == "teacher"]
    steps = Counter(step_of(r.output) for r in teacher)
    # Epoch 1: every problem wrong, each solved, summarised and critiqued once (one batch); the
    # lesson then makes epoch 2 right. Every teacher request carries its problem's figure.
    assert steps == {"solve": 6, "summarise": 6, "critique": 6}
    assert all(
        len(r.images) == 1 and r.images[0]["image_url"]["url"].startswith("data:image/png;base64,") for r in teacher
    )
    dots = [r for r in teacher if step_of(r.output) == "solve" and "dots" in r.prompt]
    assert len(dots) == 3 and len({r.images[0]["image_url"]["url"] for r in dots}) == 3
    with sqlite3.connect(db_path) as db:
        solutions = db.execute("SELECT task, answer FROM teacher_solutions ORDER BY answer").fetchall()
        accuracy = [e["accuracy"] for e in json.loads((tmp_path / "distill" / "report.json").read_text())["epochs"]]
    # Two problems with one text and different images: two teacher solutions (three, here).
    assert [a for t, a in solutions if t == "How many dots does the figure show?"] == ["3", "5", "8"]
    assert accuracy == [0.0, 1.0]

    evaluation = ("--dataset", str(FIGURES), "--library", "figures", *models[:2], "--report", str(tmp_path / "eval"))
    assert await ted(db_path, "eval", *evaluation) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert (report["with_library"]["accuracy"], report["without_library"]["accuracy"]) == (1.0, 0.0)


async def test_a_text_only_student_is_refused_before_any_call(sighted, db_path, monkeypatch, capsys):
    monkeypatch.setenv("TED_TEXT_ONLY_MODELS", "local:student")
    run = ("--dataset", str(FIGURES), "--library", "figures", "--student", "local:student", "--teacher", "local:t")
    assert await ted(db_path, "distill", *run) == 1
    assert "local:student reads text only, and this dataset has images" in capsys.readouterr().err
    assert (
        await ted(db_path, "eval", "--dataset", str(FIGURES), "--library", "figures", "--student", "local:student") == 1
    )
    assert sighted.requests == [] and "jobs" not in {t for t, rows in dump_database(db_path).items() if rows}
