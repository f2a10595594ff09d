"""A served version and a working version per library, on a real SQLite file: what is served by
default, what a promotion pins and records, what critiques change, how citations of a served
lesson count, and that a refused request changes nothing."""

import pytest
from conftest import dump_database

from ted import agent
from ted.errors import NotFound
from ted.ledger import Ledger
from ted.store import Store
from ted.store.records import RewriteOp
from ted.teacher.critique import critique_task
from ted.testing.classroom import LESSONS, Classroom
from ted.tokens import count_tokens

pytestmark = pytest.mark.anyio

LIB = "arith"
UNITS = "Check the units of every quantity before adding them."


@pytest.fixture
async def store(db_path):
    async with Store.open(db_path) as s:
        yield s


async def test_a_library_serves_its_working_version_until_it_is_promoted(store):
    await agent.add_experience(store, LIB, UNITS)
    served = await agent.get_experiences(store, LIB)
    assert (served.version, served.served_version, served.working_version) == (1, 1, 1)
    [summary] = await store.list_libraries()
    assert (summary.serves, summary.served_version, summary.version) == ("working", 1, 1)

    await agent.add_experience(store, LIB, LESSONS["subtraction"])
    assert (await agent.get_experiences(store, LIB)).version == 2  # today's behaviour: the newest is served


async def test_a_promotion_pins_what_agents_read_and_is_in_the_history(store):
    await agent.add_experience(store, LIB, UNITS)
    done = await agent.promote(store, LIB, 1, by="test", reason="checked by hand")
    assert (done.served_version, done.working_version, done.served_before) == (1, 1, None)
    await agent.add_experience(store, LIB, LESSONS["subtraction"])
    await store.apply(LIB, [RewriteOp(id="E1", text="Check the units of every quantity twice.")], "manual", "edit")

    served = await agent.get_experiences(store, LIB)
    assert (served.version, served.served_version, served.working_version) == (1, 1, 3)
    assert [(i.id, i.text) for i in served.items] == [("E1", UNITS)]  # the words it had then
    assert served.items[0].tokens == count_tokens(UNITS, "cl100k_base")
    assert f"[E1] {UNITS}\n" in served.prompt and "twice" not in served.prompt
    working = await agent.get_experiences(store, LIB, version="working")
    assert [i.id for i in working.items] == ["E1", "E2"] and working.version == 3
    assert "twice" in working.items[0].text
    assert (await agent.get_experiences(store, LIB, version=2)).version == 2

    [summary] = await store.list_libraries()
    assert (summary.serves, summary.served_version, summary.version) == ("promoted", 1, 3)
    history = await store.history(LIB)
    [promotion] = history[1].promotions
    assert (promotion.decision, promotion.by, promotion.reason, promotion.figures) == (
        "promoted",
        "test",
        "checked by hand",
        None,
    )
    assert all(not v.promotions for v in history if v.version != 1)
    assert await store.promotions(LIB) == [promotion]

    again = await agent.promote(store, LIB, "working", by="test")
    assert (again.served_version, again.served_before) == (3, 1)
    assert (await agent.get_experiences(store, LIB)).version == 3


async def test_serving_the_working_version_again(store):
    await agent.add_experience(store, LIB, UNITS)
    assert await store.serve(LIB, "promoted", by="test") is not None
    assert await store.serve(LIB, "promoted", by="test") is None  # nothing changes, nothing recorded
    await agent.add_experience(store, LIB, LESSONS["subtraction"])
    assert (await agent.get_experiences(store, LIB)).version == 1
    switched = await store.serve(LIB, "working", by="test")
    assert switched.reason == "the library serves its working version from now on"
    assert (await agent.get_experiences(store, LIB)).version == 2
    assert [(p.version, p.served_before) for p in await store.promotions(LIB)] == [(1, None), (2, 1)]


async def test_a_refused_promotion_changes_nothing(store, db_path):
    await agent.add_experience(store, LIB, UNITS)
    before = dump_database(db_path)
    with pytest.raises(NotFound, match="its newest is 1"):
        await agent.promote(store, LIB, 7, by="test")
    with pytest.raises(NotFound, match="no library named 'nope'"):
        await agent.promote(store, "nope", 0, by="test")
    with pytest.raises(NotFound, match="has no version 9"):
        await agent.get_experiences(store, LIB, version=9)
    assert dump_database(db_path) == before


async def test_a_served_lesson_the_working_version_dropped_still_counts_when_cited(store):
    await agent.add_experience(store, LIB, UNITS)
    await agent.add_experience(store, LIB, LESSONS["subtraction"])
    await agent.promote(store, LIB, 2, by="test")
    await agent.rollback(store, LIB, 1)  # the working version drops E2; E2 stays served
    counted = await agent.record_attempt(
        store, library=LIB, task="What is 19 - 8?", trajectory="19 - 8 = 11 [E2] [E1]", answer="11", ground_truth="11"
    )
    assert (counted.counted_ids, counted.unknown_ids) == (["E2", "E1"], [])
    served = await agent.get_experiences(store, LIB)
    assert {i.id: i.usage_count for i in served.items} == {"E1": 1, "E2": 1}


async def test_a_critique_changes_the_working_version_only_once_a_version_is_promoted(store):
    classroom = Classroom()
    teacher = classroom.models()(classroom.teacher)
    await agent.add_experience(store, LIB, UNITS)
    await agent.promote(store, LIB, 1, by="test")
    attempt = await agent.record_attempt(
        store, library=LIB, task="What is 19 - 8?", trajectory="about 12", answer="12", ground_truth="11"
    )
    result = await critique_task(store, Ledger(store), teacher, LIB, attempt.task_id)
    assert (result.version, result.served_version) == (2, 1)
    assert [i.text for i in (await agent.get_experiences(store, LIB)).items] == [UNITS]
    assert LESSONS["subtraction"] in (await agent.get_experiences(store, LIB, version="working")).prompt

    # A library that serves its working version serves the critique at once, as before.
    await store.serve(LIB, "working", by="test")
    attempt = await agent.record_attempt(
        store, library=LIB, task="What is 12 * 3?", trajectory="about 37", answer="37", ground_truth="36"
    )
    result = await critique_task(store, Ledger(store), teacher, LIB, attempt.task_id)
    assert result.version == result.served_version == 3
    assert LESSONS["multiplication"] in (await agent.get_experiences(store, LIB)).prompt
