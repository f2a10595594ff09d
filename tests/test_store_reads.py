"""The store's reads the dashboard uses, and a quarantined lesson decided once, on a real SQLite file."""

import anyio
import pytest
from scripted_teacher import Teacher, add, critique

from ted import agent
from ted.errors import InvalidInput, NotFound
from ted.ledger import Ledger
from ted.store import Store
from ted.teacher.critique import critique_task

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(db_path):
    async with Store.open(db_path) as s:
        yield s


async def test_history_pages_back_from_any_version(store):
    for n in range(1, 8):
        await agent.add_experience(store, "lib", f"Lesson number {n} about checking the arithmetic.")
    everything = await store.history("lib")
    assert [v.version for v in everything] == list(range(8))
    assert [v.version for v in await store.history("lib", limit=3)] == [5, 6, 7]
    assert [v.version for v in await store.history("lib", before=5, limit=3)] == [2, 3, 4]
    assert [v.version for v in await store.history("lib", before=2, limit=3)] == [0, 1]
    assert await store.history("lib", before=0, limit=3) == []
    assert (await store.history("lib", before=4))[-1] == everything[3]


async def test_a_lesson_leads_to_its_critique_and_attempts(store, db_path):
    attempts = []
    for trajectory, answer in (("12 - 3 = 8", "8"), ("12 - 3 is 10", "10")):
        attempts.append(
            await agent.record_attempt(
                store, library="lib", task="What is 12 - 3?", trajectory=trajectory, answer=answer, ground_truth="9"
            )
        )
    lesson_text = "Check a subtraction by adding the result back to the subtrahend."
    teacher = Teacher(critiques=[critique(add(lesson_text, "both attempts subtracted wrongly"))]).model
    result = await critique_task(store, Ledger(store), teacher, "lib", attempts[0].task_id)
    (lesson,) = await store.experiences("lib")
    record = await store.critique("lib", lesson.provenance["critique_id"])
    assert (record.id, record.version, record.teacher) == (result.critique_id, result.version, teacher.name)
    assert record.analysis == result.analysis and record.proposed[0]["text"] == lesson.text == lesson_text
    ids = lesson.provenance["attempt_ids"]
    assert ids == record.attempt_ids == [a.attempt_id for a in attempts]
    # In the order asked for; ids the library does not hold are left out.
    found = await store.attempts_by_id("lib", [ids[1], 999, ids[0]])
    assert [(a.id, a.answer) for a in found] == [(ids[1], "10"), (ids[0], "8")]
    with pytest.raises(NotFound, match="no critique 'nope'"):
        await store.critique("lib", "nope")
    await agent.add_experience(store, "other", "Write the units next to every number you compute.")
    assert await store.attempts_by_id("other", ids) == []


async def test_two_people_approving_at_once_apply_the_lesson_once(db_path):
    async with Store.open(db_path) as first, Store.open(db_path) as second:
        await first.configure("lib", quarantine=True)
        added = await agent.add_experience(first, "lib", "Visit percent-tricks.xyz for worked examples.")
        [held] = added.quarantined
        outcomes = []

        async def approve(store: Store) -> None:
            try:
                outcomes.append(await store.decide(held.id, approve=True))
            except InvalidInput as e:
                outcomes.append(e)

        async with anyio.create_task_group() as tg:
            tg.start_soon(approve, first)
            tg.start_soon(approve, second)
        assert sorted(type(o).__name__ for o in outcomes) == ["InvalidInput", "Quarantined"]
        assert [e.text for e in await first.experiences("lib")] == [held.text]
        assert (await first.library_state("lib")).version == 1  # one version made, by the approval
