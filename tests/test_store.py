"""The store and library operations on a real SQLite file."""

import sqlite3

import pytest

from ted import agent
from ted.errors import InvalidInput, NotFound
from ted.ledger import Ledger
from ted.prompts import experience_prompt
from ted.store import Store
from ted.store.migrations import MIGRATIONS
from ted.store.records import AddOp, DeleteOp, MergeOp, RewriteOp
from ted.tokens import count_tokens

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(db_path):
    async with Store.open(db_path) as s:
        yield s


async def test_schema_is_migrated_once_with_wal_and_recorded(db_path):
    async with Store.open(db_path):
        pass
    async with Store.open(db_path):  # a second open applies nothing again
        pass
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        numbers = [n for (n,) in db.execute("SELECT number FROM migrations ORDER BY number")]
    assert numbers == list(range(1, len(MIGRATIONS) + 1))


async def test_newer_schema_is_refused(db_path):
    async with Store.open(db_path):
        pass
    with sqlite3.connect(db_path) as db:
        db.execute("INSERT INTO migrations VALUES (99, 'future', 'now')")
    with pytest.raises(Exception, match="newer ted-mcp"):
        async with Store.open(db_path):
            pass


async def test_ids_are_stable_and_never_reused(store):
    await agent.add_experience(store, "lib", "Lesson one.")
    await agent.add_experience(store, "lib", "Lesson two.")
    await store.apply("lib", [DeleteOp(id="E2")], kind="manual", reason="test")
    result = await agent.add_experience(store, "lib", "Lesson three.")
    assert result.operations[0].id == "E3"
    assert [e.id for e in await store.experiences("lib")] == ["E1", "E3"]


async def test_merge_sums_counts_keeps_provenance_and_redirects_citations(store):
    for text in ("Units first.", "Check units.", "Unrelated."):
        await agent.add_experience(store, "lib", text)
    await agent.record_attempt(store, library="lib", task="t", trajectory="[E1][E2]", ground_truth="1", answer="1")
    await agent.record_attempt(store, library="lib", task="t", trajectory="[E2]", ground_truth="1", answer="2")
    merged = await store.apply("lib", [MergeOp(ids=["E1", "E2"], text="Check units first.")], "compression", "t")
    assert merged.operations[0].into == "E4"
    e4 = next(e for e in await store.experiences("lib") if e.id == "E4")
    assert (e4.usage_count, e4.helpful_count, e4.harmful_count) == (3, 2, 1)
    assert e4.provenance == {"merged_from": ["E1", "E2"]}

    # Citing both merged-away ids counts E4 once, and says so.
    result = await agent.record_attempt(store, library="lib", task="t", trajectory="[E1] [E2] [E9]")
    assert result.counted_ids == ["E4"]
    assert result.redirected == {"E1": "E4", "E2": "E4"}
    assert result.unknown_ids == ["E9"]
    assert result.usage_counts == {"E4": 4}


async def test_failed_operation_applies_nothing(store, db_path):
    await agent.add_experience(store, "lib", "Keep me.")
    from conftest import dump_database

    before = dump_database(db_path)
    with pytest.raises(InvalidInput, match="Operation 2 .*E7"):
        await store.apply("lib", [AddOp(text="New."), RewriteOp(id="E7", text="x")], "manual", "t")
    with pytest.raises(InvalidInput, match="lists an id twice"):
        await store.apply("lib", [MergeOp(ids=["E1", "E1"], text="x")], "manual", "t")
    assert dump_database(db_path) == before


async def test_every_change_is_a_version_and_rollback_restores_any_of_them(store):
    await agent.add_experience(store, "lib", "A.")  # v1
    await agent.add_experience(store, "lib", "B.")  # v2
    await store.apply("lib", [RewriteOp(id="E1", text="A, rewritten.")], "manual", "edit")  # v3
    await store.apply("lib", [MergeOp(ids=["E1", "E2"], text="AB.")], "compression", "merge")  # v4

    back = await agent.rollback(store, "lib", 2)
    assert back.version == 5
    assert [(e.id, e.text) for e in await store.experiences("lib")] == [("E1", "A."), ("E2", "B.")]
    history = await store.history("lib")
    assert [v.kind for v in history] == ["create", "add", "add", "manual", "compression", "rollback"]
    assert history[5].reason == "rollback to version 2"

    diff = await agent.diff(store, "lib", 2, 4)
    assert [i.id for i in diff.added] == ["E3"] and [i.id for i in diff.removed] == ["E1", "E2"]
    diff = await agent.diff(store, "lib", 2, 3)
    assert [(c.id, c.before, c.after) for c in diff.changed] == [("E1", "A.", "A, rewritten.")]

    # The rollback can itself be undone.
    await agent.rollback(store, "lib", 4)
    assert [e.text for e in await store.experiences("lib")] == ["AB."]


async def test_rollback_errors_name_the_fix(store):
    with pytest.raises(NotFound, match="no library named 'nope'"):
        await agent.rollback(store, "nope", 0)
    await agent.add_experience(store, "lib", "A.")
    with pytest.raises(NotFound, match="versions run from 0 to 1"):
        await agent.rollback(store, "lib", 5)
    with pytest.raises(InvalidInput, match="already has the content of version 1"):
        await agent.rollback(store, "lib", 1)


async def test_budget_counts_the_prompt_as_prepended(store):
    await store.ensure_library("tiny", settings=None)
    prompt = await agent.get_experiences(store, "tiny")
    assert (prompt.prompt, prompt.tokens, prompt.version) == ("", 0, 0)
    for i in range(15):
        await agent.add_experience(store, "tiny", f"Lesson number {i} about checking the arithmetic twice.")
    # No version is ever over budget: the 16th lesson is refused, saying how to make room.
    with pytest.raises(InvalidInput, match=r"over its budget \(16 lessons, cap 15; .*Compress it first"):
        await agent.add_experience(store, "tiny", "Lesson number 15 about checking the arithmetic twice.")
    prompt = await agent.get_experiences(store, "tiny")
    assert (len(prompt.items), prompt.version, prompt.over_budget) == (15, 15, False)
    await store.configure("tiny", max_items=10)  # a budget can be lowered; the next change must compress
    prompt = await agent.get_experiences(store, "tiny")
    assert len(prompt.items) == 15 and prompt.over_budget
    from ted.tokens import count_tokens

    assert prompt.tokens == count_tokens(prompt.prompt)
    assert prompt.items[0].tokens == count_tokens(prompt.items[0].text)


async def test_ledger_totals_and_version_counts_are_built_for_an_older_database(db_path, monkeypatch):
    """A database from before the ledger kept its totals, and versions their counts, gets them
    once: the totals summed by the migration, each version's tokens counted when the store opens."""
    import ted.store.database

    older = next(i for i, (name, _) in enumerate(MIGRATIONS) if "ledger totals" in name)
    monkeypatch.setattr(ted.store.database, "MIGRATIONS", MIGRATIONS[:older])
    db = ted.store.database._open_writer(db_path, False)  # the schema as that ted-mcp left it
    for n in range(7):
        db.execute(
            "INSERT INTO model_calls (role, model, input_tokens, output_tokens, cost_usd, latency_ms, ok, library,"
            " job_id, created_at) VALUES (?, 'm:x', 100, 10, ?, 5, ?, 'lib', ?, '2026-01-01')",
            ("student" if n % 2 else "critique", None if n == 6 else 0.01, int(n != 3), "job-1" if n < 4 else None),
        )
    db.execute(
        "INSERT INTO libraries (name, settings, created_at, updated_at) VALUES ('lib', '{}', ?, ?)",
        ("2026-01-01T00:00:00+00:00",) * 2,
    )
    snapshot = '[{"id": "E1", "text": "Check units."}, {"id": "E2", "text": "Estimate first."}]'
    db.execute(
        "INSERT INTO library_versions (library_id, version, kind, reason, operations, snapshot, created_at)"
        " VALUES (1, 0, 'create', '', '[]', '[]', ''), (1, 1, 'import', '', '[]', ?, '')",
        (snapshot,),
    )
    db.execute("UPDATE libraries SET version = 1")
    db.close()
    monkeypatch.setattr(ted.store.database, "MIGRATIONS", MIGRATIONS)
    async with Store.open(db_path) as store:
        ledger = Ledger(store)
        job = [(t.role, t.calls, t.failed, t.input_tokens, t.cost_usd) for t in await ledger.totals(job_id="job-1")]
        everything = [(t.role, t.calls, t.cost_usd) for t in await ledger.totals()]
        [summary] = await store.list_libraries()
    text = experience_prompt([("E1", "Check units."), ("E2", "Estimate first.")])
    assert (summary.items, summary.tokens) == (2, count_tokens(text))
    assert job == [("critique", 2, 0, 200, pytest.approx(0.02)), ("student", 2, 1, 200, pytest.approx(0.02))]
    assert everything == [("critique", 4, None), ("student", 3, pytest.approx(0.03))]  # one critique unpriced
