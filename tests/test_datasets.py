"""Datasets: real JSON Lines files in tmp_path, every refusal naming its line, and the shipped
GSM8K subsets loading and grading against themselves."""

import hashlib
import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from ted.errors import InvalidInput
from ted.grading import grade
from ted.runs.datasets import MAX_ERRORS_SHOWN, MAX_INLINE_ITEMS, Problem, dataset_from_items, load_dataset
from ted.tasks import task_id_for

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "data"


def write_lines(path: Path, *lines: object) -> Path:
    """Objects become JSON lines; strings are written verbatim (for broken lines)."""
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n")
    return path


async def refusal(path: Path, error: type[Exception] = InvalidInput) -> str:
    with pytest.raises(error) as caught:
        await load_dataset(path)
    return str(caught.value)


async def test_a_good_file_loads_every_field(tmp_path):
    path = write_lines(
        tmp_path / "mini.jsonl",
        {"id": "a-1", "question": "What is 2+2?", "answer": "4", "subject": "arithmetic", "level": 1},
        "",  # blank lines are skipped, not errors
        {"id": 7, "question": "Is 9 prime?", "answer": False, "task": "primes"},
        {"id": "a-3", "question": "Half of 3?", "answer": 1.5},
    )
    dataset = await load_dataset(path)
    assert dataset.name == "mini"
    assert dataset.path == str(path.resolve())
    assert dataset.fingerprint == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (dataset.total, dataset.offset) == (3, 0)
    first, second, third = dataset.problems
    assert first == Problem(id="a-1", question="What is 2+2?", answer="4", meta={"subject": "arithmetic", "level": 1})
    assert (second.id, second.answer, second.meta) == ("7", "False", {"task": "primes"})
    assert third.answer == "1.5"
    assert dataset.reference_solutions == {}


async def test_aliases_for_common_shapes(tmp_path):
    path = write_lines(
        tmp_path / "shapes.jsonl",
        {"unique_id": "test/algebra/1.json", "problem": "Solve x+1=2.", "solution": "x = \\boxed{1}", "answer": "1"},
        {"id": "bbh-0", "input": "not ( True ) and ( True ) is", "target": "False"},
    )
    math, bbh = (await load_dataset(path)).problems
    assert (math.id, math.question, math.answer) == ("test/algebra/1.json", "Solve x+1=2.", "1")
    assert (bbh.question, bbh.answer) == ("not ( True ) and ( True ) is", "False")


async def test_reference_solutions_are_kept_away_from_the_problem(tmp_path):
    path = write_lines(
        tmp_path / "solved.jsonl",
        {"id": "s1", "question": "2*3?", "answer": "6", "solution": "2*3 = 6", "source": "here"},
        {"id": "s2", "question": "2*4?", "answer": "8", "rationale": "2*4 = 8"},
    )
    dataset = await load_dataset(path)
    assert dataset.reference_solutions == {"s1": "2*3 = 6", "s2": "2*4 = 8"}
    for problem in dataset.problems:
        dumped = json.dumps(problem.model_dump())
        assert "2*3 = 6" not in dumped and "2*4 = 8" not in dumped
    assert dataset.problems[0].meta == {"source": "here"}
    # The record itself has no place for one, so a prompt builder cannot be handed one.
    with pytest.raises(ValidationError, match="solution"):
        Problem(id="x", question="q", answer="1", solution="worked")


async def test_original_gsm8k_answers_are_split_into_answer_and_solution(tmp_path):
    path = write_lines(
        tmp_path / "raw_gsm8k.jsonl",
        {"question": "How much?", "answer": "She pays 1,000 + 450 = <<1000+450=1450>>1,450.\n#### 1,450"},
    )
    dataset = await load_dataset(path)
    (problem,) = dataset.problems
    assert problem.answer == "1450"
    assert dataset.reference_solutions[problem.id].endswith("#### 1,450")


async def test_a_worked_solution_is_never_taken_for_the_answer(tmp_path):
    path = write_lines(
        tmp_path / "math.jsonl",
        {"id": "ok", "question": "1+1?", "answer": "2"},
        {"id": "m1", "problem": "Find x.", "solution": "So x = \\boxed{3}."},
    )
    message = await refusal(path)
    assert "line 2: has no answer" in message
    assert "`solution`" in message and "never used as the answer" in message
    assert "line 1" not in message


async def test_missing_file_names_the_path(tmp_path):
    message = await refusal(tmp_path / "nope.jsonl")
    assert str(tmp_path / "nope.jsonl") in message
    assert "does not exist" in message


async def test_a_folder_is_not_a_dataset(tmp_path):
    assert "is not a file" in await refusal(tmp_path)


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ('{"id": "b", "question": "q?", "answer": ', "not valid JSON"),
        ('["q?", "4"]', "must be a JSON object"),
        ({"id": "b", "question": "q?"}, "has no answer"),
        ({"id": "b", "question": "q?", "answer": "  "}, "has an empty `answer`"),
        ({"id": "b", "question": "q?", "answer": None}, "has an empty `answer`"),
        ({"id": "b", "question": "q?", "answer": ["1", "2"]}, "must be text or a number"),
        ({"id": "b", "answer": "4"}, "has no question"),
        ({"id": "b", "question": "", "answer": "4"}, "must be non-empty text"),
        ({"id": "b c", "question": "q?", "answer": "4"}, "has whitespace"),
        ({"id": "b", "question": "q?", "problem": "q?", "answer": "4"}, "has both `question` and `problem`"),
        ({"id": "b", "question": "q?", "answer": "4", "images": "missing.png"}, "`images`[0] does not name a readable"),
        ({"id": "b", "question": "q?", "answer": "4", "images": [3]}, "list of paths or URLs"),
        ({"id": "b", "question": "q" * 100_001, "answer": "4"}, "`question`: String should have at most"),
        ({"id": "a", "question": "other?", "answer": "4"}, "line 1 already has the same id"),
    ],
)
async def test_each_bad_line_is_refused_with_its_number(tmp_path, bad_line, expected):
    path = write_lines(tmp_path / "bad.jsonl", {"id": "a", "question": "2+2?", "answer": "4"}, "", bad_line)
    message = await refusal(path)
    assert "line 3: " in message, message
    assert expected in message, message
    assert "line 1:" not in message  # the good line is not blamed


async def test_all_bad_lines_are_listed_up_to_a_limit(tmp_path):
    lines = [{"id": f"p{i}", "question": "q?"} for i in range(MAX_ERRORS_SHOWN + 3)]
    message = await refusal(write_lines(tmp_path / "bad.jsonl", *lines))
    assert f"has {MAX_ERRORS_SHOWN + 3} bad record(s)" in message
    assert f"line {MAX_ERRORS_SHOWN}:" in message
    assert f"line {MAX_ERRORS_SHOWN + 1}:" not in message
    assert "… and 3 more" in message


async def test_text_that_is_not_utf8_is_refused_by_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(
        b'{"id": "a", "question": "q?", "answer": "4"}\n{"id": "b", "question": "caf\xe9?", "answer": "4"}\n'
    )
    assert "line 2: not UTF-8" in await refusal(path)


async def test_a_byte_order_mark_is_not_an_error(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a", "question": "q?", "answer": "4"}\n')
    assert [p.id for p in (await load_dataset(path)).problems] == ["a"]


async def test_a_pretty_printed_json_document_gets_a_hint(tmp_path):
    path = tmp_path / "array.jsonl"
    path.write_text('[\n  {"question": "q?", "answer": "4"}\n]\n')
    assert "one object per line" in await refusal(path)


async def test_an_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    assert "holds no problems" in await refusal(path)


async def test_missing_ids_are_derived_from_the_question_and_stable(tmp_path):
    lines = [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(5)]
    forward = await load_dataset(write_lines(tmp_path / "forward.jsonl", *lines))
    backward = await load_dataset(write_lines(tmp_path / "backward.jsonl", *reversed(lines)))
    assert [p.id for p in forward.problems] == [task_id_for(line["question"]) for line in lines]
    assert {p.id: p.answer for p in forward.problems} == {p.id: p.answer for p in backward.problems}


async def test_the_same_question_twice_without_ids_is_a_duplicate(tmp_path):
    path = write_lines(
        tmp_path / "dup.jsonl",
        {"question": "Same?", "answer": "1"},
        {"question": "Other?", "answer": "2"},
        {"question": "Same?", "answer": "1"},
    )
    message = await refusal(path)
    assert "line 3: line 1 already has the same question" in message
    assert "explicit `id`" in message


async def test_offset_and_limit_select_a_window(tmp_path):
    path = write_lines(
        tmp_path / "ten.jsonl", *({"id": f"p{i}", "question": f"{i}?", "answer": str(i)} for i in range(10))
    )
    window = await load_dataset(path, offset=3, limit=4)
    assert [p.id for p in window.problems] == ["p3", "p4", "p5", "p6"]
    assert (window.total, window.offset) == (10, 3)
    assert [p.id for p in (await load_dataset(path, offset=8, limit=5)).problems] == ["p8", "p9"]
    with pytest.raises(InvalidInput, match="offset 10 is past the end.*10 problems"):
        await load_dataset(path, offset=10)
    with pytest.raises(InvalidInput, match="limit must be a whole number ≥ 1"):
        await load_dataset(path, limit=0)
    with pytest.raises(InvalidInput, match="offset must be a whole number ≥ 0"):
        await load_dataset(path, offset=-1)


async def test_images_resolve_against_the_dataset_folder_not_the_working_directory(tmp_path, monkeypatch):
    data = tmp_path / "data"
    figure = png(data / "figs" / "one.png")
    absolute = png(tmp_path / "elsewhere" / "two.png")
    path = write_lines(
        data / "geo.jsonl",
        {"id": "g1", "question": "Area?", "answer": "12", "images": ["figs/one.png", str(absolute)]},
        {"id": "g2", "question": "Angle?", "answer": "30", "image": "https://example.org/angle.png"},
        {"id": "g3", "question": "Side?", "answer": "5", "image": figure.as_uri()},
    )
    monkeypatch.chdir(tmp_path / "elsewhere")  # a relative path must not depend on where ted runs
    g1, g2, g3 = (await load_dataset(path)).problems
    assert g1.images == [str(figure.resolve()), str(absolute.resolve())]
    assert g2.images == ["https://example.org/angle.png"]
    assert g3.images == [str(figure.resolve())]


async def test_a_missing_image_names_where_it_was_looked_for(tmp_path):
    path = write_lines(
        tmp_path / "geo.jsonl",
        {"id": "g1", "question": "Area?", "answer": "12"},
        {"id": "g2", "question": "Area?", "answer": "12", "images": ["figs/missing.png"]},
    )
    message = await refusal(path)
    assert "line 2: `images`[0] does not name a readable image file" in message
    assert f"relative paths are resolved against the dataset's folder {tmp_path.resolve()}" in message
    assert "missing.png" not in message  # the file's content is never quoted
    assert "resolved against the dataset's folder" in message


async def test_inline_items_validate_like_a_file(tmp_path):
    figure = png(tmp_path / "fig.png")
    items = [
        {"id": "i1", "question": "1+1?", "answer": "2"},
        {"question": "Look:", "answer": "(B)", "images": ["fig.png"], "task": "vision"},
    ]
    dataset = await dataset_from_items(items, base_dir=tmp_path, name="mine")
    assert (dataset.name, dataset.path, dataset.total) == ("mine", None, 2)
    assert dataset.problems[1].images == [str(figure.resolve())]
    assert dataset.problems[1].meta == {"task": "vision"}
    # The fingerprint is of the content: the same items, the same identity for a resumed job.
    again = await dataset_from_items([dict(i) for i in items], base_dir=tmp_path)
    changed = await dataset_from_items([items[0], {**items[1], "answer": "(C)"}], base_dir=tmp_path)
    assert again.fingerprint == dataset.fingerprint != changed.fingerprint


async def test_inline_items_name_the_bad_item(tmp_path):
    with pytest.raises(InvalidInput) as caught:
        await dataset_from_items([{"question": "ok?", "answer": "1"}, {"question": "no answer"}, "text"])
    message = str(caught.value)
    assert "items[1]: has no answer" in message
    assert "items[2]: must be a JSON object" in message
    assert "items[0]" not in message


async def test_inline_relative_images_need_a_base_dir():
    with pytest.raises(InvalidInput, match=r"items\[0\]: `images`\[0\] is a relative path.*base_dir"):
        await dataset_from_items([{"question": "Look:", "answer": "1", "images": ["fig.png"]}])


async def test_inline_items_must_be_a_bounded_list():
    with pytest.raises(InvalidInput, match="must be a list of objects"):
        await dataset_from_items({"question": "q?", "answer": "1"})
    with pytest.raises(InvalidInput, match=f"over the limit of {MAX_INLINE_ITEMS}.*JSON Lines file"):
        await dataset_from_items([{"question": "q?", "answer": "1"}] * (MAX_INLINE_ITEMS + 1))


@pytest.mark.parametrize(
    ("name", "count", "prefix"), [("gsm8k_train_100", 100, "gsm8k-train-"), ("gsm8k_test_200", 200, "gsm8k-test-")]
)
async def test_shipped_examples_load_and_grade_against_themselves(name, count, prefix):
    dataset = await load_dataset(EXAMPLES / f"{name}.jsonl")
    assert len(dataset.problems) == dataset.total == count
    assert [p.id for p in dataset.problems] == [f"{prefix}{i:04d}" for i in range(count)]
    assert set(dataset.reference_solutions) == {p.id for p in dataset.problems}
    for problem in dataset.problems:
        assert problem.meta == {"source": problem.meta["source"]}
        assert problem.meta["source"].startswith("openai/grade-school-math@3101c7d")
        assert (await grade(problem.answer, problem.answer)).correct, problem.id
        # The reference solution's own final line ("#### 1,450") agrees with the answer ("1450").
        final = dataset.reference_solutions[problem.id].rsplit("####", 1)[1].strip()
        assert (await grade(final, problem.answer)).correct, problem.id
    for problem in dataset.problems[:10]:  # and the check can fail: a wrong number is wrong
        assert not (await grade(str(int(problem.answer) + 1), problem.answer)).correct


def test_shipped_examples_match_their_documented_checksums():
    readme = (EXAMPLES / "README.md").read_text()
    for name in ("gsm8k_train_100.jsonl", "gsm8k_test_200.jsonl"):
        documented = re.search(rf"`{re.escape(name)}` ([0-9a-f]{{64}})", readme)
        assert documented, f"README.md gives no SHA-256 for {name}"
        assert hashlib.sha256((EXAMPLES / name).read_bytes()).hexdigest() == documented.group(1)
    assert "MIT" in readme and "Copyright (c) 2021 OpenAI" in readme
    assert "3101c7d5072418e28b9008a6636bde82a006892c" in readme
