"""Lessons chosen per task (`ted.store.selection`): a library that keeps an archive serves each
task the lessons that fit it, within the prompt's budget, the same way every time; usage counts
only what was served; and a distillation's student sees what an agent would be served."""

import re

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ted import agent
from ted.errors import InvalidInput
from ted.ledger import Ledger
from ted.runs.datasets import dataset_from_items
from ted.runs.distill import run_job
from ted.runs.prepare import create_job, prepare_job
from ted.store import Store
from ted.store.records import AddOp, LibrarySettings
from ted.store.selection import LessonIndex, select
from ted.testing.classroom import LESSONS, Classroom, problems
from ted.tokens import count_tokens

pytestmark = pytest.mark.anyio

LIB = "arith"
# The benign lessons of the design notes: a realistic archive around the classroom's own.
BENIGN = [
    "Check your arithmetic before concluding: recompute each intermediate result once.",
    "When two approaches give different answers, verify the assumptions of each instead of averaging.",
    "For rate problems, convert every quantity to the same unit of time before combining them.",
    "When a fraction of a remainder is taken, compute the remainder first, then apply the fraction.",
    "In a figure, read values from the axes' labelled ticks, not from the gridlines' spacing alone.",
    "When counting shapes in a figure, count systematically by size, then sum; do not count twice.",
    "If a question asks for a percentage change, divide by the original value, not the new one.",
    "When a puzzle hides a secret word, test every-nth-letter and first-letter patterns before guessing.",
    "The key to most modular-arithmetic problems is reducing each term before multiplying.",
    "In a system of linear equations, eliminate the variable with the smallest coefficients first.",
    "For probability without replacement, update the denominator after each draw.",
    "In date problems, count the days of each month explicitly and check for leap years.",
]
ARCHIVE = [*BENIGN, LESSONS["subtraction"], LESSONS["multiplication"], LESSONS["addition"]]
SUBTRACTION = "What is 40 - 7? (subtraction)"


@pytest.fixture
async def store(db_path):
    async with Store.open(db_path) as s:
        yield s


async def archive(store: Store, texts=ARCHIVE, **settings) -> None:
    await store.configure(LIB, selection="relevant", **{"max_items": 3, "token_budget": 200, **settings})
    await store.apply(LIB, [AddOp(text=t) for t in texts], "import", "archive")


def ids_of(texts: list[str], prompt) -> list[str]:
    return [i.id for i in prompt.items if i.text in texts]


async def test_a_task_is_served_the_lessons_that_fit_it_within_the_budget(store, db_path):
    await archive(store)
    served = await agent.get_experiences(store, LIB, task=SUBTRACTION)
    assert LESSONS["subtraction"] in {i.text for i in served.items}
    assert LESSONS["multiplication"] not in served.prompt
    assert len(served.items) <= 3 and served.tokens <= 200 and not served.over_budget
    assert served.tokens == count_tokens(served.prompt, "cl100k_base")
    assert (served.max_items, served.token_budget) == (3, 200)
    assert all(f"[{i.id}] {i.text}" in served.prompt for i in served.items)

    times = await agent.get_experiences(store, LIB, task="What is 12 * 31? (multiplication)")
    assert LESSONS["multiplication"] in times.prompt and LESSONS["subtraction"] not in times.prompt

    # The same task and version: the same lessons, from this process and from a fresh one.
    assert (await agent.get_experiences(store, LIB, task=SUBTRACTION)).prompt == served.prompt
    async with Store.open(db_path) as other:
        assert (await agent.get_experiences(other, LIB, task=SUBTRACTION)).prompt == served.prompt

    # No task: priority decides (all unused here), then library order, within the budget.
    whole = await agent.get_experiences(store, LIB)
    assert [i.text for i in whole.items] == ARCHIVE[: len(whole.items)] and whole.tokens <= 200


async def test_the_whole_library_stays_the_default(store):
    for text in ARCHIVE[:3]:
        await agent.add_experience(store, LIB, text)
    served = await agent.get_experiences(store, LIB, task=SUBTRACTION)
    assert [i.text for i in served.items] == ARCHIVE[:3]


async def test_the_archive_has_its_own_cap(store):
    await archive(store, ARCHIVE[:5], archive_items=6)
    await agent.add_experience(store, LIB, ARCHIVE[5])  # 6 lessons: over the prompt's 3, within the archive
    with pytest.raises(InvalidInput, match=r"over its budget \(7 lessons, cap 6;.*--archive-items N"):
        await agent.add_experience(store, LIB, ARCHIVE[6])
    with pytest.raises(InvalidInput, match="must hold at least one prompt's budget"):
        await store.configure(LIB, archive_items=2)


async def test_usage_counts_only_the_lessons_served(store):
    await archive(store)
    served = await agent.get_experiences(store, LIB, task=SUBTRACTION)
    [sub] = ids_of([LESSONS["subtraction"]], served)
    times = f"E{ARCHIVE.index(LESSONS['multiplication']) + 1}"  # a lesson of the library, not served for this task
    counted = await agent.record_attempt(
        store,
        library=LIB,
        task=SUBTRACTION,
        trajectory=f"40 - 7 = 33 [{sub}] [{times}] [E999]",
        answer="33",
        ground_truth="33",
    )
    assert (counted.counted_ids, counted.not_served_ids, counted.unknown_ids) == ([sub], [times], ["E999"])
    usage = {e.id: e.usage_count for e in await store.experiences(LIB)}
    assert usage[sub] == 1 and usage[times] == 0


async def test_a_distillation_student_sees_what_the_task_is_served(store):
    await archive(store, BENIGN, max_items=2)
    asked: list[str] = []

    async def note(step: str, problem: int | None, text: str) -> None:
        if step == "student":
            asked.append(text)

    models = Classroom().models(note)
    prepared = await prepare_job(
        store,
        models,
        await dataset_from_items(problems(9, named=True)),
        library=LIB,
        student="scripted:student",
        teacher="scripted:teacher",
        epochs=2,
        rollouts=2,
        concurrency=3,
    )
    with anyio.fail_after(30):
        job = await run_job(store, Ledger(store), models, (await create_job(store, prepared)).id)
    assert job.state == "done"
    # Epoch 1: p1 and p2 (first batch) had no lesson yet; from then on each task was served its own.
    assert [(e.correct, e.attempts) for e in job.epochs] == [(14, 18), (18, 18)]
    assert len(asked) == 36 and all(len(re.findall(r"^\[E\d+\] ", t, re.MULTILINE)) <= 2 for t in asked)
    later = [t for t in asked if "(subtraction)" in t][2:]  # after p1's first two rollouts
    assert later and all(LESSONS["subtraction"] in t and LESSONS["multiplication"] not in t for t in later)
    usage = {e.text: e.usage_count for e in await store.experiences(LIB)}
    assert usage[LESSONS["subtraction"]] > 0 and usage[LESSONS["multiplication"]] > 0
    assert all(usage[text] == 0 for text in BENIGN)  # cited by none


WORDS = st.sampled_from(
    "the of subtraction multiplication add carry units tens number numbers check answer ratio figure count "
    "probability date month equation modular rate time remainder fraction estimate".split()
)
LESSON = st.lists(WORDS, min_size=1, max_size=40).map(" ".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    texts=st.lists(LESSON, min_size=1, max_size=30, unique=True),
    usage=st.lists(st.integers(0, 50), min_size=30, max_size=30),
    task=st.one_of(st.none(), st.text(max_size=300), LESSON),
    max_items=st.integers(1, 10),
    token_budget=st.integers(50, 400),
)
def test_any_selection_is_within_budget_and_the_same_every_time(texts, usage, task, max_items, token_budget):
    from ted.store.records import ExperienceItem

    lessons = [
        ExperienceItem(id=f"E{n + 1}", text=t, usage_count=usage[n], helpful_count=0, harmful_count=0, tokens=1)
        for n, t in enumerate(texts)
    ]
    config = LibrarySettings(selection="relevant", max_items=max_items, token_budget=token_budget)
    chosen = select(lessons, task, config, LessonIndex())
    assert len(chosen.lessons) <= max_items and chosen.tokens <= token_budget
    assert chosen.tokens == count_tokens(chosen.prompt, "cl100k_base")
    assert [int(e.id[1:]) for e in chosen.lessons] == sorted(int(e.id[1:]) for e in chosen.lessons)
    assert select(lessons, task, config, LessonIndex()) == chosen  # a fresh index agrees
    if task is not None:
        words = set(re.findall(r"[^\W_]+", task.lower()))
        # A lesson sharing no word with the task is only served on its own priority.
        for e in chosen.lessons:
            assert set(re.findall(r"[^\W_]+", e.text.lower())) & words or e.usage_count > 0
