"""Evidence per lesson (`ted.runs.evidence`) with the classroom's deterministic student on a real
SQLite file: a helpful lesson ranks above a harmful one, which is flagged; the figures are kept
with the lessons and shown where lessons are read; the estimate is the exact count of calls and
the budget is enforced before any; the same measurement is not paid twice; compression can rank
by evidence."""

import pytest
from conftest import dump_database

from ted import agent
from ted.errors import InvalidInput, NotFound
from ted.ledger import Ledger
from ted.runs.datasets import dataset_from_items
from ted.runs.evidence import measure_evidence, plan_evidence
from ted.store import Store
from ted.store.records import RewriteOp
from ted.teacher.compression import compress_library
from ted.testing.classroom import HARMFUL, LESSONS, Classroom, problems

pytestmark = pytest.mark.anyio

LIB = "arith"
NEUTRAL = "Estimate the magnitude of the answer before computing, and compare it with the final result."


@pytest.fixture
async def store(db_path):
    async with Store.open(db_path) as s:
        yield s


@pytest.fixture
async def library(store):
    """E1 helps subtraction; E2 spoils multiplication and addition; E3 changes nothing."""
    for text in (LESSONS["subtraction"], HARMFUL["multiplication"], NEUTRAL):
        await agent.add_experience(store, LIB, text)


async def measure(store, student, samples=1, max_calls=1000, **kw):
    data = await dataset_from_items(problems(9))
    measurement = await plan_evidence(store, LIB, data.problems, samples=samples, **kw)
    return await measure_evidence(store, Ledger(store), student, measurement, dataset="inline", max_calls=max_calls)


async def test_evidence_ranks_a_helpful_lesson_above_a_harmful_one(store, library):
    student = Classroom().models()("scripted:student")
    report = await measure(store, student)
    assert [(m.id, round(m.difference, 4), m.flagged) for m in report.lessons] == [
        ("E1", 0.3333, False),  # without it the three subtractions go wrong
        ("E3", 0.0, False),
        ("E2", -0.3333, True),  # without it the three additions come right: removing it helps
    ]
    assert report.accuracy == pytest.approx(1 / 3)  # with all three: only the subtractions
    e1, e3, e2 = report.lessons
    assert e1.interval.low >= 0 and e2.interval.high <= 0 and e3.interval.low == e3.interval.high == 0
    # Four arms (every lesson, and each one left out) × 9 problems, every prompt a different one.
    assert report.calls == student.calls == 36

    # Kept with the lessons, and shown where lessons are read.
    items = {i.id: i for i in (await agent.get_experiences(store, LIB)).items}
    assert items["E2"].evidence.flagged and items["E2"].evidence.difference == pytest.approx(-1 / 3)
    assert items["E1"].evidence.problems == 9
    stored = {e.id: e.evidence for e in await store.experiences(LIB)}
    assert (stored["E1"].version, stored["E1"].dataset, stored["E1"].samples) == (3, "inline", 1)
    [summary] = await store.list_libraries()
    assert summary.flagged == 1

    # Measuring changed no lesson and counted no use.
    assert all(e.usage_count == 0 for e in await store.experiences(LIB))
    assert (await store.library_state(LIB)).version == 3


async def test_the_same_measurement_is_not_paid_twice(store, library):
    student = Classroom().models()("scripted:student")
    first = await measure(store, student)
    again = await measure(store, student)
    assert student.calls == 36 and again.lessons == first.lessons  # answered from the ledger
    other = Classroom().models()("scripted:other-student")
    await measure(store, other)
    assert other.calls == 36  # another student is another measurement


async def test_the_estimate_is_exact_and_the_budget_is_kept_before_any_call(store, library, db_path):
    student = Classroom().models()("scripted:student")
    data = await dataset_from_items(problems(9))
    measurement = await plan_evidence(store, LIB, data.problems, samples=2)
    guess = measurement.estimate()
    assert (guess.lessons, guess.problems, guess.calls, guess.upper_bound) == (3, 9, 72, 72)
    before = dump_database(db_path)
    with pytest.raises(InvalidInput, match=r"takes 72 answers, over the budget of 50.*about 6 fit.*Nothing was called"):
        await measure_evidence(store, Ledger(store), student, measurement, dataset="inline", max_calls=50)
    assert student.calls == 0 and dump_database(db_path) == before
    with pytest.raises(NotFound):
        await plan_evidence(store, "nope", data.problems)
    with pytest.raises(InvalidInput, match="has no lessons to measure"):
        await plan_evidence(store, LIB, data.problems, version=0)


async def test_a_rewritten_lesson_loses_its_evidence(store, library):
    await measure(store, Classroom().models()("scripted:student"))
    await store.apply(LIB, [RewriteOp(id="E3", text="Estimate first, then compute.")], "manual", "reworded")
    lessons = {e.id: e.evidence for e in await store.experiences(LIB)}
    assert lessons["E3"] is None and lessons["E1"] is not None  # measured on other words
    served = {i.id: i.evidence for i in (await agent.get_experiences(store, LIB, version=3)).items}
    assert served["E3"] is not None  # version 3 still has the words it was measured on


async def test_compression_by_evidence_drops_the_harmful_lesson_first(store, library):
    await measure(store, Classroom().models()("scripted:student"))
    await agent.record_attempt(  # E2 is the most used: by usage it would stay
        store, library=LIB, task="What is 19 * 8?", trajectory="[E2] [E2]", answer="150", ground_truth="152"
    )
    teacher = Classroom().models()("scripted:teacher")  # its plan deletes the lowest-priority lesson
    await store.configure(LIB, max_items=2)
    by_usage = await compress_library(store, LIB, teacher=teacher, dry_run=True)
    assert [op.id for op in by_usage.operations] == ["E1"]
    await store.configure(LIB, priority="evidence")
    by_evidence = await compress_library(store, LIB, teacher=teacher)
    assert [op.id for op in by_evidence.operations] == ["E2"]
    assert [i.id for i in (await agent.get_experiences(store, LIB)).items] == ["E1", "E3"]
