"""Promotion on held-out evidence during a distillation (`ted.runs.validation`), with the
classroom's deterministic student and teacher on a real SQLite file: helpful lessons are
promoted; a teacher proposing a harmful lesson is refused and the previous version stays
served; `keep=best` goes on from the served version; a split holds problems out of training;
the report shows it all; and the calls it costs are what the estimate says, paid once."""

import sqlite3
from collections import Counter

import anyio
import pytest
from conftest import dump_database

from ted import agent
from ted.errors import InvalidInput, ModelRefused
from ted.ledger import Ledger
from ted.runs import jobs
from ted.runs.datasets import Problem, dataset_from_items
from ted.runs.distill import run_job
from ted.runs.jobs import DistillParams
from ted.runs.prepare import create_job, estimate, prepare_job
from ted.runs.report import distill_report
from ted.runs.report_files import write_distill_report
from ted.store import Store
from ted.testing.classroom import HARMFUL, LESSONS, Classroom, problems

pytestmark = pytest.mark.anyio

LIB = "arith"
HELD_OUT = problems(6, first=30)  # two of each skill, none of them a training problem


@pytest.fixture
async def store(db_path):
    async with Store.open(db_path) as s:
        yield s


async def distil(store, classroom=None, *, train=None, held=HELD_OUT, hook=None, **params):
    """Prepare, create and run a job on the classroom; returns the finished job."""
    models = (classroom or Classroom()).models(hook)
    prepared = await prepare_job(
        store,
        models,
        await dataset_from_items(train or problems(9)),
        validation_set=await dataset_from_items(held) if held else None,
        library=LIB,
        student="scripted:student",
        teacher="scripted:teacher",
        **{"epochs": 2, "rollouts": 2, "concurrency": 4, **params},
    )
    job = await create_job(store, prepared)
    with anyio.fail_after(30):
        return await run_job(store, Ledger(store), models, job.id)


def as_problems(items: list[dict]) -> list[Problem]:
    return [Problem.model_validate(item) for item in items]


def paid(db_path, job_id: str) -> Counter:
    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT role FROM model_calls WHERE job_id = ? AND ok", (job_id,)).fetchall()
    return Counter(role for (role,) in rows)


def rounds(job) -> list[tuple]:
    return [(v.epoch, v.batches_done, v.working_version, v.decision) for e in job.epochs for v in e.validations]


async def test_helpful_lessons_are_promoted_and_served(store, db_path, tmp_path):
    job = await distil(store)
    assert (job.state, job.error) == ("done", None)
    # Epoch 1's first batch added the subtraction and multiplication lessons (version 1); the
    # round after epoch 1 promoted them; after epoch 2 nothing had changed.
    assert rounds(job) == [(0, 3, 1, "promoted"), (1, 6, 1, "unchanged")]
    figures = job.epochs[0].validations[0].figures
    assert (figures.served_version, figures.served_accuracy, figures.working_accuracy) == (0, 1 / 3, 1.0)
    assert figures.difference == pytest.approx(2 / 3) and figures.interval.low > 0
    assert (figures.problems, figures.samples, figures.failed_calls) == (6, 1, 0)

    served = await agent.get_experiences(store, LIB)
    assert (served.version, served.served_version, served.working_version) == (1, 1, 1)
    assert {i.text for i in served.items} == {LESSONS["subtraction"], LESSONS["multiplication"]}
    history = await store.history(LIB)
    pinned, promoted = history[0].promotions + history[1].promotions
    assert (pinned.version, pinned.by, pinned.reason) == (0, job.id, "the library serves promoted versions from now on")
    assert (promoted.version, promoted.decision, promoted.by, promoted.served_before) == (1, "promoted", job.id, 0)
    assert promoted.figures == figures and "difference +66.7%" in promoted.reason

    # Round 1 asked both versions; round 2's prompts were round 1's working ones, answered from
    # the ledger. The estimate's bound, (rounds + 1) × problems × samples, holds.
    assert paid(db_path, job.id)["validation"] == 2 * len(HELD_OUT)
    guess = estimate(job.params, as_problems(problems(9)), validation=as_problems(HELD_OUT))
    assert (guess.validation_rounds, guess.validation_calls) == (2, 3 * len(HELD_OUT))

    report = await distill_report(store, Ledger(store), job)
    assert (report.validation_problems, report.served_version) == (6, 1)
    markdown = write_distill_report(report, tmp_path).markdown_path.read_text()
    assert "| Served | v1 |" in markdown and "## Promotions" in markdown
    assert "Validation: served | Validation: working | Decision |" in markdown
    tokens = report.epochs[0].library.tokens
    row = f"| 1 | 9 | 18 | 77.8 % (14/18) | 7 | 2 | 0 | 0 | 0 | 1 | 2 | {tokens} | 33.3 % | 100.0 % | promoted |"
    assert row in markdown
    assert "| 1 | 3 | v1 | v0 | 100.0 % | 33.3 % | +66.7 pp [+33.3 pp, +100.0 pp] | promoted |" in markdown


async def test_a_harmful_lesson_is_refused_and_the_previous_version_stays_served(store, db_path):
    # The teacher proposes a rounding shortcut for multiplication, which spoils multiplication
    # and addition: with it the student gets no validation problem right, without it the additions.
    harmful = Classroom(teaches={"multiplication": HARMFUL["multiplication"]})
    job = await distil(store, harmful, train=problems(6, skills="*"), epochs=1)
    assert rounds(job) == [(0, 2, 1, "refused")]
    figures = job.epochs[0].validations[0].figures
    assert (figures.served_accuracy, figures.working_accuracy) == (1 / 3, 0.0)

    served = await agent.get_experiences(store, LIB)
    assert (served.version, served.prompt, served.working_version) == (0, "", 1)
    working = await agent.get_experiences(store, LIB, version="working")  # keep=last: the job went on from it
    assert [i.text for i in working.items] == [HARMFUL["multiplication"]]
    [refusal] = (await store.history(LIB))[1].promotions
    assert (refusal.decision, refusal.by, refusal.served_before) == ("refused", job.id, 0)
    assert refusal.figures.difference == pytest.approx(-1 / 3)
    assert [p.decision for p in await store.promotions(LIB)] == ["promoted", "refused"]  # the pin, the refusal


async def test_keep_best_goes_on_from_the_served_version_after_a_refusal(store, db_path):
    await distil(store, epochs=1)  # the helpful lessons, promoted: version 1 is served
    assert (await agent.get_experiences(store, LIB)).version == 1
    helpful = {LESSONS["subtraction"], LESSONS["multiplication"]}

    # Now a teacher that, critiquing even right answers, proposes the harmful shortcut.
    harmful = Classroom(teaches={"multiplication": HARMFUL["multiplication"]})
    job = await distil(store, harmful, train=problems(3, first=40), critique_all=True, validation={"keep": "best"})
    assert [(v.decision, v.continued_from) for e in job.epochs for v in e.validations] == [
        ("refused", 1),
        ("refused", 1),
    ]
    served = await agent.get_experiences(store, LIB)
    assert served.version == 1 and {i.text for i in served.items} == helpful
    working = await agent.get_experiences(store, LIB, version="working")
    assert {i.text for i in working.items} == helpful  # rolled back after each refusal
    history = await store.history(LIB)
    assert [v.kind for v in history[2:]] == ["critique", "rollback", "critique", "rollback"]
    assert all("refused on validation; going on from served version 1" in v.reason for v in history[3::2])
    assert job.epochs[-1].version == history[-1].version and job.epochs[-1].items == 2
    # The served version's answers were paid once; each harmful version's once (new ids, new prompts).
    assert paid(db_path, job.id)["validation"] == 3 * len(HELD_OUT)


async def test_a_split_holds_its_problems_out_of_training(store, db_path):
    job = await distil(store, train=problems(10), held=None, validation={"split": 0.3}, epochs=1)
    [made] = [v for e in job.epochs for v in e.validations]
    assert made.figures.problems == 3 and job.problems_total == 7
    with sqlite3.connect(db_path) as db:
        trained = {p for (p,) in db.execute("SELECT DISTINCT problem_id FROM attempts WHERE job_id = ?", (job.id,))}
        asked = {t for (t,) in db.execute("SELECT DISTINCT task_id FROM model_calls WHERE role = 'validation'")}
    held = {p.id for p in await jobs.validation_problems(store, job.id)}
    assert len(trained) == 7 and len(held) == len(asked) == 3
    assert held.isdisjoint(trained) and held | trained == {f"p{i}" for i in range(10)}
    prepared_again = await prepare_job(
        store,
        Classroom().models(),
        await dataset_from_items(problems(10)),
        library=LIB,
        student="s",
        teacher="t",
        validation={"split": 0.3},
        check_models=False,
    )
    assert {p.id for p in prepared_again.validation} == {f"p{i}" for i in range(10)} - trained  # the seed decides


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"validation": {"keep": "best"}}, "validation.keep apply only with a validation set"),
        ({"validation": {"every": 2, "margin": 0.1}}, "validation.every, validation.margin apply only with a"),
        ({"validation": {"split": 0.05}}, "validation.split 0.05 of 9 problems holds out 0"),
        ({"validation": {"split": 0.5}, "held": HELD_OUT}, "Give a validation dataset or validation.split, not both"),
        ({"held": problems(2, first=4)}, "2 validation problems are training problems too (p4, p5)"),
    ],
)
async def test_a_validation_set_that_cannot_work_is_refused_before_anything_is_written(
    store, db_path, options, message
):
    before = dump_database(db_path)
    held = options.pop("held", None)
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        await prepare_job(
            store,
            Classroom().models(),
            await dataset_from_items(problems(9)),
            validation_set=await dataset_from_items(held) if held else None,
            library=LIB,
            student="scripted:student",
            teacher="scripted:teacher",
            **options,
        )
    assert dump_database(db_path) == before


async def test_a_job_stopped_before_its_validation_validates_once_when_resumed(store, db_path):
    async def refuse_validation(step: str, index: int | None, text: str) -> None:
        if step == "student" and index is not None and index >= 30:  # a held-out problem
            raise ModelRefused("scripted:student: the API key was refused (HTTP 401).")

    failed = await distil(store, hook=refuse_validation, epochs=1)
    assert failed.state == "failed" and "HTTP 401" in failed.error
    assert failed.problems_done == 9 and rounds(failed) == []  # the batches are in; no decision was written
    assert (await agent.get_experiences(store, LIB)).version == 0

    with anyio.fail_after(30):
        finished = await run_job(store, Ledger(store), Classroom().models(), failed.id)
    assert rounds(finished) == [(0, 3, 1, "promoted")]
    assert (await agent.get_experiences(store, LIB)).version == 1
    with sqlite3.connect(db_path) as db:
        keys = db.execute(
            "SELECT call_key, count(*) FROM model_calls WHERE job_id = ? AND ok GROUP BY call_key HAVING count(*) > 1",
            (failed.id,),
        ).fetchall()
    assert keys == []  # no answer paid twice


def test_the_estimate_of_a_validation_set_for_the_default_distillation():
    """100 training problems, 3 epochs, 5 rollouts, concurrency 8, a 20-problem validation set."""
    params = DistillParams(library=LIB, student="s", teacher="t")
    guess = estimate(params, as_problems(problems(100)), validation=as_problems(problems(20, first=100)))
    assert (guess.student_calls, guess.teacher_calls) == (1500, 200 + 600 + 39)
    assert (guess.validation_rounds, guess.validation_calls) == (3, 80)  # both versions once, then the new one
    assert guess.validation_share == pytest.approx(80 / (1500 + 839))
    every = DistillParams(library=LIB, student="s", teacher="t", validation={"every": 1})
    every_batch = estimate(every, as_problems(problems(100)), validation=as_problems(problems(20, first=100)))
    assert (every_batch.validation_rounds, every_batch.validation_calls) == (39, 800)
