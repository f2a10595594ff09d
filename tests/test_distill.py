"""The TED loop (`ted.runs.distill`) in-process: the classroom's deterministic student and teacher as
scripted models, a real SQLite file per test. What is checked is the protocol itself — calls per
problem and epoch, the order a batch is applied in, the budget after every batch — and that a
job stopped by a cancel, a cap, a failing model or a crash never leaves half a batch and, once
resumed, pays for no call twice."""

import json
import re
import sqlite3
from collections import Counter

import anyio
import pytest

from ted.errors import ConfigError, InvalidInput, ModelError, ModelRefused
from ted.ledger import Ledger
from ted.llm import GenerationSettings, ScriptedModel
from ted.prompts import experience_prompt
from ted.runs import jobs
from ted.runs.datasets import dataset_from_items
from ted.runs.distill import run_job
from ted.runs.jobs import DistillParams, Job
from ted.runs.prepare import estimate, prepare_job
from ted.runs.report import distill_report
from ted.store import Store
from ted.store.records import AddOp
from ted.tasks import task_id_for
from ted.testing.classroom import Classroom, Hook, problem_of, problems
from ted.tokens import count_tokens

pytestmark = pytest.mark.anyio

LIB = "arith"


@pytest.fixture
async def store(db_path):
    async with Store.open(db_path) as s:
        yield s


def classroom_models(before: Hook | None = None, classroom: Classroom | None = None):
    return (classroom or Classroom()).models(before)


async def create(store: Store, n: int = 9, **params) -> Job:
    data = await dataset_from_items(problems(n))
    params = DistillParams.model_validate(
        {"library": LIB, "student": "scripted:student", "teacher": "scripted:teacher", **params}
    )
    return await jobs.create(store, params, data.problems, "inline")


async def run(store: Store, job: Job, models=None, **kw) -> Job:
    with anyio.fail_after(30):  # a bug that hangs the loop fails the test instead of the suite
        return await run_job(store, Ledger(store), models or classroom_models(), job.id, **kw)


def paid_calls(db_path, job_id: str) -> Counter:
    """Successful model calls per role: what the job paid for (replays are not calls)."""
    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT role FROM model_calls WHERE job_id = ? AND ok", (job_id,)).fetchall()
    return Counter(role for (role,) in rows)


def calls_per_task(db_path, job_id: str, role: str) -> Counter:
    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT task_id FROM model_calls WHERE job_id = ? AND role = ?", (job_id, role)).fetchall()
    return Counter(task for (task,) in rows)


def tid(i: int) -> str:
    return task_id_for(problems(i + 1)[i]["question"])


def wrong_groups(db_path, job_id: str) -> Counter:
    """task id → the number of epochs in which its group had a wrong rollout."""
    with sqlite3.connect(db_path) as db:
        rows = db.execute(
            "SELECT task_id, epoch FROM attempts WHERE job_id = ? GROUP BY task_id, epoch HAVING min(correct) = 0",
            (job_id,),
        ).fetchall()
    return Counter(task for task, _ in rows)


def critiques(db_path) -> list[tuple]:
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT id, version, rejected FROM critiques ORDER BY id").fetchall()


async def library_now(store: Store) -> list[tuple]:
    return [(e.id, e.text, e.state, e.usage_count) for e in await store.experiences(LIB, active_only=False)]


async def versions(store: Store) -> list[tuple]:
    """The library's history as what each version did, without provenance (job and attempt ids differ)."""
    return [
        (v.version, v.kind, [(op.op, getattr(op, "id", None), getattr(op, "text", None)) for op in v.operations])
        for v in await store.history(LIB)
    ]


def over_budget(snapshot, settings) -> bool:
    tokens = count_tokens(experience_prompt((i.id, i.text) for i in snapshot), settings.encoding)
    return len(snapshot) > settings.max_items or tokens > settings.token_budget


async def assert_whole_batches(store: Store, db_path) -> None:
    """Every critique version of the library holds exactly the critiques its batch names."""
    by_version = Counter(version for _, version, _ in critiques(db_path) if version is not None)
    for version in await store.history(LIB):
        if version.kind == "critique":
            named = int(re.search(r"\((\d+) critiques\)", version.reason).group(1))
            assert by_version.pop(version.version) == named, version.reason
    assert not by_version, f"critiques recorded against versions that are not batches: {by_version}"


# -- the protocol -----------------------------------------------------------------------------


async def test_calls_follow_the_protocol(store, db_path):
    # 9 problems: p0, p3, p6 add (always right); p1, p4, p7 subtract and p2, p5, p8 multiply, right
    # only with that skill's lesson. One batch of 8, then p8 alone.
    job = await create(store, epochs=3, rollouts=5)
    finished = await run(store, job)

    assert (finished.state, finished.error, finished.problems_done) == ("done", None, 27)
    calls = paid_calls(db_path, job.id)
    assert calls["student"] == 9 * 3 * 5
    with sqlite3.connect(db_path) as db:
        groups = db.execute(
            "SELECT epoch, problem_id, count(*) FROM attempts WHERE job_id = ? GROUP BY epoch, problem_id", (job.id,)
        ).fetchall()
    assert sorted(groups) == sorted((e, f"p{i}", 5) for e in range(3) for i in range(9))
    # Only the five groups of batch 1 that lacked their lesson were wrong; each was critiqued
    # (one summary, one critique) and solved by the teacher once; p8, in the next batch, already
    # had the multiplication lesson, and nothing was wrong in epochs 2 and 3.
    wrong = {tid(i) for i in (1, 2, 4, 5, 7)}
    assert calls_per_task(db_path, job.id, "teacher-solve") == Counter(wrong)
    assert calls_per_task(db_path, job.id, "summarise") == Counter(wrong)
    assert calls_per_task(db_path, job.id, "critique") == Counter(wrong)
    assert calls["compress"] == 0

    # Ops in problem order: p1 adds subtraction, p2 multiplication; p4, p5, p7 repeat them.
    e1, e2, e3 = finished.epochs
    assert (e1.attempts, e1.correct, e1.all_correct_groups, e1.critiques, e1.operations, e1.rejected) == (
        45,
        20,
        4,
        5,
        2,
        3,
    )
    assert [(e.attempts, e.correct, e.critiques) for e in (e2, e3)] == [(45, 45, 0)] * 2
    assert [(e.items, e.version) for e in finished.epochs] == [(2, 1)] * 3
    assert [i.text.split(",")[0] for i in (await store.history(LIB))[-1].snapshot] == [
        "For subtraction",
        "For multiplication",
    ]

    guess = estimate(job.params, job_problems := (await jobs.problems(store, job.id))[0])
    assert guess.problems == len(job_problems) == 9
    assert guess.student_calls == calls["student"]
    assert guess.teacher_calls >= sum(n for role, n in calls.items() if role != "student")
    assert guess.input_tokens > 0 and guess.output_tokens > 0


async def test_the_cache_solves_each_problem_once_across_epochs(store, db_path):
    # Room for one lesson: each batch's compression evicts the newest, unused one (subtraction),
    # so the subtraction problems are wrong, and critiqued, in every epoch.
    await store.configure(LIB, max_items=1)
    job = await create(store, epochs=3, rollouts=3)
    finished = await run(store, job)
    assert finished.state == "done"

    wrong = wrong_groups(db_path, job.id)
    assert max(wrong.values()) == 3, wrong  # the same problem wrong in every epoch
    assert calls_per_task(db_path, job.id, "critique") == wrong
    assert calls_per_task(db_path, job.id, "summarise") == wrong
    assert calls_per_task(db_path, job.id, "teacher-solve") == Counter(set(wrong))


async def test_critique_all_critiques_every_group(store, db_path):
    job = await create(store, n=6, epochs=2, rollouts=2, critique_all=True)
    finished = await run(store, job)
    assert finished.state == "done"
    everyone = Counter({tid(i): 2 for i in range(6)})
    assert calls_per_task(db_path, job.id, "critique") == everyone
    assert calls_per_task(db_path, job.id, "summarise") == everyone
    assert calls_per_task(db_path, job.id, "teacher-solve") == Counter({tid(i): 1 for i in range(6)})
    assert [e.critiques for e in finished.epochs] == [6, 6]


async def test_concurrency_one_is_the_strict_sequential_order(store, db_path):
    job = await create(store, epochs=2, rollouts=3, concurrency=1)
    finished = await run(store, job)
    assert finished.state == "done"

    # p1's critique adds the subtraction lesson, which p4 (three problems later, same epoch)
    # already uses; likewise p2's multiplication lesson helps p5. Only p1 and p2 are critiqued.
    with sqlite3.connect(db_path) as db:
        order = [t for (t,) in db.execute("SELECT task_id FROM model_calls WHERE role = 'critique' ORDER BY id")]
        p4 = db.execute(
            "SELECT correct, cited FROM attempts WHERE job_id = ? AND epoch = 0 AND problem_id = 'p4'", (job.id,)
        ).fetchall()
    assert order == [tid(1), tid(2)]
    assert p4 == [(1, '["E1"]')] * 3
    history = await store.history(LIB)
    assert [(v.version, v.kind) for v in history] == [(0, "create"), (1, "critique"), (2, "critique")]
    assert "batch 2 " in history[1].reason and "batch 3 " in history[2].reason  # one problem per batch
    assert finished.epochs[0].correct == 9 * 3 - 2 * 3


async def test_a_batch_applies_its_operations_in_problem_order(store, db_path):
    # Later problems answer first (the teacher is slower for earlier ones), so completion order
    # is the reverse of problem order; the batch is applied in problem order all the same.
    async def earlier_is_slower(step: str, index: int | None, text: str) -> None:
        if step != "student" and index is not None:
            await anyio.sleep(0.002 * (8 - index))

    job = await create(store, epochs=1, rollouts=2, concurrency=8)
    finished = await run(store, job, classroom_models(earlier_is_slower))
    assert finished.state == "done"

    batch = (await store.history(LIB))[1]
    assert batch.kind == "critique" and "(5 critiques)" in batch.reason
    assert [(op.op, op.id, op.provenance["critique_id"].rsplit(".", 1)[1]) for op in batch.operations] == [
        ("add", "E1", "p1"),
        ("add", "E2", "p2"),
    ]
    rejected = {cid.rsplit(".", 1)[1]: json.loads(r) for cid, _, r in critiques(db_path)}
    assert rejected["p1"] == rejected["p2"] == []
    for later in ("p4", "p5", "p7"):
        assert [r["reason"] for r in rejected[later]] == ["repeats a lesson the library already has"]


FIRST = "Estimate the result before computing it, then compare."
SECOND = "Always estimate the result before computing it."


class Quarrel(Classroom):
    """A teacher whose critiques of p1 and p4, in one batch, both change the seeded lesson E1."""

    def __init__(self, first: dict, second: dict):
        super().__init__()
        self.operations = {1: [first], 4: [second]}

    def _critique(self, text: str, schema: dict) -> str:
        reply = json.loads(super()._critique(text, schema))
        return json.dumps({**reply, "operations": self.operations.get(problem_of(text), [])})


@pytest.mark.parametrize(
    ("first", "second", "after"),
    [
        ({"op": "delete", "id": "E1", "rationale": "wrong"}, {"op": "rewrite", "id": "E1", "text": SECOND}, []),
        ({"op": "rewrite", "id": "E1", "text": FIRST}, {"op": "rewrite", "id": "E1", "text": SECOND}, [FIRST]),
        ({"op": "rewrite", "id": "E1", "text": FIRST}, {"op": "delete", "id": "E1", "rationale": "wrong"}, [FIRST]),
    ],
    ids=["delete-then-rewrite", "rewrite-then-rewrite", "rewrite-then-delete"],
)
async def test_two_critiques_of_a_batch_changing_one_lesson_the_first_applies_the_other_is_a_conflict(
    store, db_path, first, second, after
):
    await store.apply(LIB, [AddOp(text="Check the answer by estimating.")], "add", "seed")
    job = await create(store, n=5, epochs=1, rollouts=2)
    quarrel = Quarrel({**first, "rationale": "r"}, {**second, "rationale": "r"})
    finished = await run(store, job, classroom_models(classroom=quarrel))

    epoch = finished.epochs[0]
    assert (finished.state, epoch.operations, epoch.rejected, epoch.conflicts) == ("done", 1, 1, 1)
    batch = (await store.history(LIB))[-1]
    assert [(op.op, op.id) for op in batch.operations] == [(first["op"], "E1")]
    assert [item.text for item in batch.snapshot] == after
    rejected = {cid.rsplit(".", 1)[1]: json.loads(r) for cid, _, r in critiques(db_path)}
    [conflict] = rejected["p4"]
    p1 = f"{job.id[4:]}.0.p1"
    assert conflict["operation"] == {**second, "rationale": "r"} and conflict["conflict_with"] == p1
    assert conflict["reason"] == f"conflicts with critique {p1}, which changed E1 first in this batch"
    report = await distill_report(store, Ledger(store), finished)
    assert report.epochs[0].conflicts == 1


# -- the budget -------------------------------------------------------------------------------


HABITS = ["units", "signs", "carries", "digits", "order", "estimates", "remainders", "totals", "labels", "steps"]


class Chatty(Classroom):
    """A teacher that adds, with each critique, a second lesson of its own: the library outgrows
    any small cap, so every batch needs compressing."""

    def _critique(self, text: str, schema: dict) -> str:
        reply = json.loads(super()._critique(text, schema))
        habit = HABITS[problem_of(text) % len(HABITS)]
        extra = {"op": "add", "text": f"Check the {habit} of each step before the next one.", "rationale": "r"}
        return json.dumps({**reply, "operations": [*reply["operations"], extra]})


@pytest.mark.parametrize(
    ("strategy", "settings", "classroom"),
    [
        ("teacher", {"max_items": 3}, Chatty),
        ("teacher", {"max_items": 1}, Classroom),
        ("truncate", {"max_items": 3}, Chatty),
        ("random", {"max_items": 1}, Classroom),
        ("teacher", {"token_budget": 95}, Classroom),
    ],
    ids=["teacher-3-items", "teacher-1-item", "truncate-3-items", "random-1-item", "teacher-tokens"],
)
async def test_no_version_is_ever_over_budget(store, db_path, strategy, settings, classroom):
    state = await store.configure(LIB, **settings)
    job = await create(store, n=12, epochs=2, rollouts=2, concurrency=4, compression=strategy)
    finished = await run(store, job, classroom_models(classroom=classroom()))
    assert finished.state == "done"

    history = await store.history(LIB)
    # A batch and the compression it made necessary are one version: none is over budget, not
    # even for a moment, and every compression happened inside a batch's version.
    compressed = [v for v in history if "compression (" in v.reason]
    assert compressed and all(v.kind == "critique" for v in compressed)
    for version in history:
        assert not over_budget(version.snapshot, state.settings), version.reason
    assert (await store.experience_prompt(LIB)).over_budget is False
    # The job's per-epoch library size is what the student saw next.
    for epoch in finished.epochs:
        assert epoch.items <= state.settings.max_items and epoch.tokens <= state.settings.token_budget
    assert finished.epochs[-1].version == history[-1].version
    assert sum(e.compressions for e in finished.epochs) == len(compressed)
    last = history[-1].snapshot
    assert (finished.epochs[-1].items, finished.epochs[-1].tokens) == (
        len(last),
        count_tokens(experience_prompt((i.id, i.text) for i in last)),
    )


async def test_without_compression_the_library_may_exceed_its_budget(store, db_path):
    await store.configure(LIB, max_items=1)
    job = await create(store, epochs=1, rollouts=2, compression="none")
    finished = await run(store, job)
    assert finished.state == "done"
    assert "compression" not in [v.kind for v in await store.history(LIB)]
    assert (await store.experience_prompt(LIB)).over_budget
    assert paid_calls(db_path, job.id)["compress"] == 0 and finished.epochs[0].compressions == 0


# -- stopping and resuming --------------------------------------------------------------------


async def test_cancel_stops_a_batch_in_flight_and_applies_none_of_it(store, db_path):
    job = await create(store, epochs=2, rollouts=2, concurrency=3)
    blocked = anyio.Event()

    async def cancel_in_batch_two(step: str, index: int | None, text: str) -> None:
        # The first student call of the second batch (p3…p5) asks for the cancel and never
        # answers: only the job's watcher can end the run now.
        if step == "student" and index == 4:
            await jobs.request_cancel(store, job.id)
            blocked.set()
            await anyio.sleep_forever()

    finished = await run(store, job, classroom_models(cancel_in_batch_two))
    assert blocked.is_set()
    assert finished.state == "cancelled" and "not applied" in finished.error
    assert (finished.epoch, finished.batch, finished.problems_done) == (0, 1, 3)
    await assert_whole_batches(store, db_path)
    assert [c[0].rsplit(".", 1)[1] for c in critiques(db_path)] == ["p1", "p2"]  # batch 1's only
    with sqlite3.connect(db_path) as db:
        in_flight = db.execute("SELECT count(*) FROM attempts WHERE problem_id IN ('p3', 'p5')").fetchone()[0]
    assert in_flight == 4  # their rollouts are stored (paid for), their batch is not applied

    # The cancel stands until the user resumes: running the job again ends it at once, calling nothing.
    calls = paid_calls(db_path, job.id)
    assert (await run(store, job)).state == "cancelled" and paid_calls(db_path, job.id) == calls
    # A cancel is not final: the job resumes at the dropped batch and reuses its stored rollouts.
    await jobs.reopen(store, job.id, jobs.this_process(), max_cost_usd=None, max_tokens=None)
    resumed = await run(store, job)
    assert (resumed.state, resumed.error, resumed.cancel_requested, resumed.problems_done) == ("done", None, False, 18)
    assert paid_calls(db_path, job.id)["student"] == 2 * 9 * 2  # every rollout paid once, the dropped batch's too
    await assert_whole_batches(store, db_path)
    with pytest.raises(InvalidInput, match="is done"):
        await run(store, job)


async def test_a_cancel_before_the_runner_claims_the_job_still_stops_it(store, db_path):
    # distill_batch replies once the job is created; the runner claims it a moment later. A
    # cancel_job in between finds nobody running it, so it is cancelled there and then, and the
    # runner's claim must not take that back.
    job = await create(store)
    assert (await jobs.request_cancel(store, job.id)).state == "cancelled"
    finished = await run(store, job)
    assert (finished.state, finished.problems_done, finished.cancel_requested) == ("cancelled", 0, True)
    assert "Cancelled on request" in finished.error and paid_calls(db_path, job.id) == Counter()


async def test_cancel_before_the_next_batch(store, db_path):
    job = await create(store, epochs=2, rollouts=2, concurrency=3)

    async def cancel_after_first(j: Job) -> None:
        await jobs.request_cancel(store, j.id)

    finished = await run(store, job, on_progress=cancel_after_first)
    assert (finished.state, finished.problems_done) == ("cancelled", 3)
    await assert_whole_batches(store, db_path)
    assert paid_calls(db_path, job.id)["student"] == 3 * 2  # the next batch never started


@pytest.mark.parametrize(
    ("cap", "raised", "named"),
    [
        ({"max_tokens": 4000}, {"max_tokens": 10**9}, "token cap of 4,000"),
        ({"max_cost_usd": 0.002}, {"max_cost_usd": 100.0}, "cost cap of $0.002"),
    ],
    ids=["tokens", "cost"],
)
async def test_a_cap_stops_cleanly_and_a_raised_cap_resumes(store, db_path, tmp_path, cap, raised, named):
    # A priced name (the scripted classroom answers under any name) so the cost cap can bite.
    spec = {"epochs": 2, "rollouts": 3, "concurrency": 3, "student": "openai:gpt-4.1-mini"}
    job = await create(store, **spec, **cap)
    stopped = await run(store, job)
    assert stopped.state == "stopped" and named in stopped.error and "resume with a higher cap" in stopped.error
    assert 0 < stopped.problems_done < 18 and stopped.problems_done % 3 == 0
    await assert_whole_batches(store, db_path)
    calls_then = paid_calls(db_path, job.id)

    again = await run(store, job)  # resumed with the same cap: stops before paying for anything
    assert (again.state, again.problems_done) == ("stopped", stopped.problems_done)
    assert paid_calls(db_path, job.id) == calls_then
    with pytest.raises(InvalidInput, match="greater than 0"):
        await jobs.raise_caps(store, job.id, max_cost_usd=-1.0, max_tokens=None)
    await jobs.raise_caps(store, job.id, max_cost_usd=raised.get("max_cost_usd"), max_tokens=raised.get("max_tokens"))
    finished = await run(store, job)
    assert (finished.state, finished.error, finished.problems_done) == ("done", None, 18)

    fresh = await fresh_run(tmp_path, **spec)
    assert paid_calls(db_path, job.id) == fresh.calls
    assert await library_now(store) == fresh.library


class Fresh:
    def __init__(self, job: Job, calls: Counter, library: list[tuple], critiques: list[tuple], history: list):
        self.job, self.calls, self.library, self.critiques, self.history = job, calls, library, critiques, history


_fresh: dict[str, Fresh] = {}


async def fresh_run(tmp_path, *, n: int = 9, settings: dict | None = None, **params) -> Fresh:
    """The same job, uninterrupted, on a database of its own: what a resumed job must match.
    Deterministic, so each set of parameters runs once per session."""
    signature = json.dumps([n, settings, params], sort_keys=True)
    if signature not in _fresh:
        _fresh[signature] = await _fresh_run(tmp_path / "fresh.db", n, settings, params)
    return _fresh[signature]


async def _fresh_run(path, n: int, settings: dict | None, params: dict) -> Fresh:
    async with Store.open(path) as store:
        if settings:
            await store.configure(LIB, **settings)
        job = await create(store, n=n, **params)
        finished = await run(store, job)
        assert finished.state == "done"
        history = await versions(store)
        return Fresh(
            finished,
            paid_calls(path, job.id),
            await library_now(store),
            [(c[0].split(".", 1)[1], c[1], c[2]) for c in critiques(path)],
            history,
        )


async def test_a_failing_model_fails_the_job_which_resumes_where_it_stopped(store, db_path, tmp_path):
    job = await create(store, epochs=2, rollouts=2, concurrency=3)

    failures = []

    async def down_once_in_batch_two(step: str, index: int | None, text: str) -> None:
        if step == "student" and index == 4 and not failures:
            failures.append(index)
            raise ModelError("openai:student failed: 503 Service Unavailable after 2 retries. Try again later.")

    failed = await run(store, job, classroom_models(down_once_in_batch_two))
    assert failed.state == "failed"
    assert failed.error == "openai:student failed: 503 Service Unavailable after 2 retries. Try again later."
    # The library is as batch 1 left it: batch 2 was not applied, not even in part.
    assert failed.problems_done == 3
    assert [v.kind for v in await store.history(LIB)] == ["create", "critique"]
    await assert_whole_batches(store, db_path)

    finished = await run(store, job)  # resumable: a failed job is claimed again
    assert (finished.state, finished.error, finished.problems_done) == ("done", None, 18)
    fresh = await fresh_run(tmp_path, epochs=2, rollouts=2, concurrency=3)
    assert paid_calls(db_path, job.id) == fresh.calls
    assert await library_now(store) == fresh.library
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT count(*) FROM model_calls WHERE NOT ok").fetchone()[0] == 1


@pytest.mark.parametrize(
    ("step", "nth"),
    [("student", 8), ("solve", 1), ("critique", 4), ("compress", 3)],
)
async def test_a_job_interrupted_anywhere_resumes_without_repeating_a_call(store, db_path, tmp_path, step, nth):
    # Six problems in two batches of three, two epochs; room for one lesson, so batches compress
    # too: 5 critiques (p1, p2; p4; p1; p4) and 4 compressions in all.
    params = {"n": 6, "epochs": 2, "rollouts": 2, "concurrency": 3}
    await store.configure(LIB, max_items=1)
    job = await create(store, **params)
    seen = Counter()

    with anyio.CancelScope() as crash:

        async def crash_at_nth(kind: str, index: int | None, text: str) -> None:
            seen[kind] += 1
            if kind == step and seen[kind] == nth:
                crash.cancel()  # the process dies here: nothing after this point happens
                await anyio.sleep_forever()

        await run(store, job, classroom_models(crash_at_nth))
    assert crash.cancelled_caught
    interrupted = await jobs.get(store, job.id)
    assert interrupted.state == "running"  # as a killed process leaves it
    await assert_whole_batches(store, db_path)

    finished = await run(store, job)  # the same process (owner) resumes it
    assert (finished.state, finished.problems_done) == ("done", 12)
    fresh = await fresh_run(tmp_path, settings={"max_items": 1}, **params)
    assert (fresh.calls["critique"], fresh.calls["compress"]) == (5, 4)
    assert paid_calls(db_path, job.id) == fresh.calls
    assert await library_now(store) == fresh.library
    assert [(c[0].split(".", 1)[1], c[1], c[2]) for c in critiques(db_path)] == fresh.critiques
    assert await versions(store) == fresh.history
    assert [e.model_dump() for e in finished.epochs] == [e.model_dump() for e in fresh.job.epochs]


async def test_a_cost_cap_needs_prices(store, db_path):
    with pytest.raises(InvalidInput, match="local:qwen has none.*TED_PRICES.*max_tokens"):
        await create(store, student="local:qwen", max_cost_usd=1.0)
    job = await create(store, student="local:qwen", max_tokens=1000)
    with pytest.raises(InvalidInput, match="local:qwen has none"):
        await jobs.raise_caps(store, job.id, max_cost_usd=5.0, max_tokens=None)
    assert (await jobs.get(store, job.id)).params.max_cost_usd is None


async def test_a_job_leased_by_a_live_process_is_left_alone(store):
    job = await create(store)
    await jobs.claim(store, job.id, "elsewhere:1")  # another host: its liveness can't be checked
    with pytest.raises(InvalidInput, match="running in another process"):
        await run(store, job)
    assert (await jobs.get(store, job.id)).owner == "elsewhere:1"


async def test_estimate_counts_the_protocol_upper_bound():
    data = await dataset_from_items(problems(20))
    params = DistillParams(library=LIB, student="s:s", teacher="s:t", epochs=3, rollouts=5, concurrency=8)
    guess = estimate(params, data.problems)
    assert guess.student_calls == 20 * 3 * 5
    # two solves per problem (the second when the first was wrong), summary + critique per group
    # and epoch, one compression per batch (3 × 3)
    assert guess.teacher_calls == 2 * 20 + 2 * 20 * 3 + 3 * 3
    cheaper = estimate(params.model_copy(update={"compression": "truncate", "rollouts": 1}), data.problems)
    assert cheaper.teacher_calls == 2 * 20 + 2 * 20 * 3 and cheaper.input_tokens < guess.input_tokens
    smaller = estimate(params, data.problems, token_budget=500)  # the library rides in every prompt
    assert smaller.input_tokens < guess.input_tokens and smaller.student_calls == guess.student_calls


# -- generation settings and reasoning ---------------------------------------------------------


async def test_each_roles_generation_settings_reach_every_call_and_the_ledger(store, db_path):
    student = GenerationSettings(max_tokens=2_000, temperature=0.2, seed=3)
    teacher = GenerationSettings(max_tokens=30_000, top_p=0.5)
    job = await create(store, n=6, epochs=1, rollouts=2, student_settings=student, teacher_settings=teacher)
    models = classroom_models()
    finished = await run(store, job, models)
    assert finished.state == "done"
    assert {r.settings for r in models("scripted:student").requests} == {student}
    assert {r.settings for r in models("scripted:teacher").requests} == {teacher}
    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT role, settings FROM model_calls WHERE job_id = ?", (job.id,)).fetchall()
    recorded = {role: json.loads(settings) for role, settings in rows}
    assert recorded["student"] == {"max_tokens": 2000, "temperature": 0.2, "seed": 3}
    assert recorded["critique"] == recorded["teacher-solve"] == {"max_tokens": 30000, "top_p": 0.5}


async def test_generation_settings_layer_given_over_library_over_environment(store, monkeypatch):
    monkeypatch.setenv("TED_STUDENT_TEMPERATURE", "0.9")
    monkeypatch.setenv("TED_STUDENT_SEED", "11")
    monkeypatch.setenv("TED_TEACHER_MAX_TOKENS", "64000")
    await store.configure(LIB, generation={"student": GenerationSettings(temperature=0.7, top_p=0.8)})
    data = await dataset_from_items(problems(3))
    prepared = await prepare_job(
        store,
        classroom_models(),
        data,
        library=LIB,
        student="scripted:student",
        teacher="scripted:teacher",
        student_settings=GenerationSettings(temperature=0.1),
    )
    params = prepared.params
    assert params.student_settings == GenerationSettings(temperature=0.1, top_p=0.8, seed=11)
    assert params.teacher_settings == GenerationSettings(max_tokens=64_000)
    monkeypatch.setenv("TED_TEACHER_TOP_P", "2")
    with pytest.raises(ConfigError, match="TED_TEACHER_TOP_P='2': Input should be less than or equal to 1"):
        await prepare_job(store, classroom_models(), data, library=LIB, student="scripted:s", teacher="scripted:t")


class Thinker(Classroom):
    """A classroom whose student returns its reasoning apart from its reply, as thinking models do."""

    def model(self, name, before=None):
        inner = super().model(name, before)
        if name != "scripted:student":
            return inner

        async def answer(messages, system, output):
            reply = await inner.complete(messages, system=system)
            return reply.model_copy(update={"reasoning": "First I look at the operator."})

        return ScriptedModel(answer, name=name)


async def test_reasoning_returned_apart_is_kept_in_the_trajectory_the_teacher_summarises(store, db_path):
    job = await create(store, n=3, epochs=1, rollouts=1)
    models = Thinker().models()
    assert (await run(store, job, models)).state == "done"
    summaries = [r for r in models("scripted:teacher").requests if r.output.name == "Summary"]
    assert len(summaries) == 2 and all("First I look at the operator." in r.messages[0].text for r in summaries)
    with sqlite3.connect(db_path) as db:
        trajectories = [t for (t,) in db.execute("SELECT trajectory FROM attempts")]
    assert all(t.startswith("[reasoning]\nFirst I look at the operator.\n[/reasoning]\n") for t in trajectories)


class Mute(Classroom):
    """A classroom whose teacher never gives a usable critique of the problems in `mute`."""

    def __init__(self, mute: set[int]):
        super().__init__()
        self.mute = mute

    def _critique(self, text: str, schema: dict) -> str:
        return "I'd rather not say." if problem_of(text) in self.mute else super()._critique(text, schema)


@pytest.mark.parametrize(
    ("mute", "share", "state"),
    [({1}, 1.0, "done"), ({1}, 0.5, "failed"), ({1, 2}, 1.0, "failed")],
    ids=["one-of-two-default", "one-of-two-at-half", "all-of-a-batch"],
)
async def test_a_job_fails_only_at_its_share_of_a_batchs_failed_critiques(store, db_path, mute, share, state):
    # p1 and p2 are the only critiques of the first batch (p0…p3).
    job = await create(store, n=4, epochs=1, rollouts=1, concurrency=4, failure_share=share)
    finished = await run(store, job, classroom_models(classroom=Mute(mute)))
    assert finished.state == state
    if state == "done":
        [failure] = finished.epochs[0].failures
        assert (failure.problem_id, failure.step) == ("p1", "critique") and "CritiqueReply" in failure.error
        assert [v.kind for v in await store.history(LIB)] == ["create", "critique"]  # p2's lesson applied
    else:
        failed = len(mute)
        assert f"{failed} of the 2 critiques of batch 1 in epoch 1 could not be made" in finished.error
        assert [v.kind for v in await store.history(LIB)] == ["create"] and critiques(db_path) == []


async def test_a_refused_call_fails_the_job_at_once(store, db_path):
    async def refuse(step: str, index: int | None, text: str) -> None:
        if step == "critique":
            raise ModelRefused("scripted:teacher: the API key was refused (HTTP 401). Set TED_... to a valid key.")

    job = await create(store, n=4, epochs=1, rollouts=1)
    finished = await run(store, job, classroom_models(refuse))
    assert finished.state == "failed" and "HTTP 401" in finished.error
    assert [v.kind for v in await store.history(LIB)] == ["create"]


async def test_a_datasets_worked_solution_is_the_reference(store):
    items = [{**item, "solution": f"Worked solution {item['id']}: {item['answer']}."} for item in problems(3)]
    data = await dataset_from_items(items)
    params = DistillParams(library=LIB, student="scripted:student", teacher="scripted:teacher", epochs=1, rollouts=1)
    job = await jobs.create(store, params, data.problems, "inline", solutions=data.reference_solutions)
    models = classroom_models()
    assert (await run(store, job, models)).state == "done"
    teacher = models("scripted:teacher").requests
    summaries = [r.messages[0].text for r in teacher if r.output.name == "Summary"]
    critiques_ = [r.messages[0].text for r in teacher if r.output.name == "CritiqueReply"]
    # One summary per critiqued problem (made concurrently, in no set order), each with its own reference.
    assert len(summaries) == 2 and all(any(f"Worked solution p{i}:" in s for s in summaries) for i in (1, 2))
    assert all("the dataset's worked solution" in c and "first solution was right" in c for c in critiques_)
    # The student never sees it.
    assert not any("Worked solution" in m.text for r in models("scripted:student").requests for m in r.messages)
