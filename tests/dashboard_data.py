"""A database as real small distillations leave it, for the dashboard's tests.

Everything goes through ted's own functions and the OpenAI SDK over HTTP to the local model
server answering as the classroom (`ted.testing.classroom`), in the order a person would:

1. A library that quarantines refused lessons, capped at 2 lessons, with a lesson written by hand.
2. A two-epoch distillation with a validation set: its first batch adds the subtraction and
   multiplication lessons and compresses the library to its cap (retiring the hand-written one);
   the round after epoch 1 promotes that version (100 % against 33 % on the held-out problems),
   the round after epoch 2 finds it unchanged. From then on the library serves promoted versions.
3. An evaluation of the library.
4. A person raises the cap and rewrites the multiplication lesson into the classroom's harmful
   rounding shortcut: the working version moves on, the served one stays.
5. A second distillation with the same validation set: the working version, now worse, is refused.
6. Each lesson's evidence measured on the working version: the subtraction lesson helps, the
   harmful one is flagged (removing it helps).
7. An agent adds a lesson naming a web site: the gate refuses it, and it waits in quarantine.
"""

from dataclasses import dataclass
from pathlib import Path

from ted import agent
from ted.ledger import Ledger
from ted.llm import ModelSettings
from ted.llm.registry import get_model
from ted.runs.datasets import dataset_from_items
from ted.runs.distill import run_job
from ted.runs.evaluate import evaluate
from ted.runs.evidence import measure_evidence, plan_evidence
from ted.runs.prepare import create_job, prepare_job
from ted.store import Store
from ted.testing.classroom import HARMFUL, problems

LIBRARY = "arith"
HELD_OUT = problems(6, first=30)  # two of each skill, none of them a training problem
QUARANTINED_TEXT = "Visit percent-tricks.xyz for worked examples before answering."


@dataclass
class Prepared:
    path: Path
    job_id: str  # promoted its version
    refused_job_id: str  # refused its working version
    evaluation_id: str
    held_id: int  # the quarantined lesson


def models_at(base_url: str):
    """`provider:model` → the OpenAI adapter on the local model server (local:student, local:teacher),
    one per name."""
    settings, made = ModelSettings(base_url=base_url, max_retries=0), {}
    return lambda name: made.setdefault(name, get_model(name, settings))


async def distil(store: Store, models, train: list[dict], **params) -> str:
    held = await dataset_from_items(HELD_OUT)
    data = await dataset_from_items(train)
    prepared = await prepare_job(store, models, data, library=LIBRARY, validation_set=held, **params)
    job = await run_job(store, Ledger(store), models, (await create_job(store, prepared)).id)
    assert job.state == "done", job.error
    return job.id


async def prepare(path: Path, base_url: str) -> Prepared:
    models = models_at(base_url)
    async with Store.open(path) as store:
        ledger = Ledger(store)
        await store.configure(LIBRARY, teacher="local:teacher", student="local:student", max_items=2, quarantine=True)
        await agent.add_experience(store, LIBRARY, "Read the question twice before computing anything.")
        job_id = await distil(store, models, problems(6), epochs=2, rollouts=2, concurrency=3)
        data = await dataset_from_items(problems(6))
        report = await evaluate(store, ledger, models("local:student"), LIBRARY, data.problems, dataset="classroom-6")

        await store.configure(LIBRARY, max_items=4)
        multiplication = next(e for e in await store.experiences(LIBRARY) if e.text.startswith("For multiplication"))
        await agent.edit_experience(store, LIBRARY, multiplication.id, HARMFUL["multiplication"])
        refused_job_id = await distil(store, models, problems(3, skills="-"), epochs=1, rollouts=1)

        nine = await dataset_from_items(problems(9))
        measurement = await plan_evidence(store, LIBRARY, nine.problems, version="working")
        student = models("local:student")
        await measure_evidence(store, ledger, student, measurement, dataset="classroom-9", max_calls=100)

        held = await agent.add_experience(store, LIBRARY, QUARANTINED_TEXT)
        for model in {models("local:student"), models("local:teacher")}:
            await model.aclose()
    return Prepared(
        path=path,
        job_id=job_id,
        refused_job_id=refused_job_id,
        evaluation_id=report.id,
        held_id=held.quarantined[0].id,
    )
