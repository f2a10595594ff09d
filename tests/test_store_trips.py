"""What the store's hot paths cost in SQL, counted on the connections themselves: a number of
statements that does not grow with the database, and one transaction per change."""

import pytest

from ted import agent
from ted.store import Store, database
from ted.store.records import AddOp

pytestmark = pytest.mark.anyio

FRAMING = ("BEGIN", "COMMIT", "ROLLBACK")


class Statements:
    """Every statement the store's connections run, as SQLite's trace callback reports it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.sql: list[str] = []
        connect = database._connect

        def traced(path):
            db = connect(path)
            db.set_trace_callback(self.sql.append)
            return db

        monkeypatch.setattr(database, "_connect", traced)

    async def during(self, call) -> list[str]:
        """The statements `call()` ran, without the transactions' framing."""
        self.sql.clear()
        await call()
        return [s for s in self.sql if not s.startswith(FRAMING)]


async def fill(store: Store, libraries: range, lessons: int, attempts: int) -> None:
    for n in libraries:
        name = f"lib-{n:04d}"
        await store.apply(name, [AddOp(text=f"Lesson {k} of {n}: check units.") for k in range(lessons)], "add", "x")
        for a in range(attempts):
            await agent.record_attempt(
                store, library=name, task=f"Task {a}", trajectory="Used [E1].", answer="1", ground_truth="1"
            )


async def test_list_libraries_is_one_statement_however_many_libraries_and_attempts(db_path, monkeypatch):
    trace = Statements(monkeypatch)
    async with Store.open(db_path) as store:
        await fill(store, range(3), lessons=2, attempts=1)
        small = await trace.during(store.list_libraries)
        await fill(store, range(3, 40), lessons=5, attempts=6)
        large = await trace.during(store.list_libraries)
        assert len(small) == len(large) == 1
        page = await store.list_libraries(after="lib-0010", limit=5)
        assert [s.name for s in page] == [f"lib-{n:04d}" for n in range(11, 16)]
        assert page[0].attempts == 6 and page[0].items == 5


async def test_reading_the_lessons_does_not_grow_with_the_library(db_path, monkeypatch):
    trace = Statements(monkeypatch)
    async with Store.open(db_path) as store:
        await fill(store, range(2), lessons=2, attempts=0)
        await store.apply("lib-0001", [AddOp(text=f"Extra lesson {k}: draw it.") for k in range(13)], "add", "x")
        few = await trace.during(lambda: store.experience_prompt("lib-0000"))
        many = await trace.during(lambda: store.experience_prompt("lib-0001"))
        assert len(few) == len(many) <= 2
        # Asked again with nothing written since, the version is answered from memory.
        assert await trace.during(lambda: store.experience_prompt("lib-0001")) == []


async def test_an_attempt_is_one_transaction_whatever_it_cites(db_path, monkeypatch):
    trace = Statements(monkeypatch)
    async with Store.open(db_path) as store:
        await store.apply("lib", [AddOp(text=f"Lesson {k}: check units.") for k in range(15)], "add", "x")

        def record(cited: list[str]):
            return lambda: agent.record_attempt(
                store, library="lib", task="Add 2 and 2.", trajectory="4", answer="4", used_experience_ids=cited
            )

        commits = store._database.commits
        one = await trace.during(record(["E1"]))
        assert store._database.commits == commits + 1
        fifteen = await trace.during(record([f"E{k}" for k in range(1, 16)]))
        assert len(one) == len(fifteen)  # citations are counted by one statement, not one per lesson
        counts = {e.id: e.usage_count for e in await store.experiences("lib")}
        assert counts["E1"] == 2 and counts["E15"] == 1
